"""The authority is down or restarts: fail-closed by default, fail-open on request, and every commit lands once."""

from __future__ import annotations

from collections import Counter

import pytest

from otel_cycles import CyclesBudgetCallback
from otel_cycles.errors import AuthorityUnavailable
from otel_cycles.testing import ScriptedModel
from tests.core.agents import answer_naming_a_tool, hand_run, make_agent
from tests.reliability.conftest import Stack
from tests.reliability.fault_proxy import FaultProxy
from tests.reliability.helpers import expected_spend, governed, metric_sum


def test_fail_closed_names_the_authority_and_never_calls_the_model(stack: Stack, model: ScriptedModel) -> None:
    stack.budget("", 100_000_000)
    callback = CyclesBudgetCallback(client=stack.client(), tenant=stack.tenant)
    stack.stop()
    with pytest.raises(AuthorityUnavailable) as raised:
        make_agent(model, [callback]).run("Research budget governance")
    assert stack.base_url in str(raised.value)
    assert "fail-closed" in str(raised.value)
    assert model.request_count == 0


def test_fail_open_proceeds_marks_the_span_and_records_the_spend_as_events_later(
    stack: Stack, model: ScriptedModel, spans, metric_reader
) -> None:
    stack.budget("", 100_000_000)
    before = metric_sum(metric_reader, "cycles.fail_open")
    callback = CyclesBudgetCallback(client=stack.client(), tenant=stack.tenant, fail_open=True, settle_timeout_s=0)
    stack.stop()
    make_agent(model, [callback]).run("Research budget governance")
    assert model.request_count == 3
    calls = governed(spans)
    assert len(calls) == 5 and all(s.attributes["cycles.fail_open"] is True for s in calls)
    assert all(s.attributes["cycles.reason_code"] == "AUTHORITY_UNAVAILABLE" for s in calls)
    assert metric_sum(metric_reader, "cycles.fail_open") - before == 5
    expected = expected_spend(spans)
    assert expected > 0

    stack.start()
    assert stack.wait_for(lambda: stack.spent() == expected), (stack.spent(), expected)
    assert callback._settlement.flush(30)  # every delivery finished: nothing can land twice after this
    assert stack.spent() == expected
    assert stack.active() == []


def test_commits_pending_across_a_restart_land_exactly_once(stack: Stack, model: ScriptedModel, spans) -> None:
    """The authority dies inside a tool call: the tool's own commit, the LLM commits queued behind it and the
    fail-open calls after it all land once the authority is back, each exactly once."""
    stack.budget("", 100_000_000)

    def search_web(query: str) -> str:
        """Search the web.

        Args:
            query: What to search for.
        """
        if stack.authority is not None:
            stack.stop()
        return f"results for {query}"

    # No lookahead: whether the next LLM call's lookahead was sent before the tool stopped the authority is a race,
    # and an adopted one would not fail open.
    callback = CyclesBudgetCallback(
        client=stack.client(), tenant=stack.tenant, fail_open=True, settle_timeout_s=0, lookahead=False
    )
    make_agent(model, [callback], tools=[search_web]).run("Research budget governance")
    # The first LLM call and the tool that stopped the authority were reserved; the next LLM call, the second tool
    # call and the final LLM call failed open.
    calls = governed(spans)
    assert [s.attributes.get("cycles.fail_open", False) for s in calls] == [False, False, True, True, True]
    assert all(s.attributes["cycles.reason_code"] == "AUTHORITY_UNAVAILABLE" for s in calls[2:])
    assert all("cycles.reservation.id" in s.attributes for s in calls[:2])
    expected = expected_spend(spans)
    stack.start()
    assert stack.wait_for(lambda: stack.spent() == expected), (stack.spent(), expected)
    assert callback._settlement.flush(30)  # every delivery finished: nothing can land twice after this
    assert stack.spent() == expected
    assert stack.active() == []


def test_ambiguous_commits_are_retried_with_the_same_key_and_counted_once(
    stack: Stack, proxy: FaultProxy, model: ScriptedModel, spans
) -> None:
    """Each commit is applied by the authority but its answer is lost (connection dropped, then a 503): the client
    retries with the same idempotency key and the authority replays, so the spend is counted once."""
    stack.budget("", 100_000_000)
    proxy.add(path="/commit", method="POST", after="drop", first_per_path=True)
    second = proxy.add(path="/commit", method="POST", status=503, body={"error": "INTERNAL_ERROR", "message": "x"})
    second.first_per_path = True
    callback = CyclesBudgetCallback(client=stack.client(proxy.base_url), tenant=stack.tenant, settle_timeout_s=30)
    make_agent(model, [callback]).run("Research budget governance")
    expected = expected_spend(spans)

    def retried_to_success() -> bool:
        per_reservation = Counter(e.path for e in proxy.requests("/commit", "POST"))
        return len(per_reservation) == 5 and all(n == 3 for n in per_reservation.values())

    assert stack.wait_for(retried_to_success)  # dropped (applied), 503, then the replayed success
    assert stack.wait_for(lambda: stack.spent() == expected)
    commits = proxy.requests("/commit", "POST")
    per_reservation = Counter(e.path for e in commits)
    for path in per_reservation:
        assert len({e.idempotency_key for e in commits if e.path == path}) == 1  # same key on every attempt
    assert callback._settlement.flush(30)  # every delivery finished: nothing can land twice after this
    assert stack.spent() == expected
    assert stack.active() == []


def test_lookaheads_an_answer_cannot_send_are_tried_once_and_left_to_their_calls(stack: Stack) -> None:
    """The authority goes away between a call's reservation and its answer: the first lookahead's failed send opens
    the breaker, so the answer's other lookaheads are not tried (no connection attempt each on the agent's thread),
    and the calls that come later reserve for themselves (or, known down, proceed fail-open)."""
    stack.budget("", 10_000_000_000)
    callback = CyclesBudgetCallback(
        client=stack.client(), tenant=stack.tenant, llm_estimate=1_000_000, tool_estimate=1_000, fail_open=True
    )
    context, invoke = hand_run(callback)
    failures: list[int] = []

    def authority_gone() -> None:
        stack.stop()
        failures.append(callback._breaker._failures)

    llm = answer_naming_a_tool(callback, context, before_answer=authority_gone, end=False)
    assert llm.attributes["cycles.decision"] == "ALLOW"
    run = context.shared[callback._state_key]
    [tool_lookahead] = run.tool_lookaheads
    assert tool_lookahead.sent_at == 0 and run.lookahead is not None and run.lookahead.sent_at == 0
    assert callback._breaker._failures == failures[0] + 1 and callback._breaker.is_open()  # one send tried, not two
    stack.start()
    llm.end()
    invoke.end()
    callback.after_agent_invocation(context, "prompt")  # the unsent lookaheads are dropped, never sent
    assert stack.wait_for(lambda: stack.active() == [])
