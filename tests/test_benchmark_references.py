"""The benchmarks' async-native reference recipe governs for real: BENCHMARKS.md compares otel-cycles with it, and a
figure measured against a recipe that skipped the authority would say nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from benchmarks.guide_async import AsyncGuideBudgetCallback, AsyncGuideBudgetExceeded
from otel_cycles.testing import ScriptedModel
from tests.conftest import Tenant
from tests.core.agents import make_agent

_GOVERNED = ("call_llm", "execute_tool")


def _recipe(tenant: Tenant) -> AsyncGuideBudgetCallback:
    return AsyncGuideBudgetCallback(tenant.authority.base_url, tenant.client._config.api_key, tenant=tenant.id)


def _priced_by_the_recipe(trace: Any) -> int:
    """What the recipe commits for a run: its own rates (250 and 1,000 µ¢ per input and output token; tools free)
    applied here to the usage the trace recorded."""
    return sum(
        span.attributes.get("gen_ai.usage.input_tokens", 0) * 250
        + span.attributes.get("gen_ai.usage.output_tokens", 0) * 1_000
        for span in trace.spans
        if span.attributes.get("gen_ai.operation.name") == "call_llm"
    )


def test_the_async_native_recipe_reserves_and_commits_every_call_of_concurrent_runs(
    tenant: Tenant, model: ScriptedModel
) -> None:
    tenant.budget("", 100_000_000)
    agent = make_agent(model, [_recipe(tenant)])

    async def wave() -> list[Any]:
        return list(await asyncio.gather(*(agent.run_async("Find out how budgets work.") for _ in range(4))))

    traces = asyncio.run(wave())

    governed = sum(1 for t in traces for s in t.spans if s.attributes.get("gen_ai.operation.name") in _GOVERNED)
    assert governed >= 4 * 3  # each run: LLM calls and tool calls
    assert len(tenant.authority.reservations(tenant.id, status="COMMITTED")) == governed
    assert tenant.active() == []
    assert tenant.spent() == sum(_priced_by_the_recipe(t) for t in traces) > 0


def test_the_async_native_recipe_stops_a_run_its_budget_cannot_pay_before_the_model_is_called(
    tenant: Tenant, model: ScriptedModel
) -> None:
    tenant.budget("", 1_000_000)  # below the 2,000,000 µ¢ the recipe reserves for an LLM call
    agent = make_agent(model, [_recipe(tenant)])

    with pytest.raises(AsyncGuideBudgetExceeded):
        asyncio.run(agent.run_async("Find out how budgets work."))

    assert model.request_count == 0
    assert tenant.active() == []
    assert tenant.spent() == 0
