"""Fixtures: an in-process authority on a loopback port with an injected clock, and runcycles clients."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from runcycles import CyclesClient, CyclesConfig

from otel_cycles.authority import LocalAuthority

UNIT = "USD_MICROCENTS"


class FakeClock:
    """A settable millisecond clock (`authority` expiry tests advance it instead of sleeping)."""

    def __init__(self) -> None:
        self.now = time.time_ns() // 1_000_000

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def authority(clock: FakeClock) -> Iterator[LocalAuthority]:
    with LocalAuthority(clock=clock, sweep_interval_s=3600) as auth:
        auth.create_tenant("acme", "Acme")
        auth.create_tenant("other", "Other")
        yield auth


@pytest.fixture
def api_key(authority: LocalAuthority) -> str:
    return authority.create_api_key("acme")


@pytest.fixture
def other_key(authority: LocalAuthority) -> str:
    return authority.create_api_key("other")


def config(authority: LocalAuthority, key: str) -> CyclesConfig:
    return CyclesConfig(base_url=authority.base_url, api_key=key, journal_enabled=False, retry_enabled=False)


@pytest.fixture
def client(authority: LocalAuthority, api_key: str) -> Iterator[CyclesClient]:
    with CyclesClient(config(authority, api_key)) as c:
        yield c


@pytest.fixture
def other_client(authority: LocalAuthority, other_key: str) -> Iterator[CyclesClient]:
    with CyclesClient(config(authority, other_key)) as c:
        yield c


@pytest.fixture
def async_config(authority: LocalAuthority, api_key: str) -> CyclesConfig:
    return config(authority, api_key)


@pytest.fixture
def raw(authority: LocalAuthority, api_key: str) -> Iterator[httpx.Client]:
    """A plain httpx client with the tenant key, for malformed requests runcycles would never send."""
    with httpx.Client(base_url=authority.base_url, headers={"X-Cycles-API-Key": api_key}) as c:
        yield c


@pytest.fixture
def admin(authority: LocalAuthority) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=authority.base_url, headers={"X-Admin-API-Key": authority.admin_key}) as c:
        yield c


_counter = [0]


def key() -> str:
    _counter[0] += 1
    return f"k-{time.monotonic_ns()}-{_counter[0]}"


def reserve_body(amount: int = 1000, unit: str = UNIT, **extra: Any) -> dict[str, Any]:
    subject = extra.pop("subject", {"tenant": "acme", "workspace": "prod", "agent": "bot"})
    return {
        "idempotency_key": extra.pop("idempotency_key", key()),
        "subject": subject,
        "action": {"kind": "llm.completion", "name": "openai:gpt-4o-mini"},
        "estimate": {"unit": unit, "amount": amount},
        **extra,
    }


def commit_body(amount: int, unit: str = UNIT, **extra: Any) -> dict[str, Any]:
    return {"idempotency_key": extra.pop("idempotency_key", key()), "actual": {"unit": unit, "amount": amount}, **extra}


def balance_of(authority: LocalAuthority, scope: str, tenant: str = "acme") -> dict[str, Any]:
    for b in authority.balances(tenant):
        if b["scope_path"] == scope:
            return b
    raise AssertionError(f"no balance for {scope}")


def amounts(b: dict[str, Any]) -> dict[str, int]:
    out = {k: b[k]["amount"] for k in ("remaining", "reserved", "spent", "allocated")}
    out["debt"] = b["debt"]["amount"] if "debt" in b else 0
    return out
