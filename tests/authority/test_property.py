"""Property-based: random operation sequences (sequential and from concurrent threads) keep the ledger sound."""

from __future__ import annotations

import threading
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_cycles.authority import LocalAuthority

from .conftest import UNIT, FakeClock, commit_body, key, reserve_body

SUBJECTS = [
    {"tenant": "acme"},
    {"tenant": "acme", "workspace": "a"},
    {"tenant": "acme", "workspace": "a", "agent": "x"},
    {"tenant": "acme", "workspace": "b"},  # REJECT-only budget lives here
]
POLICIES = ["REJECT", "ALLOW_IF_AVAILABLE", "ALLOW_WITH_OVERDRAFT"]

op = st.one_of(
    st.tuples(st.just("reserve"), st.integers(0, 3), st.integers(0, 400), st.sampled_from(POLICIES)),
    st.tuples(st.just("commit"), st.integers(0, 50), st.integers(0, 600)),
    st.tuples(st.just("release"), st.integers(0, 50)),
    st.tuples(st.just("extend"), st.integers(0, 50), st.integers(1, 5_000)),
    st.tuples(st.just("event"), st.integers(0, 3), st.integers(0, 300), st.sampled_from(POLICIES)),
    st.tuples(st.just("tick"), st.integers(0, 70_000)),
    st.tuples(st.just("fund"), st.sampled_from(["CREDIT", "REPAY_DEBT", "DEBIT"]), st.integers(0, 500)),
)


def _setup(auth: LocalAuthority) -> str:
    auth.create_tenant("acme")
    auth.create_budget("tenant:acme", 5_000, overdraft_limit=1_000)
    auth.create_budget("tenant:acme/workspace:a", 2_000, overdraft_limit=300)
    auth.create_budget("tenant:acme/workspace:a/agent:x", 700)
    auth.create_budget("tenant:acme/workspace:b", 1_500, unit=UNIT)
    return auth.create_api_key("acme")


def _apply(c: httpx.Client, auth: LocalAuthority, clock: FakeClock, rids: list[str], step: tuple[Any, ...]) -> None:
    kind = step[0]
    if kind == "reserve":
        subject = SUBJECTS[step[1]]
        policy = "REJECT" if step[1] == 3 else step[3]
        r = c.post(
            "/v1/reservations", json=reserve_body(step[2], subject=subject, overage_policy=policy, ttl_ms=30_000)
        )
        assert r.status_code in (200, 409), r.text
        if r.status_code == 200:
            rids.append(r.json()["reservation_id"])
    elif kind in ("commit", "release", "extend") and rids:
        rid = rids[step[1] % len(rids)]
        body = {"commit": lambda: commit_body(step[2]), "release": lambda: {"idempotency_key": key()},
                "extend": lambda: {"idempotency_key": key(), "extend_by_ms": step[2]}}[kind]()  # fmt: skip
        r = c.post(f"/v1/reservations/{rid}/{kind}", json=body)
        assert r.status_code in (200, 409, 410), r.text
    elif kind == "event":
        policy = "REJECT" if step[1] == 3 else step[3]
        body = {"idempotency_key": key(), "subject": SUBJECTS[step[1]], "action": {"kind": "t", "name": "t"},
                "actual": {"unit": UNIT, "amount": step[2]}, "overage_policy": policy}  # fmt: skip
        assert c.post("/v1/events", json=body).status_code in (201, 409)
    elif kind == "tick":
        clock.advance(step[1])
        auth.sweep()
    elif kind == "fund":
        try:
            auth.fund("tenant:acme/workspace:a", step[1], step[2])
        except Exception as exc:  # DEBIT beyond remaining is refused; nothing else may fail
            assert "BUDGET_EXCEEDED" in str(exc)


def _check(auth: LocalAuthority) -> None:
    assert auth.check_invariants() == []
    for b in auth.balances("acme"):
        if b["scope_path"] == "tenant:acme/workspace:b":  # only REJECT traffic: never overspent
            assert b["remaining"]["amount"] >= 0 and "debt" not in b
            assert b["spent"]["amount"] + b["reserved"]["amount"] <= b["allocated"]["amount"]
        if b["scope_path"] == "tenant:acme/workspace:a/agent:x":  # no overdraft limit: never in debt
            assert "debt" not in b


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=1, max_size=40))
def test_random_sequences_keep_invariants(steps: list[tuple[Any, ...]]) -> None:
    clock = FakeClock()
    with LocalAuthority(clock=clock, sweep_interval_s=3600) as auth:
        secret = _setup(auth)
        rids: list[str] = []
        with httpx.Client(base_url=auth.base_url, headers={"X-Cycles-API-Key": secret}) as c:
            for step in steps:
                _apply(c, auth, clock, rids, step)
                _check(auth)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(op, min_size=5, max_size=30), min_size=2, max_size=4))
def test_concurrent_threads_keep_invariants(per_thread: list[list[tuple[Any, ...]]]) -> None:
    clock = FakeClock()
    with LocalAuthority(clock=clock, sweep_interval_s=0.01) as auth:  # the real sweeper races the threads too
        secret = _setup(auth)
        errors: list[BaseException] = []

        def run(steps: list[tuple[Any, ...]]) -> None:
            rids: list[str] = []
            try:
                with httpx.Client(base_url=auth.base_url, headers={"X-Cycles-API-Key": secret}) as c:
                    for step in steps:
                        _apply(c, auth, clock, rids, step)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(steps,)) for steps in per_thread]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[0]
        _check(auth)
