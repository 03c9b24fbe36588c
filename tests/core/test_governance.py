"""Real tinyagent agents against the scripted model and the embedded authority over loopback HTTP."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from otel_cycles import BudgetExceeded, CyclesBudgetCallback
from otel_cycles.testing import ScriptedModel, Usage
from tests.conftest import Tenant
from tests.core.agents import make_agent
from tests.oracle import DEFAULT_TOOL_COST, Oracle, llm_price

ORACLE = Oracle(tool_costs={"search_web": DEFAULT_TOOL_COST})


def governed_spans(spans):
    return [s for s in spans.get_finished_spans() if s.attributes.get("cycles.action.kind")]


def test_spent_equals_priced_usage_on_every_scope(tenant: Tenant, model: ScriptedModel, spans) -> None:
    tenant.budget("", 100_000_000)
    tenant.budget("workflow:research", 50_000_000)
    tenant.budget("workflow:research/agent:researcher", 10_000_000)
    callback = CyclesBudgetCallback(client=tenant.client, tenant=tenant.id, workflow="research", agent="researcher")

    trace = make_agent(model, [callback]).run("Research budget governance")

    governed = governed_spans(spans)
    assert [s.attributes["cycles.action.kind"] for s in governed].count("llm.completion") == model.request_count == 3
    # The scripted model's own record of the usage it served, priced by genai-prices, plus two $0.001 tool calls.
    served = [r.usage for r in model.requests]
    expected = sum(llm_price(u.prompt_tokens, u.completion_tokens) for u in served if u is not None) + 2 * 100_000
    assert ORACLE.spent(governed) == expected
    for scope in ("", "workflow:research", "workflow:research/agent:researcher"):
        assert tenant.spent(scope) == expected
    assert all(s.attributes["gen_ai.usage.cost.source"] == "local" for s in governed if "call_llm" in s.name)
    # AnyAgent's own cost roll-up (it sums LLM spans only) works again and agrees with the independent price.
    assert trace.cost.total_cost == pytest.approx((expected - 2 * 100_000) / 100_000_000, rel=1e-9)
    assert tenant.active() == []


def test_small_budget_stops_before_the_model_sees_the_request(tenant: Tenant, model: ScriptedModel, spans) -> None:
    tenant.budget("agent:poor", 5_000)
    callback = CyclesBudgetCallback(client=tenant.client, tenant=tenant.id, agent="poor")

    with pytest.raises(BudgetExceeded) as raised:
        make_agent(model, [callback]).run("Research budget governance")

    assert model.request_count == 0
    error = raised.value
    assert error.reason_code == "BUDGET_EXCEEDED"
    assert error.scope == f"tenant:{tenant.id}/agent:poor"
    assert error.remaining == 5_000
    assert error.trace is not None
    spans_ = error.trace.spans
    denied = spans_[-2] if spans_[-1].name.startswith("invoke_agent") else spans_[-1]
    assert denied.name.startswith("call_llm")
    assert denied.status.status_code.name == "ERROR"
    assert denied.attributes["cycles.decision"] == "DENY"
    assert denied.attributes["cycles.reason_code"] == "BUDGET_EXCEEDED"
    assert tenant.spent("agent:poor") == 0
    assert tenant.active() == []


def test_budget_runs_out_mid_run(tenant: Tenant, model: ScriptedModel) -> None:
    # Enough for one priced LLM reservation (~1.26M) and a tool call, not for the second LLM call.
    tenant.budget("agent:mid", 1_300_000)
    callback = CyclesBudgetCallback(client=tenant.client, tenant=tenant.id, agent="mid")

    with pytest.raises(BudgetExceeded):
        make_agent(model, [callback]).run("Research budget governance")

    assert model.request_count == 1
    first = model.requests[0].usage
    assert first is not None
    assert tenant.spent("agent:mid") == llm_price(first.prompt_tokens, first.completion_tokens) + DEFAULT_TOOL_COST
    assert tenant.active() == []


def served_price(model: ScriptedModel, numbers: range | list[int]) -> int:
    """genai-prices' price of the usage the scripted model served on requests `numbers` (1-based)."""
    total = 0
    for n in numbers:
        usage = model.requests[n - 1].usage
        assert usage is not None, f"request {n} was not answered with usage"
        total += llm_price(usage.prompt_tokens, usage.completion_tokens)
    return total


def statuses(tenant: Tenant) -> list[str]:
    return sorted(str(r["status"]) for r in tenant.authority.reservations(tenant.id))


