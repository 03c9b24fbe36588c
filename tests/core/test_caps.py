"""Caps of `ALLOW_WITH_CAPS` decisions, honoured by the callback (`otel_cycles._caps`, `otel_cycles._clamp`).

The rules on their own, then real tinyagent runs against the embedded authority over loopback HTTP, with policies
created through its admin API, and the scripted model recording every request the agent sends.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import genai_prices
import pytest
from runcycles import Caps

from otel_cycles import ActionNotPermitted, BudgetExceeded, CyclesBudgetCallback
from otel_cycles._caps import judge, step_limit, tool_allowed
from otel_cycles.estimates import EstimatePolicy
from otel_cycles.pricing import normalize_model_id
from otel_cycles.testing import ScriptedModel
from tests.conftest import Tenant
from tests.core.agents import make_agent
from tests.oracle import DEFAULT_TOOL_COST, Oracle

CALLS = {"search_web": 0}
ORACLE = Oracle(tool_costs={"search_web": DEFAULT_TOOL_COST})
"""Tools commit the default tool estimate ($0.001): no test here configures a tool cost, except where it says so."""


def search_web(query: str) -> str:
    """Search the web for `query` and return the top results.

    Args:
        query: What to search for.
    """
    CALLS["search_web"] += 1
    return f"Top results for {query}: budgets, reservations, commits."


def slow_search(query: str) -> str:
    """Search the web for `query` (slowly, like a real search).

    Args:
        query: What to search for.
    """
    CALLS["search_web"] += 1
    time.sleep(0.3)
    return f"Top results for {query}."


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS["search_web"] = 0


def governed(spans: Any) -> list[Any]:
    return [s for s in spans.get_finished_spans() if s.attributes.get("cycles.action.kind")]


def counter(reader: Any, name: str, **match: Any) -> int:
    """Cumulative value of counter `name` over the points whose attributes include `match`."""
    total = 0
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        if all(point.attributes.get(k) == v for k, v in match.items()):
                            total += int(point.value)
    return total


def callback_for(tenant: Tenant, **kwargs: Any) -> CyclesBudgetCallback:
    return CyclesBudgetCallback(client=tenant.client, tenant=tenant.id, agent="researcher", **kwargs)


def with_policy(tenant: Tenant, caps: dict[str, Any], budget: int = 100_000_000) -> None:
    tenant.budget("", budget)
    tenant.authority.create_policy(tenant.id, f"tenant:{tenant.id}/*", caps)


def assert_nothing_held(tenant: Tenant) -> None:
    assert tenant.active() == []
    reserved = tenant.balance()["reserved"]
    assert isinstance(reserved, dict) and reserved["amount"] == 0


# -- the rules ------------------------------------------------------------------------------------------------------


def test_tool_lists_follow_the_protocol_precedence() -> None:
    assert tool_allowed(Caps(tool_allowlist=["a"], tool_denylist=["a"]), "a")  # a non-empty allowlist wins
    assert not tool_allowed(Caps(tool_allowlist=["a"]), "b")
    assert not tool_allowed(Caps(tool_denylist=["b"]), "b")
    assert tool_allowed(Caps(tool_denylist=["b"]), "B")  # names match exactly
    assert tool_allowed(Caps(tool_allowlist=[], tool_denylist=[]), "b")  # both empty: no restriction
    assert not tool_allowed(Caps(tool_allowlist=[], tool_denylist=["b"]), "b")


def test_the_tightest_step_limit_wins() -> None:
    assert step_limit(None, 1, None) is None
    assert step_limit(None, 1, Caps(max_steps_remaining=2)) == 3
    assert step_limit(3, 2, Caps(max_steps_remaining=2)) == 3  # the same cap repeated does not move the limit
    assert step_limit(5, 2, Caps(max_steps_remaining=0)) == 2
    assert step_limit(4, 3, Caps(max_tokens=10)) == 4


def test_cooldown_waits_up_to_the_bound_then_refuses() -> None:
    caps = Caps(cooldown_ms=1500)
    assert judge(caps, is_tool=False, name="m", since_last_start_s=None, max_wait_s=1).wait_s == 0  # first call
    verdict = judge(caps, is_tool=False, name="m", since_last_start_s=1.0, max_wait_s=1)
    assert verdict.refusal is None and verdict.wait_s == pytest.approx(0.5) and "cooldown" in verdict.enforced
    assert judge(caps, is_tool=False, name="m", since_last_start_s=0.0, max_wait_s=1).refusal == "COOLDOWN_TOO_LONG"


def test_max_tokens_clamps_llm_calls_only() -> None:
    caps = Caps(max_tokens=64, tool_denylist=["x"])
    assert judge(caps, is_tool=False, name="x", since_last_start_s=None, max_wait_s=1).clamp == 64
    tool = judge(caps, is_tool=True, name="y", since_last_start_s=None, max_wait_s=1)
    assert tool.clamp is None and tool.refusal is None
    assert judge(caps, is_tool=True, name="x", since_last_start_s=None, max_wait_s=1).refusal == "TOOL_NOT_ALLOWED"


def _oracle_estimate(input_tokens: int, output_tokens: int) -> int:
    price = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=input_tokens, output_tokens=output_tokens), "gpt-4o", provider_id="openai"
    )
    return int((price.total_price * Decimal("1.2") * Decimal(100_000_000)).to_integral_value(rounding="ROUND_CEILING"))


def test_soft_landing_buys_the_most_output_tokens_that_fit() -> None:
    policy = EstimatePolicy(
        llm_estimate=None,
        tool_estimate=0,
        tool_cost=None,
        output_allowance=1024,
        buffer=Decimal("0.2"),
        unknown_model_estimate=1,
    )
    model = normalize_model_id("openai:gpt-4o")
    # 400 characters in all ("user" counts too): 100 input tokens at 4 characters each
    kwargs = {"messages": [{"role": "user", "content": "x" * 396}]}
    room = 500_000
    offer = policy.landing(model, (), kwargs, room, 256)
    assert offer is not None
    amount, tokens = offer
    assert 256 <= tokens < 1024
    assert _oracle_estimate(100, tokens) == amount <= room < _oracle_estimate(100, tokens + 1)
    assert policy.landing(model, (), kwargs, _oracle_estimate(100, 255), 256) is None  # the floor does not fit
    assert policy.landing(model, (), {**kwargs, "max_tokens": 200}, room, 256) is None  # asks for less than the floor


# -- real runs ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "caps", [{"tool_denylist": ["search_web"]}, {"tool_allowlist": ["final_answer"]}], ids=["denylist", "allowlist"]
)
def test_a_forbidden_tool_never_runs(tenant: Tenant, spans: Any, caps: dict[str, Any]) -> None:
    with_policy(tenant, caps)
    with ScriptedModel(tool_rounds=1) as model:
        with pytest.raises(ActionNotPermitted) as raised:
            make_agent(model, [callback_for(tenant)], tools=[search_web]).run("Research budgets")
        assert model.request_count == 1
    assert CALLS["search_web"] == 0
    assert raised.value.reason_code == "TOOL_NOT_ALLOWED" and raised.value.action_name == "search_web"
    denied = [s for s in governed(spans) if s.attributes.get("cycles.decision") == "DENY"]
    assert [s.attributes["cycles.reason_code"] for s in denied] == ["TOOL_NOT_ALLOWED"]
    assert denied[0].attributes["cycles.caps.enforced"] == ("tool",)
    # Reserved, then released (nothing spent); the run's unused lookahead for its next LLM call is released too.
    tools = [r for r in tenant.authority.reservations(tenant.id) if r["action"]["name"] == "search_web"]
    assert [r["status"] for r in tools] == ["RELEASED"]
    llm = [s for s in governed(spans) if s.attributes["cycles.action.kind"] == "llm.completion"]
    assert tenant.spent() == ORACLE.spent(llm)
    assert_nothing_held(tenant)


def test_max_tokens_bounds_every_request(tenant: Tenant, spans: Any, metric_reader: Any) -> None:
    with_policy(tenant, {"max_tokens": 100})
    before = counter(metric_reader, "cycles.caps.enforced", **{"cycles.cap": "max_tokens", "outcome": "applied"})
    with ScriptedModel(tool_rounds=1) as model:
        make_agent(model, [callback_for(tenant)], tools=[search_web]).run("Research budgets")
        assert [r.max_output_tokens for r in model.requests] == [100, 100]
    llm = [s for s in governed(spans) if s.attributes["cycles.action.kind"] == "llm.completion"]
    for span in llm:
        assert span.attributes["cycles.decision"] == "ALLOW_WITH_CAPS"
        assert span.attributes["cycles.caps.max_tokens"] == 100
        assert span.attributes["cycles.clamp.max_tokens"] == 100
    after = counter(metric_reader, "cycles.caps.enforced", **{"cycles.cap": "max_tokens", "outcome": "applied"})
    assert after - before == 2
    assert CALLS["search_web"] == 1
    assert_nothing_held(tenant)


def test_a_smaller_request_bound_is_kept(tenant: Tenant) -> None:
    with_policy(tenant, {"max_tokens": 100})
    with ScriptedModel(tool_rounds=0) as model:
        make_agent(model, [callback_for(tenant)], model_args={"max_tokens": 40}).run("Research budgets")
        assert [r.max_output_tokens for r in model.requests] == [40]


def test_an_adopted_lookahead_carries_its_caps(tenant: Tenant, spans: Any) -> None:
    with_policy(tenant, {"max_tokens": 100}, budget=10_000_000_000)
    with ScriptedModel(tool_rounds=1) as model:
        make_agent(model, [callback_for(tenant)], tools=[slow_search]).run("Research budgets")
        assert [r.max_output_tokens for r in model.requests] == [100, 100]
    llm = [s for s in governed(spans) if s.attributes["cycles.action.kind"] == "llm.completion"]
    assert [s.attributes.get("cycles.lookahead") for s in llm] == [None, True]
    assert llm[1].attributes["cycles.caps.max_tokens"] == 100
    assert_nothing_held(tenant)


def test_max_steps_remaining_stops_the_run(tenant: Tenant, spans: Any) -> None:
    # Granted at the 1st governed call: 1 + 2 = 3 calls in all (LLM, tool, LLM); the 4th (a tool) is stopped.
    with_policy(tenant, {"max_steps_remaining": 2})
    with ScriptedModel(tool_rounds=2) as model:
        with pytest.raises(ActionNotPermitted) as raised:
            make_agent(model, [callback_for(tenant)], tools=[search_web]).run("Research budgets")
        assert model.request_count == 2
    assert raised.value.reason_code == "MAX_STEPS_REACHED"
    assert CALLS["search_web"] == 1
    made = [s for s in governed(spans) if s.attributes.get("cycles.reservation.id")]
    assert len(made) == 3
    assert tenant.spent() == ORACLE.spent(made)
    assert_nothing_held(tenant)


def test_cooldown_spaces_the_calls(tenant: Tenant, spans: Any) -> None:
    with_policy(tenant, {"cooldown_ms": 400})
    with ScriptedModel(tool_rounds=1) as model:
        make_agent(model, [callback_for(tenant)], tools=[search_web]).run("Research budgets")
        arrivals = [r.received_at for r in model.requests]
    assert len(arrivals) == 2
    # The first request arrived before the model answered, so before the tool call went ahead; the second LLM call
    # went ahead at least one cooldown after the tool call did.
    assert arrivals[1] - arrivals[0] >= 0.4
    assert {s.attributes["cycles.caps.cooldown_ms"] for s in governed(spans)} == {400}
    assert CALLS["search_web"] == 1
    assert_nothing_held(tenant)


def test_a_cooldown_longer_than_the_bound_refuses_the_call(tenant: Tenant) -> None:
    with_policy(tenant, {"cooldown_ms": 60_000})
    with ScriptedModel(tool_rounds=1) as model:
        with pytest.raises(ActionNotPermitted) as raised:
            make_agent(model, [callback_for(tenant, cooldown_max_wait_s=0.1)], tools=[search_web]).run("Research")
        assert model.request_count == 1
    assert raised.value.reason_code == "COOLDOWN_TOO_LONG"
    assert CALLS["search_web"] == 0
    assert_nothing_held(tenant)


def test_shadow_mode_records_caps_without_enforcing_them(tenant: Tenant, spans: Any, metric_reader: Any) -> None:
    with_policy(tenant, {"tool_denylist": ["search_web"], "max_tokens": 100})
    before = counter(metric_reader, "cycles.shadow.denials", **{"cycles.reason_code": "TOOL_NOT_ALLOWED"})
    with ScriptedModel(tool_rounds=1) as model:
        make_agent(model, [callback_for(tenant, shadow=True)], tools=[search_web]).run("Research budgets")
        assert [r.max_output_tokens for r in model.requests] == [None, None]
    assert CALLS["search_web"] == 1
    tool = [s for s in governed(spans) if s.attributes["cycles.action.name"] == "search_web"]
    assert [(s.attributes["cycles.decision"], s.attributes["cycles.reason_code"]) for s in tool] == [
        ("DENY", "TOOL_NOT_ALLOWED")
    ]
    assert all(s.attributes["cycles.shadow"] is True for s in governed(spans))
    assert counter(metric_reader, "cycles.shadow.denials", **{"cycles.reason_code": "TOOL_NOT_ALLOWED"}) - before == 1
    assert tenant.spent() == ORACLE.spent(governed(spans))
    assert_nothing_held(tenant)


def test_a_denial_still_wins_over_caps(tenant: Tenant) -> None:
    with_policy(tenant, {"max_tokens": 100}, budget=5_000)
    with ScriptedModel(tool_rounds=1) as model:
        with pytest.raises(BudgetExceeded):
            make_agent(model, [callback_for(tenant)], tools=[search_web]).run("Research budgets")
        assert model.request_count == 0
    assert_nothing_held(tenant)


def test_soft_landing_lands_while_the_floor_fits_then_denies(tenant: Tenant, spans: Any, metric_reader: Any) -> None:
    # Every call asks for 100,000 output tokens ($1 of gpt-4o) from a $0.01 budget, so every call is denied at its
    # estimate; the first lands on what is left, the tool call costs $0.008, and then not even 256 tokens fit.
    tenant.budget("", 1_000_000)
    landed, too_small = (
        counter(metric_reader, "cycles.soft_landing", outcome=outcome) for outcome in ("landed", "too_small")
    )
    callback = callback_for(tenant, soft_landing=True, output_allowance=100_000, tool_estimate=800_000)
    with ScriptedModel(tool_rounds=1) as model:
        with pytest.raises(BudgetExceeded) as raised:
            make_agent(model, [callback], tools=[search_web]).run("Research budgets")
        bounds = [r.max_output_tokens for r in model.requests]
    assert raised.value.action_kind == "llm.completion"
    llm = [s for s in governed(spans) if s.attributes.get("cycles.soft_landing")]
    assert len(llm) == 1 and bounds == [llm[0].attributes["cycles.clamp.max_tokens"]]
    assert counter(metric_reader, "cycles.soft_landing", outcome="landed") - landed == 1
    assert counter(metric_reader, "cycles.soft_landing", outcome="too_small") - too_small == 1
    assert CALLS["search_web"] == 1
    assert tenant.spent() == Oracle(tool_costs={"search_web": 800_000}).spent(governed(spans)) <= 1_000_000
    assert_nothing_held(tenant)
