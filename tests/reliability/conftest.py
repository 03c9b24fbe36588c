"""Reliability fixtures: a file-backed authority that can be stopped and restarted on the same port, a tenant on it,
and runcycles clients with a per-test journal and fast retries (so fault tests finish in seconds)."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from runcycles import CyclesClient, CyclesConfig

from otel_cycles.authority import LocalAuthority
from tests.reliability.fault_proxy import FaultProxy, free_port

UNIT = "USD_MICROCENTS"


class Stack:
    """One authority process-in-thread over a SQLite file; `stop()`/`start()` keep the file, port and admin key."""

    def __init__(self, tmp: Path, sweep_interval_s: float = 0.2) -> None:
        self.db = str(tmp / "ledger.db")
        self.port = free_port()
        self.admin_key = "cyc_admin_" + secrets.token_hex(16)
        self.sweep_interval_s = sweep_interval_s
        self.journal_dir = str(tmp / "journal")
        self.authority: LocalAuthority | None = None
        self.start()
        self.tenant = f"rel-{os.getpid()}-{secrets.token_hex(3)}"
        self.api.create_tenant(self.tenant)
        self.api_key = self.api.create_api_key(self.tenant)

    @property
    def api(self) -> LocalAuthority:
        assert self.authority is not None, "authority is stopped"
        return self.authority

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                self.authority = LocalAuthority(
                    self.db, admin_key=self.admin_key, port=self.port, sweep_interval_s=self.sweep_interval_s
                )
                return
            except OSError:  # the port is still in TIME_WAIT-like use for a moment after a stop
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.authority is not None:
            self.authority.stop()
            self.authority = None

    def config(self, base_url: str | None = None, **overrides: Any) -> CyclesConfig:
        values: dict[str, Any] = {
            "base_url": base_url or self.base_url,
            "api_key": self.api_key,
            "journal_dir": self.journal_dir,
            "connect_timeout": 0.5,
            "read_timeout": 1.0,
            "retry_initial_delay": 0.05,
            "retry_multiplier": 2.0,
            "retry_max_delay": 0.5,
            "retry_max_attempts": 20,
        }
        values.update(overrides)
        return CyclesConfig(**values)

    def client(self, base_url: str | None = None, **overrides: Any) -> CyclesClient:
        return CyclesClient(self.config(base_url, **overrides))

    def budget(self, scope: str, amount: int, **kwargs: Any) -> None:
        self.api.create_budget(f"tenant:{self.tenant}{'/' + scope if scope else ''}", amount, **kwargs)

    def balance(self, scope: str = "") -> dict[str, Any]:
        path = f"tenant:{self.tenant}{'/' + scope if scope else ''}"
        for item in self.api.balances(self.tenant):
            if item["scope_path"] == path:
                return item
        raise KeyError(path)

    def amount(self, field: str, scope: str = "") -> int:
        value = self.balance(scope).get(field)
        return int(value["amount"]) if isinstance(value, dict) else 0

    def spent(self, scope: str = "") -> int:
        return self.amount("spent", scope)

    def active(self) -> list[dict[str, Any]]:
        return self.api.reservations(self.tenant, status="ACTIVE")

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
        """Poll until `predicate()` holds (bounded); the authority may be briefly stopped by the test."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return True
            except (AssertionError, KeyError):
                pass
            time.sleep(0.05)
        return predicate()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    yield s
    if s.authority is None:
        s.start()
    assert s.api.check_invariants() == []
    s.stop()


@pytest.fixture
def proxy(stack: Stack) -> Iterator[FaultProxy]:
    with FaultProxy(stack.base_url) as p:
        yield p