def assert_nothing_held(tenant: Tenant) -> None:
    assert tenant.active() == []
    assert tenant.balance()["reserved"] == {"unit": "USD_MICROCENTS", "amount": 0}


def test_a_finished_run_commits_every_call(tenant: Tenant, spans) -> None:
    tenant.budget("", 100_000_000)
    callback = CyclesBudgetCallback(client=tenant.client, tenant=tenant.id, agent="a")
    with ScriptedModel(tool_rounds=1) as model:
        make_agent(model, [callback]).run("Research budget governance")
    assert model.request_count == 2
    expected = served_price(model, [1, 2]) + DEFAULT_TOOL_COST
    assert ORACLE.spent(governed_spans(spans)) == expected
    assert tenant.spent() == expected
    # LLM, tool, LLM (the second adopted the lookahead made while the tool ran): one reservation each.
    assert statuses(tenant) == ["COMMITTED"] * 3
    assert_nothing_held(tenant)


def test_a_model_http_500_releases_the_failed_call(tenant: Tenant, spans) -> None:
    tenant.budget("", 100_000_000)
    callback = CyclesBudgetCallback(client=tenant.client, tenant=tenant.id, agent="a")
    # Request 1 asks for the tool; every later request fails (the OpenAI client retries the 500 twice).
    with ScriptedModel(tool_rounds=1, fail_requests=range(2, 10)) as model:
        agent = make_agent(model, [callback])
        with pytest.raises(Exception) as raised:
            agent.run("Research budget governance")
    assert not isinstance(raised.value, BudgetExceeded)
    assert model.request_count == 4
    expected = served_price(model, [1]) + DEFAULT_TOOL_COST
    assert ORACLE.spent(governed_spans(spans)) == expected
    assert tenant.spent() == expected
    assert statuses(tenant) == ["COMMITTED", "COMMITTED", "RELEASED"]
    assert_nothing_held(tenant)


def test_a_failing_tool_releases_its_reservation(tenant: Tenant, spans) -> None:
    tenant.budget("", 100_000_000)
    callback = CyclesBudgetCallback(client=tenant.client, tenant=tenant.id, agent="a")

    def exploding_tool(query: str) -> str:
        """A tool that raises.

        Args:
            query: Anything.
        """
        raise RuntimeError("tool exploded")

    with ScriptedModel(tool_rounds=1) as model:
        make_agent(model, [callback], tools=[exploding_tool]).run("Research budget governance")
    (tool,) = [s for s in governed_spans(spans) if s.name.startswith("execute_tool")]
    assert tool.status.status_code.name == "ERROR"
    # tinyagent hands the tool's error to the model, which answers: two LLM calls committed, the tool released.
    assert model.request_count == 2
    expected = served_price(model, [1, 2])
    assert ORACLE.spent(governed_spans(spans)) == expected
    assert tenant.spent() == expected
    assert statuses(tenant) == ["COMMITTED", "COMMITTED", "RELEASED"]
    assert_nothing_held(tenant)


def test_a_run_cancelled_inside_a_tool_releases_the_tool_and_the_lookahead(tenant: Tenant, spans) -> None:
    tenant.budget("", 100_000_000)
    callback = CyclesBudgetCallback(client=tenant.client, tenant=tenant.id, agent="a")
    entered = threading.Event()

    async def stuck_tool(query: str) -> str:
        """A tool that waits until it is cancelled.

        Args:
            query: Anything.
        """
        # Signal only once the tool's reservation and the next call's lookahead are both held (bounded wait).
        wait_until(lambda: len(tenant.active()) >= 2, timeout=30)
        entered.set()
        await asyncio.Event().wait()
        return "never"

    async def run_and_cancel(agent: Any) -> None:
        task = asyncio.ensure_future(agent.run_async("Research budget governance"))
        while not entered.is_set():
            assert not task.done(), "the run ended before its tool started"
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with ScriptedModel(tool_rounds=1) as model:
        asyncio.run(run_and_cancel(make_agent(model, [callback], tools=[stuck_tool])))
    assert model.request_count == 1
    # The reaper returns the tool's reservation and the lookahead made for the next LLM call (bounded wait).
    wait_until(lambda: tenant.active() == [], timeout=15)
    assert statuses(tenant) == ["COMMITTED", "RELEASED", "RELEASED"]
    assert tenant.spent() == served_price(model, [1])
    assert_nothing_held(tenant)


