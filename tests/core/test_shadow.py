"""Shadow mode: every call is decided and recorded by the authority, nothing is ever stopped.

Real tinyagent runs against the embedded authority over loopback HTTP; the spend the ledger recorded is read back from
its events, and compared with genai-prices on the usage the scripted model served.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from otel_cycles import CyclesBudgetCallback
from otel_cycles.authority import LocalAuthority
from otel_cycles.errors import DENIAL_REASONS
from otel_cycles.testing import ScriptedModel
from tests.conftest import Tenant
from tests.core.agents import make_agent, search_web
from tests.core.test_caps import counter, governed
from tests.oracle import DEFAULT_TOOL_COST, Oracle

ORACLE = Oracle(tool_costs={"search_web": DEFAULT_TOOL_COST})


def ledger_events(authority: LocalAuthority, tenant_id: str) -> list[dict[str, Any]]:
    """The events the embedded authority recorded for the tenant: actual and charged amounts, and their metadata."""
    with authority.ledger._tx() as conn:
        rows = conn.execute(
            "SELECT actual, charged, metadata_json FROM events WHERE tenant_id = ?", (tenant_id,)
        ).fetchall()
    return [{"actual": row[0], "charged": row[1], "metadata": json.loads(row[2] or "{}")} for row in rows]


def test_shadow_mode_never_stops_a_run_on_a_one_microcent_budget(
    tenant: Tenant, spans: Any, metric_reader: Any
) -> None:
    tenant.budget("", 1)
    before = counter(metric_reader, "cycles.shadow.denials")
    callback = CyclesBudgetCallback(client=tenant.client, tenant=tenant.id, agent="researcher", shadow=True)
    with ScriptedModel(tool_rounds=2) as model:
        trace = make_agent(model, [callback]).run("Research budgets")
        assert model.request_count == 3
    assert trace.final_output

    calls = governed(spans)
    assert len(calls) == 5  # 3 LLM calls, 2 searches (tinyagent's final answer is not a tool call)
    for span in calls:
        assert span.attributes["cycles.shadow"] is True
        assert span.attributes["cycles.decision"] == "DENY"
        assert span.attributes["cycles.reason_code"] in DENIAL_REASONS
        assert "cycles.reservation.id" not in span.attributes
    assert counter(metric_reader, "cycles.shadow.denials") - before == 5

    # The spend of every would-be-denied call is recorded as an event with its full actual amount; the balance is
    # charged what the budget still held (the protocol's ALLOW_IF_AVAILABLE) and marked over limit.
    assert tenant.spent() == 1
    if isinstance(tenant.authority, LocalAuthority):  # the embedded ledger's events table (no protocol route lists it)
        events = ledger_events(tenant.authority, tenant.id)
        expected = sorted(ORACLE.expected(s) for s in calls)
        assert sorted(e["actual"] for e in events) == expected
        assert {e["metadata"]["recovery_reason"] for e in events} == {"shadow_denied"}
        assert sum(e["charged"] for e in events) == 1
    assert tenant.balance()["is_over_limit"] is True
    assert tenant.authority.reservations(tenant.id, status="ACTIVE") == []


def test_shadow_mode_commits_reservations_while_they_are_allowed(tenant: Tenant, spans: Any) -> None:
    tenant.budget("", 100_000_000)
    callback = CyclesBudgetCallback(client=tenant.client, tenant=tenant.id, shadow=True)
    with ScriptedModel(tool_rounds=1) as model:
        make_agent(model, [callback], tools=[search_web]).run("Research budgets")
    calls = governed(spans)
    assert {s.attributes["cycles.decision"] for s in calls} == {"ALLOW"}
    assert tenant.spent() == ORACLE.spent(calls)
    assert {r["status"] for r in tenant.authority.reservations(tenant.id)} == {"COMMITTED"}


def test_shadow_mode_from_the_environment(tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CYCLES_SHADOW", "true")
    monkeypatch.setenv("CYCLES_SOFT_LANDING", "true")
    monkeypatch.setenv("CYCLES_SOFT_LANDING_FLOOR", "64")
    callback = CyclesBudgetCallback(client=tenant.client, tenant=tenant.id)
    assert (callback.shadow, callback.soft_landing, callback.soft_landing_floor) == (True, True, 64)
    assert CyclesBudgetCallback(client=tenant.client, tenant=tenant.id, shadow=False).shadow is False
