"""A tool call outlives its reservation's TTL: the heartbeat extends it, or, without one, the spend is still
recorded through the commit's `POST /v1/events` fallback."""

from __future__ import annotations

import time

from otel_cycles import CyclesBudgetCallback
from otel_cycles._heartbeat import heartbeat_for
from otel_cycles.testing import ScriptedModel
from tests.core.agents import make_agent
from tests.oracle import DEFAULT_TOOL_COST, Oracle
from tests.reliability.conftest import Stack
from tests.reliability.helpers import expected_spend

ORACLE = Oracle(tool_costs={"slow_tool": DEFAULT_TOOL_COST})


def slow_tool(query: str) -> str:
    """A tool that runs longer than the reservation TTL.

    Args:
        query: Anything.
    """
    time.sleep(2.2)
    return f"slow results for {query}"


def test_expired_reservation_is_recorded_as_an_event(stack: Stack, spans) -> None:
    stack.budget("", 100_000_000)
    callback = CyclesBudgetCallback(
        client=stack.client(), tenant=stack.tenant, ttl_ms=1000, grace_period_ms=0, heartbeat=False, lookahead=False
    )
    with ScriptedModel(tool_rounds=1) as model:
        make_agent(model, [callback], tools=[slow_tool]).run("Research budget governance")
    expected = expected_spend(spans, ORACLE)
    assert stack.wait_for(lambda: stack.spent() == expected), (stack.spent(), expected)
    statuses = sorted(r["status"] for r in stack.api.reservations(stack.tenant))
    assert statuses == ["COMMITTED", "COMMITTED", "EXPIRED"]  # the tool's reservation expired mid-call
    assert callback._settlement.flush(30)  # every delivery finished: nothing can land twice after this
    assert stack.spent() == expected
    assert stack.active() == []


def test_heartbeat_keeps_a_long_tool_call_reserved(stack: Stack, spans) -> None:
    stack.budget("", 100_000_000)
    client = stack.client()
    callback = CyclesBudgetCallback(client=client, tenant=stack.tenant, ttl_ms=1000, grace_period_ms=0)
    with ScriptedModel(tool_rounds=1) as model:
        make_agent(model, [callback], tools=[slow_tool]).run("Research budget governance")
    expected = expected_spend(spans, ORACLE)
    assert stack.wait_for(lambda: stack.spent() == expected)
    # The two LLM calls and the tool call; the next call's lookahead, made before the tool ran, was released once
    # it was too old to adopt (not left to expire), and the second LLM call reserved for itself.
    statuses = sorted(r["status"] for r in stack.api.reservations(stack.tenant))
    assert statuses == ["COMMITTED"] * 3 + ["RELEASED"]
    llm_spans = [s for s in spans.get_finished_spans() if s.name.startswith("call_llm")]
    assert [s.attributes.get("cycles.lookahead") for s in llm_spans] == [None, None]
    assert heartbeat_for(client).extensions >= 3  # ~every 0.5 s through a 2.2 s call
    assert stack.wait_for(lambda: len(heartbeat_for(client)) == 0)  # settled spans are no longer watched
    assert stack.active() == []