def test_parallel_tool_calls_are_each_committed(tenant: Tenant, spans) -> None:
    tenant.budget("", 100_000_000)
    callback = CyclesBudgetCallback(client=tenant.client, tenant=tenant.id, agent="a")
    with ScriptedModel(tool_rounds=1, parallel=3) as model:
        make_agent(model, [callback]).run("Research budget governance")
    assert model.request_count == 2
    tools = [s for s in governed_spans(spans) if s.name.startswith("execute_tool")]
    assert len(tools) == 3
    expected = served_price(model, [1, 2]) + 3 * DEFAULT_TOOL_COST
    assert ORACLE.spent(governed_spans(spans)) == expected
    assert tenant.spent() == expected
    assert statuses(tenant) == ["COMMITTED"] * 5
    assert_nothing_held(tenant)


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds (a bound, not a synchronisation delay)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_zero_usage_is_unknown_not_free(tenant: Tenant, spans) -> None:
    tenant.budget("", 100_000_000)
    callback = CyclesBudgetCallback(client=tenant.client, tenant=tenant.id, llm_estimate=777_000)
    with ScriptedModel(tool_rounds=0, usage=Usage(0, 0)) as model:
        make_agent(model, [callback]).run("hello")
    (llm,) = [s for s in governed_spans(spans) if s.name.startswith("call_llm")]
    assert llm.attributes["gen_ai.usage.cost.source"] == "estimate"
    assert llm.attributes["cycles.actual.amount"] == 777_000
    assert tenant.spent() == 777_000


def test_unknown_model_uses_flagged_fallback(tenant: Tenant, spans) -> None:
    tenant.budget("", 100_000_000)
    callback = CyclesBudgetCallback(client=tenant.client, tenant=tenant.id, unknown_model_estimate=321_000)
    with ScriptedModel(tool_rounds=0) as model:
        make_agent(model, [callback], model_id="openai:house-model-7").run("hello")
    (llm,) = [s for s in governed_spans(spans) if s.name.startswith("call_llm")]
    assert llm.attributes["cycles.price.known"] is False
    assert llm.attributes["cycles.estimate.source"] == "fallback"
    assert llm.attributes["cycles.actual.amount"] == 321_000
    assert llm.attributes["gen_ai.usage.cost.source"] == "estimate"
    assert tenant.spent() == 321_000


def test_run_async(tenant: Tenant, model: ScriptedModel) -> None:
    tenant.budget("", 100_000_000)
    callback = CyclesBudgetCallback(client=tenant.client, tenant=tenant.id, agent="async-agent")

    async def main() -> str:
        agent = await make_agent_async(model, callback)
        trace = await agent.run_async("What is budget authority?")
        return str(trace.final_output)

    async def make_agent_async(model, callback):
        from any_agent import AgentConfig, AnyAgent

        from tests.core.agents import search_web

        config = AgentConfig(
            model_id="openai:gpt-4o",
            api_base=model.base_url,
            api_key="sk-fake",
            tools=[search_web],
            callbacks=[callback],
        )
        return await AnyAgent.create_async("tinyagent", config)

    assert asyncio.run(main())
    assert model.request_count == 3
    assert tenant.spent() == served_price(model, [1, 2, 3]) + 2 * DEFAULT_TOOL_COST
    assert tenant.active() == []


def test_guide_constructor_arguments(tenant: Tenant, model: ScriptedModel, spans) -> None:
    tenant.budget("workflow:content-pipeline/agent:researcher", 100_000_000)
    callback = CyclesBudgetCallback(
        client=tenant.client,
        tenant=tenant.id,
        workflow="content-pipeline",
        agent="researcher",
        llm_estimate=3_000_000,
        tool_estimate=200_000,
        action_kind="llm.completion",
        action_name="gpt-4o",
    )
    make_agent(model, [callback]).run("quantum computing")
    governed = governed_spans(spans)
    assert {s.attributes["cycles.estimate.amount"] for s in governed} == {3_000_000, 200_000}
    assert {s.attributes["cycles.action.name"] for s in governed if "call_llm" in s.name} == {"gpt-4o"}
    # Usage is priced; a tool with no tool_cost commits its estimate.
    expected = served_price(model, [1, 2, 3]) + 2 * 200_000
    assert Oracle(tool_costs={"search_web": 200_000}).spent(governed) == expected
    assert tenant.spent("workflow:content-pipeline/agent:researcher") == expected
    assert tenant.active() == []
