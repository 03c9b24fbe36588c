"""Real tinyagent agents against the scripted model and the embedded authority over loopback HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import genai_prices
import pytest

from otel_cycles import BudgetExceeded, CyclesBudgetCallback
from otel_cycles.testing import ScriptedModel, Usage
from tests.conftest import Tenant
from tests.core.agents import make_agent
from tests.oracle import priced_microcents


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
    expected = sum(priced_microcents(s.attributes) for s in governed)
    assert expected == sum(s.attributes["cycles.actual.amount"] for s in governed)
    for scope in ("", "workflow:research", "workflow:research/agent:researcher"):
        assert tenant.spent(scope) == expected
    assert all(s.attributes["gen_ai.usage.cost.source"] == "local" for s in governed if "call_llm" in s.name)
    # AnyAgent's own cost roll-up works again, and agrees with the commits.
    assert trace.cost.total_cost == pytest.approx(
        sum(s.attributes["gen_ai.usage.cost.amount"] for s in governed if "call_llm" in s.name)
    )
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
    llm = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=first.prompt_tokens, output_tokens=first.completion_tokens),
        "gpt-4o",
        provider_id="openai",
    )
    assert tenant.spent("agent:mid") == int(llm.total_price * 100_000_000) + 100_000
    assert tenant.active() == []


@pytest.mark.parametrize(
    "scenario",
    ["success", "model_http_500", "cancel_in_tool", "parallel_tool_calls"],
)
def test_no_reservation_left_active(tenant: Tenant, scenario: str) -> None:
    tenant.budget("", 100_000_000)
    callback = CyclesBudgetCallback(client=tenant.client, tenant=tenant.id, agent="a")
    model_kwargs: dict[str, Any] = {"tool_rounds": 1}
    if scenario == "model_http_500":
        model_kwargs["fail_requests"] = range(2, 10)
    if scenario == "parallel_tool_calls":
        model_kwargs["parallel"] = 3

    class Stop(Exception):
        pass

    def exploding_tool(query: str) -> str:
        """A tool that raises.

        Args:
            query: Anything.
        """
        raise Stop("tool exploded")

    with ScriptedModel(**model_kwargs) as model:
        extra: dict[str, Any] = {"tools": [exploding_tool]} if scenario == "cancel_in_tool" else {}
        agent = make_agent(model, [callback], **extra)
        try:
            agent.run("Research budget governance")
        except Exception:
            assert scenario == "model_http_500"
    assert tenant.active() == []
    assert tenant.balance()["reserved"] == {"unit": "USD_MICROCENTS", "amount": 0}


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
    assert tenant.spent() > 0
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
    assert tenant.active() == []
