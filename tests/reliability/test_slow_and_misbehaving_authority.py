"""A slow authority, 5xx, 429 + Retry-After, dropped connections and protocol-violating answers, via a fault proxy.

The agent's latency stays bounded (two client timeouts at most on the reserve path), commits follow the server's
hints, and whatever the authority applied but the client never saw is retried with the same idempotency key, so
nothing is lost and nothing is charged twice.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from otel_cycles import CyclesBudgetCallback
from otel_cycles.errors import AuthorityUnavailable
from otel_cycles.testing import ScriptedModel
from tests.core.agents import make_agent
from tests.reliability.conftest import Stack
from tests.reliability.fault_proxy import FaultProxy
from tests.reliability.helpers import expected_spend, governed

RESERVE = "/v1/reservations$"


def _released_and_clean(stack: Stack) -> bool:
    stack.api.sweep()
    return not stack.active() and stack.amount("reserved") == 0


def test_slow_reserve_fails_closed_within_two_timeouts_and_charges_nothing(
    stack: Stack, proxy: FaultProxy, model: ScriptedModel
) -> None:
    stack.budget("", 100_000_000)
    proxy.add(path=RESERVE, method="POST", delay_s=2.5)  # read_timeout is 1.0 s
    callback = CyclesBudgetCallback(
        client=stack.client(proxy.base_url), tenant=stack.tenant, ttl_ms=1000, grace_period_ms=0
    )
    with pytest.raises(AuthorityUnavailable):
        make_agent(model, [callback]).run("Research budget governance")
    assert model.request_count == 0
    attempts = proxy.requests(RESERVE, "POST")
    assert len(attempts) == 2 and attempts[0].idempotency_key == attempts[1].idempotency_key
    # The delayed request did reach the authority (one reservation: same key); it expires, nothing is spent.
    assert stack.wait_for(lambda: len(stack.api.reservations(stack.tenant)) == 1)
    assert stack.wait_for(lambda: _released_and_clean(stack))
    assert stack.spent() == 0


def test_reserve_5xx_once_is_retried_with_the_same_key(stack: Stack, proxy: FaultProxy, model: ScriptedModel) -> None:
    stack.budget("", 100_000_000)
    proxy.add(path=RESERVE, method="POST", status=503, body={"error": "INTERNAL_ERROR", "message": "busy"}, times=1)
    callback = CyclesBudgetCallback(client=stack.client(proxy.base_url), tenant=stack.tenant)
    make_agent(model, [callback]).run("Research budget governance")
    attempts = proxy.requests(RESERVE, "POST")
    assert len(attempts) == 6 and attempts[0].idempotency_key == attempts[1].idempotency_key
    assert len(stack.api.reservations(stack.tenant)) == 5
    assert stack.active() == []


def test_reserve_429_fails_fast_instead_of_waiting_on_the_critical_path(
    stack: Stack, proxy: FaultProxy, model: ScriptedModel
) -> None:
    stack.budget("", 100_000_000)
    proxy.add(path=RESERVE, method="POST", status=429, headers={"Retry-After": "30"},
              body={"error": "LIMIT_EXCEEDED", "message": "slow down"})  # fmt: skip
    callback = CyclesBudgetCallback(client=stack.client(proxy.base_url), tenant=stack.tenant)
    with pytest.raises(AuthorityUnavailable):
        make_agent(model, [callback]).run("Research budget governance")
    # One attempt: the client does not sleep the 30 s Retry-After (nor retry) on the agent's critical path.
    assert len(proxy.requests(RESERVE, "POST")) == 1
    assert model.request_count == 0


def test_commit_429_retry_after_is_honoured(stack: Stack, proxy: FaultProxy, model: ScriptedModel, spans) -> None:
    retry_after_s = 2
    stack.budget("", 100_000_000)
    proxy.add(path="/commit", method="POST", status=429, headers={"Retry-After": str(retry_after_s)},
              body={"error": "LIMIT_EXCEEDED", "message": "slow down"}, first_per_path=True)  # fmt: skip
    callback = CyclesBudgetCallback(client=stack.client(proxy.base_url), tenant=stack.tenant, settle_timeout_s=0)
    make_agent(model, [callback]).run("Research budget governance")
    # The agent never waits for the rate limit: the run is over while the last call's commit still waits for its
    # Retry-After (it is queued, or was answered 429 and not retried yet).
    per_path = Counter(e.path for e in proxy.requests("/commit", "POST"))
    assert len(per_path) < 5 or min(per_path.values()) == 1, per_path
    expected = expected_spend(spans)
    assert stack.wait_for(lambda: stack.spent() == expected)
    commits = proxy.requests("/commit", "POST")
    assert len({e.path for e in commits}) == 5
    for path in {e.path for e in commits}:
        attempts = [e for e in commits if e.path == path]
        # A lower bound only (load can only make it later): backoff alone would retry after 0.05 s.
        assert len(attempts) == 2 and attempts[1].at - attempts[0].at >= retry_after_s - 0.05
        assert attempts[0].idempotency_key == attempts[1].idempotency_key
    assert stack.active() == []


def _extra_key(body: Any) -> Any:
    return {**body, "surprise": {"nested": True}}


def _null(body: Any) -> Any:
    return {**body, "balances": None}


VIOLATIONS: dict[str, dict[str, Any]] = {
    "extra_key": {"after": "mutate", "mutate": _extra_key},
    "json_null": {"after": "mutate", "mutate": _null},
    "status_201": {"after": "rewrite_status", "rewrite_status": 201},
    "status_202": {"after": "rewrite_status", "rewrite_status": 202},
    "truncated": {"after": "truncate"},
    "dropped": {"after": "drop"},
}


@pytest.mark.parametrize("violation", sorted(VIOLATIONS))
def test_protocol_violating_reserve_answer_never_double_reserves(
    stack: Stack, proxy: FaultProxy, model: ScriptedModel, spans, violation: str
) -> None:
    stack.budget("", 100_000_000)
    proxy.add(path=RESERVE, method="POST", times=1, **VIOLATIONS[violation])
    callback = CyclesBudgetCallback(client=stack.client(proxy.base_url), tenant=stack.tenant)
    make_agent(model, [callback]).run("Research budget governance")
    assert len(governed(spans)) == 5
    # The first (violating) answer is retried once with the same key; the authority replays the same reservation.
    assert len(stack.api.reservations(stack.tenant)) == 5
    assert stack.spent() == expected_spend(spans)
    assert stack.active() == []


@pytest.mark.parametrize("violation", sorted(VIOLATIONS))
def test_protocol_violating_commit_answer_is_retried_and_counted_once(
    stack: Stack, proxy: FaultProxy, model: ScriptedModel, spans, violation: str
) -> None:
    stack.budget("", 100_000_000)
    proxy.add(path="/commit", method="POST", first_per_path=True, **VIOLATIONS[violation])
    callback = CyclesBudgetCallback(client=stack.client(proxy.base_url), tenant=stack.tenant, settle_timeout_s=0)
    make_agent(model, [callback]).run("Research budget governance")
    expected = expected_spend(spans)

    def retried() -> bool:
        per_path = Counter(e.path for e in proxy.requests("/commit", "POST"))
        return len(per_path) == 5 and all(n == 2 for n in per_path.values())

    assert stack.wait_for(retried)  # the violating answer, then the same-key retry the authority replays
    assert stack.wait_for(lambda: stack.spent() == expected)
    assert callback._settlement.flush(30)  # every delivery finished: nothing can land twice after this
    assert stack.spent() == expected
    assert stack.active() == []


def test_persistently_violating_reserve_fails_closed_and_charges_nothing(
    stack: Stack, proxy: FaultProxy, model: ScriptedModel
) -> None:
    stack.budget("", 100_000_000)
    proxy.add(path=RESERVE, method="POST", after="mutate", mutate=_extra_key)
    callback = CyclesBudgetCallback(
        client=stack.client(proxy.base_url), tenant=stack.tenant, ttl_ms=1000, grace_period_ms=0
    )
    with pytest.raises(AuthorityUnavailable):
        make_agent(model, [callback]).run("Research budget governance")
    assert model.request_count == 0
    assert len(stack.api.reservations(stack.tenant)) == 1  # the retry reused the key
    assert stack.wait_for(lambda: _released_and_clean(stack))
    assert stack.spent() == 0
