"""The lookahead: a run's next calls are reserved as soon as the answer naming them is in (`otel_cycles._lookahead`).

Real tinyagent agents (and, where the order of events must be forced, the callback's hooks driven as AnyAgent drives
them) against the embedded authority over loopback HTTP.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from runcycles import CyclesClient

from otel_cycles import CyclesBudgetCallback
from otel_cycles import callback as callback_module
from otel_cycles.testing import ScriptedModel
from tests.conftest import Tenant
from tests.core.agents import answer_naming_a_tool, hand_run, make_agent, run_tool
from tests.oracle import DEFAULT_TOOL_COST, Oracle, llm_price

ORACLE = Oracle(tool_costs={"slow_search": DEFAULT_TOOL_COST})

BIG = 10_000_000_000  # $100: ample room, so lookaheads are made


def slow_search(query: str) -> str:
    """Search the web for `query` (slowly, like a real search).

    Args:
        query: What to search for.
    """
    time.sleep(0.3)
    return f"Top results for {query}."


def governed(spans: Any) -> list[Any]:
    return [s for s in spans.get_finished_spans() if s.attributes.get("cycles.action.kind")]


def lookahead_outcomes(reader: Any) -> dict[str, int]:
    """Cumulative `cycles.lookahead` counts by outcome (the session's metric reader: compare before and after)."""
    counts: dict[str, int] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "cycles.lookahead":
                    for point in metric.data.data_points:
                        outcome = str(point.attributes["outcome"])
                        counts[outcome] = counts.get(outcome, 0) + int(point.value)
    return counts


def wait_for(condition: Any, timeout: float = 10.0) -> bool:
    """Poll `condition` until it holds (a bound on the wait, not a synchronisation delay)."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(condition())


def grew(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def statuses(tenant: Tenant) -> list[str]:
    return sorted(str(r["status"]) for r in tenant.authority.reservations(tenant.id))


def test_next_calls_adopt_the_lookahead_and_spent_stays_exact(tenant: Tenant, spans, metric_reader) -> None:
    tenant.budget("", BIG)
    before = lookahead_outcomes(metric_reader)
    callback = CyclesBudgetCallback(client=tenant.client, tenant=tenant.id, agent="a")
    with ScriptedModel(tool_rounds=2) as model:
        make_agent(model, [callback], tools=[slow_search]).run("Research budget governance")

    llm = [s for s in governed(spans) if s.name.startswith("call_llm")]
    tools = [s for s in governed(spans) if s.name.startswith("execute_tool")]
    assert len(llm) == 3 and len(tools) == 2
    # The first call reserves for itself; each later one adopts the reservation made while the tool ran.
    assert [s.attributes.get("cycles.lookahead") for s in llm] == [None, True, True]
    for span in llm[1:]:
        assert span.attributes["cycles.reserved.amount"] >= span.attributes["cycles.estimate.amount"]
    expected = ORACLE.spent(governed(spans))
    assert tenant.spent() == expected
    # One reservation per governed call: no lookahead was wasted (none follows the final answer).
    assert statuses(tenant) == ["COMMITTED"] * len(governed(spans))
    # Each tool call adopts the reservation sent for it as soon as the answer naming it was in.
    outcomes = grew(before, lookahead_outcomes(metric_reader))
    assert all(s.attributes.get("cycles.lookahead") is True for s in tools)
    assert outcomes == {"adopted": 4}
    assert tenant.active() == []


def test_lookahead_off_reserves_every_call(tenant: Tenant, spans) -> None:
    tenant.budget("", BIG)
    callback = CyclesBudgetCallback(client=tenant.client, tenant=tenant.id, lookahead=False)
    with ScriptedModel(tool_rounds=2) as model:
        make_agent(model, [callback], tools=[slow_search]).run("Research budget governance")
    assert all("cycles.lookahead" not in s.attributes for s in governed(spans))
    assert tenant.spent() == ORACLE.spent(governed(spans))


def test_no_lookahead_when_the_budget_is_tight(tenant: Tenant, spans) -> None:
    # Room for the run, but not for HEADROOM times a speculative reservation.
    tenant.budget("", 40_000_000)
    callback = CyclesBudgetCallback(client=tenant.client, tenant=tenant.id)
    with ScriptedModel(tool_rounds=2) as model:
        make_agent(model, [callback], tools=[slow_search]).run("Research budget governance")
    assert all("cycles.lookahead" not in s.attributes for s in governed(spans))
    assert statuses(tenant) == ["COMMITTED"] * len(governed(spans))


def test_a_lookahead_too_small_for_the_call_is_released(tenant: Tenant, spans, metric_reader) -> None:
    tenant.budget("", BIG)
    before = lookahead_outcomes(metric_reader)
    # A callable estimate that grows 10x per call: the lookahead (2x the last) never fits.
    amounts = iter([1_000_000, 10_000_000, 100_000_000, 1_000_000_000])
    callback = CyclesBudgetCallback(client=tenant.client, tenant=tenant.id, llm_estimate=lambda call: next(amounts))
    with ScriptedModel(tool_rounds=2) as model:
        make_agent(model, [callback], tools=[slow_search]).run("Research budget governance")
    llm = [s for s in governed(spans) if s.name.startswith("call_llm")]
    assert [s.attributes["cycles.estimate.amount"] for s in llm] == [1_000_000, 10_000_000, 100_000_000]
    assert all("cycles.lookahead" not in s.attributes for s in llm)
    assert tenant.spent() == ORACLE.spent(governed(spans))
    # The two unfit lookaheads were released, not left to expire.
    assert statuses(tenant) == ["COMMITTED"] * len(governed(spans)) + ["RELEASED"] * 2
    assert tenant.active() == []
    # The tools' lookaheads (their estimate is fixed) fit: adopted.
    outcomes = grew(before, lookahead_outcomes(metric_reader))
    assert outcomes == {"unfit": 2, "adopted": 2}


def test_a_denied_lookahead_never_denies_the_call(tenant: Tenant, spans, monkeypatch, metric_reader) -> None:
    # Force lookaheads on a budget that can never hold one: a callable estimate's lookahead is twice the last estimate
    # (2,000,000), more than the whole budget, while each call's own 1,000,000 fits. So each lookahead is denied,
    # whatever the order its request and the previous call's commit reach the authority in, and the call is not.
    monkeypatch.setattr(callback_module, "worth_it", lambda amount, balances: True)
    tenant.budget("", 1_900_000)
    before = lookahead_outcomes(metric_reader)
    callback = CyclesBudgetCallback(client=tenant.client, tenant=tenant.id, llm_estimate=lambda call: 1_000_000)
    with ScriptedModel(tool_rounds=2) as model:
        make_agent(model, [callback], tools=[slow_search]).run("Research budget governance")
    llm = [s for s in governed(spans) if s.name.startswith("call_llm")]
    assert len(llm) == 3
    assert all("cycles.lookahead" not in s.attributes for s in llm)
    assert grew(before, lookahead_outcomes(metric_reader)).get("not_allowed") == 2
    assert all(s.attributes["cycles.decision"] == "ALLOW" for s in governed(spans))
    assert tenant.spent() == ORACLE.spent(governed(spans))
    assert tenant.active() == []


def test_a_tool_denied_because_of_the_lookahead_gets_it_back(tenant: Tenant, monkeypatch, metric_reader) -> None:
    """Hooks driven by hand so the tool reserves exactly while the lookahead is held."""
    monkeypatch.setattr(callback_module, "worth_it", lambda amount, balances: True)
    tenant.budget("", 3_000_000)
    before = lookahead_outcomes(metric_reader)
    callback = CyclesBudgetCallback(
        client=tenant.client, tenant=tenant.id, llm_estimate=1_000_000, tool_estimate=2_500_000, tool_cost=1_000
    )
    context, invoke = hand_run(callback)

    answer_naming_a_tool(callback, context)
    run = context.shared[callback._state_key]
    lookahead = run.lookahead
    assert lookahead is not None and lookahead.sent_at > 0  # sent when the answer came in
    # Held at the authority now (bounded wait): 3M - ~0 spent - 1M lookahead < the tool's 2.5M.
    assert wait_for(lambda: lookahead.key in {r.get("idempotency_key") for r in tenant.active()})

    tool = context.tracer.start_span("execute_tool search", attributes={"gen_ai.tool.name": "search"})
    context.current_span = tool
    callback.before_tool_execution(context)  # denied once, releases the lookahead, allowed on the retry
    assert tool.attributes["cycles.decision"] == "ALLOW"  # type: ignore[attr-defined]
    assert run.lookahead is None
    callback.after_tool_execution(context)
    tool.end()
    invoke.end()
    callback.after_agent_invocation(context, "prompt")
    assert statuses(tenant) == ["COMMITTED", "COMMITTED", "RELEASED"]
    assert tenant.active() == []
    assert grew(before, lookahead_outcomes(metric_reader)) == {"unused": 1}


def test_a_cancelled_run_releases_its_lookahead(tenant: Tenant, metric_reader) -> None:
    tenant.budget("", BIG)
    before = lookahead_outcomes(metric_reader)
    callback = CyclesBudgetCallback(client=tenant.client, tenant=tenant.id)
    held = threading.Event()

    async def stuck_search(query: str) -> str:
        """Search that never comes back.

        Args:
            query: What to search for.
        """
        # Cancel only once the tool's reservation and the lookahead are both held at the authority (bounded wait).
        deadline = time.monotonic() + 30
        while len(tenant.authority.reservations(tenant.id, status="ACTIVE")) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        held.set()
        await asyncio.Event().wait()
        return "never"

    async def cancelled(agent: Any) -> None:
        task = asyncio.ensure_future(agent.run_async("Research budget governance"))
        while not held.is_set():
            assert not task.done(), "the run ended before its tool started"
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with ScriptedModel(tool_rounds=2) as model:
        asyncio.run(cancelled(make_agent(model, [callback], tools=[stuck_search])))
    assert model.request_count == 1
    # The tool call and the lookahead made before it are both returned by the reaper, without waiting for the TTL
    # (a bound on the wait, not a synchronisation delay).
    deadline = time.monotonic() + 30
    while tenant.active() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tenant.active() == []
    assert statuses(tenant) == ["COMMITTED", "RELEASED", "RELEASED"]
    outcomes = grew(before, lookahead_outcomes(metric_reader))
    assert outcomes.pop("unused") == 1  # the next LLM call's
    # The tool's own lookahead: adopted by the tool call (sent by the lane, or by the tool's hook if it came first).
    assert outcomes == {"adopted": 1}
    assert tenant.spent() == llm_price(101, 21)  # the first answer only (the scripted model's usage for request 1)


# -- sent at the answer, read by the call ----------------------------------------------------------------------------


def test_lookaheads_are_sent_when_the_answer_is_in_and_read_by_the_calls_that_adopt_them(
    tenant: Tenant, metric_reader
) -> None:
    """Hooks driven by hand: both lookaheads are held at the authority before any call claims them."""
    tenant.budget("", BIG)
    before = lookahead_outcomes(metric_reader)
    callback = CyclesBudgetCallback(client=tenant.client, tenant=tenant.id, llm_estimate=1_000_000, tool_estimate=1_000)
    context, invoke = hand_run(callback)

    answer_naming_a_tool(callback, context)
    run = context.shared[callback._state_key]
    [tool_lookahead] = run.tool_lookaheads
    llm_lookahead = run.lookahead
    assert llm_lookahead is not None
    assert 0 < tool_lookahead.sent_at <= llm_lookahead.sent_at  # the tool's first: its call comes first
    keys = {tool_lookahead.key, llm_lookahead.key}
    assert wait_for(lambda: keys <= {r.get("idempotency_key") for r in tenant.active()})

    tool = run_tool(callback, context)
    assert tool.attributes["cycles.lookahead"] is True
    assert run.lookahead is llm_lookahead  # the next LLM call's is still the run's, unread

    llm = context.tracer.start_span("call_llm gpt-4o", attributes={"gen_ai.request.model": "gpt-4o"})
    context.current_span = llm
    callback.before_llm_call(context)
    assert llm.attributes["cycles.lookahead"] is True  # type: ignore[attr-defined]
    llm.set_attributes({"gen_ai.usage.input_tokens": 50, "gen_ai.usage.output_tokens": 5, "gen_ai.output.type": "text"})
    callback.after_llm_call(context)
    llm.end()
    invoke.end()
    callback.after_agent_invocation(context, "prompt")
    assert tenant.active() == []
    assert grew(before, lookahead_outcomes(metric_reader)) == {"adopted": 2}
    assert tenant.spent() == llm_price(100, 10) + llm_price(50, 5) + 1_000  # settled when the run returned


def test_a_client_that_cannot_send_ahead_leaves_each_lookahead_to_its_call(tenant: Tenant, metric_reader) -> None:
    """A user's CyclesClient subclass keeps its own transport: nothing is sent before the call that needs it."""

    class OwnTransport(CyclesClient):
        pass

    tenant.budget("", BIG)
    before = lookahead_outcomes(metric_reader)
    client = OwnTransport(tenant.client._config)
    callback = CyclesBudgetCallback(client=client, tenant=tenant.id, llm_estimate=1_000_000, tool_estimate=1_000)
    context, invoke = hand_run(callback)
    answer_naming_a_tool(callback, context)
    run = context.shared[callback._state_key]
    [tool_lookahead] = run.tool_lookaheads
    assert tool_lookahead.sent_at == 0 and run.lookahead is not None and run.lookahead.sent_at == 0
    tool = run_tool(callback, context)  # sends its own lookahead's request: the same request, once
    assert tool.attributes["cycles.lookahead"] is True
    invoke.end()
    callback.after_agent_invocation(context, "prompt")  # the next LLM call's, never sent, is dropped unsent
    assert tenant.active() == []
    assert grew(before, lookahead_outcomes(metric_reader)) == {"adopted": 1, "not_sent": 1}
    assert statuses(tenant) == ["COMMITTED", "COMMITTED"]
    assert tenant.spent() == llm_price(100, 10) + 1_000
