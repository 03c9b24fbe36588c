"""One test per README promise that had none: configuration, estimates, tool costs, clients, modes, scopes, the
lookahead's outcomes, the end-of-run wait, metrics, the authority CLI, the demo options and the journal.

Real parts throughout: the embedded authority over loopback HTTP with the real runcycles client, real tinyagent agents
against the scripted model, or the callback's hooks driven as AnyAgent drives them where an order must be forced.
Expected amounts come from `tests.oracle` (genai-prices called here, tool costs configured here).
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import genai_prices
import httpx
import pytest
from any_agent.callbacks import Context
from any_agent.tracing.agent_trace import AgentTrace
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from runcycles import AsyncCyclesClient, CyclesClient, CyclesConfig

import otel_cycles
from otel_cycles import BudgetExceeded, CyclesBudgetCallback, CyclesSpanProcessor, ReservationRejected
from otel_cycles import metrics as metrics_module
from otel_cycles._request_size import size_request
from otel_cycles._settlement import Settlement
from otel_cycles.authority import LocalAuthority
from otel_cycles.testing import ScriptedModel
from tests.conftest import Tenant
from tests.core.agents import make_agent, search_web
from tests.oracle import DEFAULT_TOOL_COST, Oracle, llm_price
from tests.reliability.fault_proxy import FaultProxy, free_port
from tests.reliability.helpers import count_journal_writes, metric_sum

ORACLE = Oracle(tool_costs={"search_web": DEFAULT_TOOL_COST})
RESERVE = "/v1/reservations$"


def governed(spans: Any) -> list[Any]:
    return [s for s in spans.get_finished_spans() if s.attributes.get("cycles.action.kind")]


def wait_until(condition: Callable[[], bool], timeout: float = 15) -> None:
    """Poll until `condition` holds; fail after `timeout` seconds (a bound, not a synchronisation delay)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def lookahead_outcomes(reader: Any) -> Counter[str]:
    counts: Counter[str] = Counter()
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "cycles.lookahead":
                    for point in metric.data.data_points:
                        counts[str(point.attributes["outcome"])] += int(point.value)
    return counts


class HandRun:
    """One agent run whose hooks the test calls in the order AnyAgent would (to force an order of events)."""

    def __init__(self, callback: CyclesBudgetCallback) -> None:
        self.callback = callback
        self.tracer = trace.get_tracer("any_agent")
        self.invoke = self.tracer.start_span("invoke_agent [t]", attributes={"gen_ai.request.model": "openai:gpt-4o"})
        self.context = Context(current_span=self.invoke, trace=AgentTrace(), tracer=self.tracer, shared={})
        callback.before_agent_invocation(self.context, "prompt")

    def start_llm(self, *args: Any, **kwargs: Any) -> Any:
        span = self.tracer.start_span("call_llm gpt-4o", attributes={"gen_ai.request.model": "gpt-4o"})
        self.context.current_span = span
        self.callback.before_llm_call(self.context, *args, **kwargs)
        return span

    def finish_llm(self, span: Any, *, asks_for_tools: bool, end: bool = True, names_tools: bool = True) -> None:
        """`names_tools=False`: the answer asks for tools in a form whose names AnyAgent did not record, so only the
        next LLM call is reserved ahead (no tool lookaheads)."""
        tool_call = '[{"tool.name": "search"}]' if names_tools else '[{"name": "search"}]'
        span.set_attributes(
            {
                "gen_ai.usage.input_tokens": 100,
                "gen_ai.usage.output_tokens": 10,
                "gen_ai.output.type": "json" if asks_for_tools else "text",
                "gen_ai.output": tool_call if asks_for_tools else "done",
            }
        )
        self.context.current_span = span
        self.callback.after_llm_call(self.context)
        if end:
            span.end()

    @property
    def state(self) -> Any:
        return self.context.shared[self.callback._state_key]

    def end(self) -> None:
        self.invoke.end()
        self.callback.after_agent_invocation(self.context, "prompt")


# -- configuration --------------------------------------------------------------------------------------------------

GOVERNANCE_VARIABLES: list[tuple[str, str, Callable[[CyclesBudgetCallback], Any], str, Any, Any, str, Any, Any]] = [
    # (variable, argument, read, env value, read from env, argument value, malformed env value, default, bad argument)
    ("CYCLES_FAIL_OPEN", "fail_open", lambda c: c.fail_open, "true", True, False, "maybe", False, None),
    ("CYCLES_RESERVATION_TTL_MS", "ttl_ms", lambda c: c.ttl_ms, "5000", 5000, 7000, "-3", 60_000, 0),
    ("CYCLES_OVERAGE_POLICY", "overage_policy", lambda c: c.overage_policy, "reject", "REJECT",
     "ALLOW_WITH_OVERDRAFT", "sometimes", "ALLOW_IF_AVAILABLE", "sometimes"),
    ("CYCLES_LLM_OUTPUT_ALLOWANCE", "output_allowance", lambda c: c.estimates.output_allowance, "256", 256, 512,
     "lots", 1024, 0),
    ("CYCLES_ESTIMATE_BUFFER", "estimate_buffer", lambda c: c.estimates.buffer, "0.5", Decimal("0.5"), 0.1, "x",
     Decimal("0.2"), 11),
    ("CYCLES_UNKNOWN_MODEL_ESTIMATE", "unknown_model_estimate", lambda c: c.estimates.unknown_model_estimate, "5000",
     5000, 7000, "-1", 2_000_000, -5),
    ("CYCLES_SETTLE_TIMEOUT_S", "settle_timeout_s", lambda c: c.settle_timeout_s, "0", 0.0, 3.0, "soon", 10.0, None),
    ("CYCLES_LOOKAHEAD", "lookahead", lambda c: c.lookahead, "false", False, True, "perhaps", True, None),
]  # fmt: skip


@pytest.mark.parametrize("row", GOVERNANCE_VARIABLES, ids=[row[0] for row in GOVERNANCE_VARIABLES])
def test_governance_variables_precedence_and_malformed_values(
    row: tuple[Any, ...], tenant: Tenant, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Argument > environment variable > default; a malformed variable is logged and the default used; a malformed
    argument (where the argument is validated) raises ValueError. (`CYCLES_CAPTURE_CONTENT`: test_security.py.)"""
    variable, argument, read, env_value, from_env, arg_value, bad_env, default, bad_arg = row
    make = lambda **kwargs: CyclesBudgetCallback(client=tenant.client, tenant=tenant.id, **kwargs)  # noqa: E731
    monkeypatch.delenv(variable, raising=False)
    assert read(make()) == default
    monkeypatch.setenv(variable, env_value)
    assert read(make()) == from_env
    expected_arg = Decimal(str(arg_value)) if argument == "estimate_buffer" else arg_value
    assert read(make(**{argument: arg_value})) == expected_arg  # the argument wins over the variable
    monkeypatch.setenv(variable, bad_env)
    with caplog.at_level(logging.WARNING, logger="otel_cycles.environment_variables"):
        assert read(make()) == default
    assert any(variable in r.getMessage() and bad_env in r.getMessage() for r in caplog.records)
    if bad_arg is not None:
        with pytest.raises(ValueError, match=argument):
            make(**{argument: bad_arg})


CONNECTION = {
    "CYCLES_TENANT": "acme", "CYCLES_WORKSPACE": "prod", "CYCLES_APP": "chat", "CYCLES_WORKFLOW": "support",
    "CYCLES_AGENT": "bot", "CYCLES_TOOLSET": "web", "CYCLES_CONNECT_TIMEOUT": "1.5", "CYCLES_READ_TIMEOUT": "4.5",
    "CYCLES_RETRY_ENABLED": "false", "CYCLES_RETRY_MAX_ATTEMPTS": "7", "CYCLES_RETRY_INITIAL_DELAY": "0.25",
    "CYCLES_RETRY_MULTIPLIER": "3.0", "CYCLES_RETRY_MAX_DELAY": "9.0", "CYCLES_RETRY_FLUSH_TIMEOUT": "2.0",
    "CYCLES_JOURNAL_ENABLED": "false",
}  # fmt: skip


def test_connection_variables_and_subject_fallback(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With no `client=`, the callback builds one from every connection variable; subject levels the callback is not
    given fall back to the `CYCLES_*` ones; an argument wins. A malformed connection number is runcycles' to parse:
    it raises ValueError (README: the log-and-default rule is for the governance variables)."""
    monkeypatch.setenv("CYCLES_BASE_URL", tenant.authority.base_url)
    monkeypatch.setenv("CYCLES_API_KEY", tenant.client._config.api_key)
    monkeypatch.setenv("CYCLES_JOURNAL_DIR", str(tmp_path))
    for name, value in CONNECTION.items():
        monkeypatch.setenv(name, value)
    callback = CyclesBudgetCallback(agent="override")
    config = callback.client._config
    assert (config.base_url, config.journal_dir) == (tenant.authority.base_url, str(tmp_path))
    assert (config.connect_timeout, config.read_timeout, config.retry_enabled) == (1.5, 4.5, False)
    assert (config.retry_max_attempts, config.retry_initial_delay, config.retry_multiplier) == (7, 0.25, 3.0)
    assert (config.retry_max_delay, config.retry_flush_timeout, config.journal_enabled) == (9.0, 2.0, False)
    assert callback._subject == {"tenant": "acme", "workspace": "prod", "app": "chat", "workflow": "support",
                                 "agent": "override", "toolset": "web"}  # fmt: skip
    monkeypatch.setenv("CYCLES_CONNECT_TIMEOUT", "soon")
    with pytest.raises(ValueError):
        CyclesBudgetCallback()


# -- estimates and tool costs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_tokens", [None, 64])
def test_priced_estimate_is_input_plus_output_allowance_plus_buffer(tenant: Tenant, max_tokens: int | None) -> None:
    """The default LLM estimate: the request's input tokens (characters / 4) and its `max_tokens`, or else the output
    allowance, at the model's price, plus the buffer, rounded up."""
    tenant.budget("", 100_000_000)
    callback = CyclesBudgetCallback(
        client=tenant.client, tenant=tenant.id, output_allowance=500, estimate_buffer=0.5, lookahead=False
    )
    messages = [{"role": "user", "content": "x" * 4000}]
    kwargs = {} if max_tokens is None else {"max_tokens": max_tokens}
    input_tokens = size_request((messages,), kwargs).input_tokens
    assert input_tokens >= 1000  # the content alone is 1000 tokens at 4 characters each
    rates = genai_prices.calc_price(genai_prices.Usage(input_tokens=1, output_tokens=1), "gpt-4o", provider_id="openai")
    input_rate, output_rate = rates.model_price.input_mtok, rates.model_price.output_mtok
    assert isinstance(input_rate, Decimal) and isinstance(output_rate, Decimal)
    assert (input_rate, output_rate) == (Decimal("2.5"), Decimal(10))  # gpt-4o, $/MTok
    output_tokens = max_tokens or 500
    usd = (input_tokens * input_rate + output_tokens * output_rate) / Decimal(10**6) * Decimal("1.5")
    expected = math.ceil(usd * 10**8)

    run = HandRun(callback)
    span = run.start_llm(messages, **kwargs)
    assert span.attributes["cycles.estimate.amount"] == expected
    assert span.attributes["cycles.estimate.source"] == "priced"
    (reservation,) = tenant.authority.reservations(tenant.id)
    assert reservation["reserved"]["amount"] == expected
    run.finish_llm(span, asks_for_tools=False)
    run.end()
    assert tenant.spent() == llm_price(100, 10)


def test_tool_estimates_and_costs_as_a_map_and_a_callable(tenant: Tenant, spans) -> None:
    tenant.budget("", 100_000_000)

    def fetch_page(url: str) -> str:
        """Fetch a web page.

        Args:
            url: The page address.
        """
        return f"text of {url}"

    costs = {"search_web": 111_000, "fetch_page": 222_000}
    callback = CyclesBudgetCallback(
        client=tenant.client,
        tenant=tenant.id,
        tool_estimate={"search_web": 300_000},  # fetch_page is not in the map: the default
        tool_cost=lambda name: costs[name],
    )
    with ScriptedModel(tool_rounds=1, parallel=2, tools=["search_web", "fetch_page"]) as model:
        make_agent(model, [callback], tools=[search_web, fetch_page]).run("Research budget governance")
    tools = {s.attributes["gen_ai.tool.name"]: s for s in governed(spans) if s.name.startswith("execute_tool")}
    assert set(tools) == {"search_web", "fetch_page"}
    assert (tools["search_web"].attributes["cycles.estimate.amount"], tools["search_web"].attributes[
        "cycles.estimate.source"]) == (300_000, "tool_map")  # fmt: skip
    assert (tools["fetch_page"].attributes["cycles.estimate.amount"], tools["fetch_page"].attributes[
        "cycles.estimate.source"]) == (DEFAULT_TOOL_COST, "fixed")  # fmt: skip
    expected = Oracle(tool_costs=costs).spent(governed(spans))
    assert expected == llm_price(101, 21) + llm_price(102, 22) + 111_000 + 222_000
    assert tenant.spent() == expected
    assert tenant.active() == []


def test_an_async_cycles_client_is_accepted(tenant: Tenant, model: ScriptedModel, spans) -> None:
    tenant.budget("", 100_000_000)
    client = AsyncCyclesClient(tenant.client._config)
    callback = CyclesBudgetCallback(client=client, tenant=tenant.id)
    make_agent(model, [callback]).run("Research budget governance")
    assert (
        tenant.spent()
        == ORACLE.spent(governed(spans))
        == sum(llm_price(100 + n, 20 + n) for n in (1, 2, 3)) + 2 * DEFAULT_TOOL_COST
    )
    assert tenant.active() == []


# -- modes ----------------------------------------------------------------------------------------------------------


def _cycles_processors(provider: TracerProvider) -> list[CyclesSpanProcessor]:
    active = provider._active_span_processor
    return [p for p in active._span_processors if isinstance(p, CyclesSpanProcessor)]


def test_attach_is_idempotent() -> None:
    provider = TracerProvider()
    first = otel_cycles.attach(provider)
    assert otel_cycles.attach(provider) is first
    assert _cycles_processors(provider) == [first]
    by_hand = TracerProvider()
    mine = CyclesSpanProcessor()
    by_hand.add_span_processor(mine)
    assert otel_cycles.attach(by_hand) is mine  # one added by hand is found, not doubled
    assert _cycles_processors(by_hand) == [mine]


@pytest.mark.parametrize(
    ("variable", "argument", "exporter"),
    [
        (None, None, "opentelemetry.exporter.otlp.proto.http.trace_exporter"),
        ("grpc", None, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"),
        ("http/protobuf", None, "opentelemetry.exporter.otlp.proto.http.trace_exporter"),
        ("grpc", "http/protobuf", "opentelemetry.exporter.otlp.proto.http.trace_exporter"),
    ],
)
def test_otlp_protocol_variable_is_honoured(
    monkeypatch: pytest.MonkeyPatch, variable: str | None, argument: str | None, exporter: str
) -> None:
    if variable is None:
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    else:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", variable)
    setup = otel_cycles.configure_export(
        "http://127.0.0.1:4318", protocol=argument, tracer_provider=TracerProvider(), export_metrics=False
    )
    try:
        span_exporter = setup.span_processor._batch_processor._exporter
        span_exporter = getattr(span_exporter, "exporter", span_exporter)  # behind ExportSetup's delivery counter
        assert type(span_exporter).__module__ == exporter
    finally:
        setup.shutdown()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")
    with pytest.raises(ValueError, match="protocol"):
        otel_cycles.configure_export(tracer_provider=TracerProvider(), export_metrics=False)


# -- denials and scopes ---------------------------------------------------------------------------------------------


def test_reservation_rejected_when_no_budget_exists(tenant: Tenant, model: ScriptedModel) -> None:
    callback = CyclesBudgetCallback(client=tenant.client, tenant=tenant.id, agent="nobody")
    with pytest.raises(ReservationRejected) as raised:
        make_agent(model, [callback]).run("Research budget governance")
    assert raised.value.status == 404 and raised.value.reason_code == "NOT_FOUND"
    assert model.request_count == 0
    assert tenant.authority.reservations(tenant.id) == []


def test_budget_exceeded_carries_the_estimate(tenant: Tenant, model: ScriptedModel) -> None:
    tenant.budget("agent:poor", 500_000)
    callback = CyclesBudgetCallback(client=tenant.client, tenant=tenant.id, agent="poor", llm_estimate=777_000)
    with pytest.raises(BudgetExceeded) as raised:
        make_agent(model, [callback]).run("Research budget governance")
    error = raised.value
    assert (error.estimate, error.remaining, error.scope) == (777_000, 500_000, f"tenant:{tenant.id}/agent:poor")
    assert model.request_count == 0


def test_every_level_of_the_subject_is_charged(tenant: Tenant, model: ScriptedModel, spans) -> None:
    levels = ["workspace:prod", "app:chat", "workflow:support", "agent:bot", "toolset:web"]
    tenant.budget("", 100_000_000)
    for depth in range(1, len(levels) + 1):
        tenant.budget("/".join(levels[:depth]), 50_000_000)
    callback = CyclesBudgetCallback(
        client=tenant.client, tenant=tenant.id, workspace="prod", app="chat", workflow="support", agent="bot",
        toolset="web", dimensions={"team": "search"},
    )  # fmt: skip
    make_agent(model, [callback]).run("Research budget governance")
    expected = ORACLE.spent(governed(spans))
    assert expected == sum(llm_price(100 + n, 20 + n) for n in (1, 2, 3)) + 2 * DEFAULT_TOOL_COST
    for depth in range(len(levels) + 1):
        assert tenant.spent("/".join(levels[:depth])) == expected, levels[:depth]
    deepest = f"tenant:{tenant.id}/" + "/".join(levels)
    assert {s.attributes["cycles.scope_path"] for s in governed(spans)} == {deepest}
    reservations = tenant.authority.reservations(tenant.id)
    assert {json.dumps(r["subject"].get("dimensions"), sort_keys=True) for r in reservations} == {'{"team": "search"}'}


# -- the lookahead: sent with the answer, read by its call ------------------------------------------------------------


@pytest.fixture
def proxied(tenant: Tenant, tmp_path: Path) -> Iterator[tuple[FaultProxy, CyclesClient]]:
    with FaultProxy(tenant.authority.base_url) as proxy:
        config = CyclesConfig(
            base_url=proxy.base_url, api_key=tenant.client._config.api_key, journal_dir=str(tmp_path / "j")
        )
        yield proxy, CyclesClient(config)


def test_lookaheads_leave_with_the_answer_tools_first_before_its_commit(
    tenant: Tenant, proxied: Any, metric_reader
) -> None:
    proxy, client = proxied
    tenant.budget("", 10_000_000_000)
    before = lookahead_outcomes(metric_reader)
    callback = CyclesBudgetCallback(client=client, tenant=tenant.id, llm_estimate=1_000_000, tool_estimate=1_000)
    run = HandRun(callback)
    first = run.start_llm()
    run.finish_llm(first, asks_for_tools=True, end=False)
    [tool] = run.state.tool_lookaheads
    llm = run.state.lookahead
    # Both sent by the hook itself, the tool's first, and applied by the authority before anyone reads them. (The
    # proxy's threads may log them in either order: it says only that both went out, once each.)
    assert 0 < tool.sent_at <= llm.sent_at
    wait_until(lambda: {tool.key, llm.key} <= {str(r.get("idempotency_key")) for r in tenant.active()})
    reserves = proxy.requests(RESERVE, "POST")
    assert sorted(r.idempotency_key or "" for r in reserves[1:]) == sorted([tool.key, llm.key])
    first.end()  # the span's end queues the answer's commit: it goes out after them
    wait_until(lambda: len(proxy.requests("/commit", "POST")) == 1)
    assert proxy.requests("/commit", "POST")[0].at > reserves[-1].at
    run.end()  # neither was claimed: both are read and released
    assert lookahead_outcomes(metric_reader) - before == Counter({"unused": 2})
    assert tenant.active() == []
    assert tenant.spent() == llm_price(100, 10)


@pytest.mark.parametrize("late", [False, True])
def test_a_lookahead_held_on_the_wire_is_awaited_by_its_call_within_the_reserve_timeout(
    tenant: Tenant, proxied: Any, metric_reader, late: bool
) -> None:
    """A lookahead whose answer has not come when its call does is read by the call: adopted if the answer comes
    within the reserve timeout (here a dropped connection, retried with the same key), otherwise the call reserves
    for itself, and the request that never got an answer holds nothing."""
    proxy, client = proxied
    tenant.budget("", 10_000_000_000)
    before = lookahead_outcomes(metric_reader)
    timeout = 0.5 if late else 10.0
    callback = CyclesBudgetCallback(client=client, tenant=tenant.id, llm_estimate=1_000_000, reserve_timeout_s=timeout)
    run = HandRun(callback)
    first = run.start_llm()
    proxy.add(path=RESERVE, method="POST", hold=True, times=1)  # the next reserve is the lookahead
    run.finish_llm(first, asks_for_tools=True, names_tools=False)
    wait_until(lambda: len(proxy.requests(RESERVE, "POST")) == 2)  # the lookahead is on the wire, held
    if not late:

        def release_once_claimed() -> None:
            wait_until(lambda: _claiming(run))
            release(proxy)

        releaser = threading.Thread(target=release_once_claimed, daemon=True)
        releaser.start()
        second = run.start_llm()  # reads the held one: its connection drops, the same-key retry is answered
        releaser.join(timeout=10)
        assert second.attributes["cycles.lookahead"] is True
        outcomes = Counter({"adopted": 1})
        keys = [r.idempotency_key for r in proxy.requests(RESERVE, "POST")]
        assert keys[1] == keys[2]  # the retry carried the lookahead's own key
    else:
        second = run.start_llm()  # no answer within the reserve timeout: reserves for itself
        assert "cycles.lookahead" not in second.attributes and second.attributes["cycles.decision"] == "ALLOW"
        release(proxy)
        outcomes = Counter({"not_allowed": 1})
    run.finish_llm(second, asks_for_tools=False)
    run.end()
    assert lookahead_outcomes(metric_reader) - before == outcomes
    assert Counter(str(r["status"]) for r in tenant.authority.reservations(tenant.id)) == Counter({"COMMITTED": 2})
    assert tenant.spent() == 2 * llm_price(100, 10)
    assert tenant.active() == []


def release(proxy: FaultProxy) -> None:
    """Stop the faults and let the held requests go: their connections drop, and the client's same-key retry is
    answered by the authority."""
    proxy.clear()
    proxy.release_held()


def _claiming(run: HandRun) -> bool:
    """Whether the run's lookahead has been taken by a call (which is now waiting for its answer)."""
    return run.state.lookahead is None


# -- the end-of-run wait --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("settle_timeout_s", [0.0, 0.5])
def test_the_end_of_run_wait_is_bounded_and_can_be_off(
    tenant: Tenant, proxied: Any, model: ScriptedModel, spans, settle_timeout_s: float, caplog: pytest.LogCaptureFixture
) -> None:
    """Commits the authority never answers do not hold `run()`: with `settle_timeout_s=0` it does not wait at all,
    otherwise it waits at most that long, logs that settlements are pending, and they land once answered."""
    proxy, client = proxied
    tenant.budget("", 100_000_000)
    proxy.add(path="/commit", method="POST", hold=True)
    callback = CyclesBudgetCallback(client=client, tenant=tenant.id, settle_timeout_s=settle_timeout_s)
    with caplog.at_level(logging.WARNING, logger="otel_cycles.callback"):
        make_agent(model, [callback]).run("Research budget governance")
    assert tenant.spent() == 0  # run() returned with every commit still unanswered
    pending = [r for r in caplog.records if "still pending" in r.getMessage()]
    assert len(pending) == (0 if settle_timeout_s == 0 else 1)
    release(proxy)
    expected = ORACLE.spent(governed(spans))
    wait_until(lambda: tenant.spent() == expected, timeout=30)
    assert tenant.active() == []


def _reservations(client: CyclesClient, tenant: Tenant, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        response = client.create_reservation(
            {"idempotency_key": str(uuid.uuid4()), "subject": {"tenant": tenant.id},
             "action": {"kind": "tool.execution", "name": "t"}, "estimate": {"unit": "USD_MICROCENTS", "amount": 10}}
        )  # fmt: skip
        assert response.is_success and response.body is not None
        ids.append(response.body["reservation_id"])
    return ids


def _commit_of(amount: int) -> Callable[[], tuple[dict[str, Any], dict[str, Any]]]:
    body = {"idempotency_key": f"c-{uuid.uuid4()}", "actual": {"unit": "USD_MICROCENTS", "amount": amount}}
    return lambda: (body, {})


def test_the_end_of_a_run_sends_a_commit_the_worker_has_not_taken(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: a commit the worker has not taken yet is sent by the run's own thread while it waits. Here the worker
    never starts, so only the waiting thread can send it."""
    tenant.budget("", 100_000_000)
    monkeypatch.setattr(Settlement, "_ensure_worker", lambda self: None)
    settlement = Settlement(tenant.client)
    (rid,) = _reservations(tenant.client, tenant, 1)
    ticket = settlement.commit(rid, _commit_of(7))
    assert settlement.settle(ticket, 30)
    detail = tenant.reservation(rid)
    assert detail["status"] == "COMMITTED" and detail["committed"]["amount"] == 7


def test_a_waiting_run_never_sends_beside_the_worker(tenant: Tenant, proxied: Any) -> None:
    """README: the run's thread sends one request at a time with the worker, so commits still go out in order: while
    the worker's commit is held on the wire, the commit queued behind it is not sent by the waiting thread."""
    proxy, client = proxied
    tenant.budget("", 100_000_000)
    settlement = Settlement(client)
    first, second = _reservations(client, tenant, 2)
    proxy.add(path="/commit", method="POST", hold=True, times=1)
    settlement.commit(first, _commit_of(5))  # taken by the worker, held on the wire
    wait_until(lambda: len(proxy.requests("/commit", "POST")) == 1)
    ticket = settlement.commit(second, _commit_of(6))
    assert not settlement.settle(ticket, 0.3)  # the worker is sending: the waiting thread only waits
    assert len(proxy.requests("/commit", "POST")) == 1
    release(proxy)
    assert settlement.settle(ticket, 30)
    assert [first in r.path for r in proxy.requests("/commit", "POST")] == [True, False]
    wait_until(lambda: tenant.spent() == 11)  # the held commit lands once released (or by its retry)


# -- metrics --------------------------------------------------------------------------------------------------------


def test_settlement_errors_are_counted(tenant: Tenant, proxied: Any, metric_reader) -> None:
    """A full settlement queue is counted in `cycles.settlement.errors{error.type=queue_full}` by operation (an
    internal error in `on_end`: test_bad_span_input.py), and nothing is lost: the commit goes through the retry
    engine instead."""
    proxy, client = proxied
    tenant.budget("", 100_000_000)
    settlement = Settlement(client, max_queue=1)
    ids = _reservations(client, tenant, 3)
    proxy.add(path="/commit", method="POST", hold=True, times=1)
    match = {"error.type": "queue_full", "cycles.operation": "commit"}
    before = metric_sum(metric_reader, "cycles.settlement.errors", **match)
    settlement.commit(ids[0], _commit_of(7))  # taken by the worker, held on the wire
    wait_until(lambda: len(proxy.requests("/commit", "POST")) == 1)
    settlement.commit(ids[1], _commit_of(7))  # queued (the queue holds one)
    settlement.commit(ids[2], _commit_of(7))  # queue full: counted, handed to the retry engine
    assert metric_sum(metric_reader, "cycles.settlement.errors", **match) - before == 1
    release(proxy)
    assert settlement.close(30)
    wait_until(lambda: tenant.spent() == 21)


def test_metric_attribute_values_are_bounded() -> None:
    bounded = metrics_module._Bounded(limit=3)
    assert [bounded(v) for v in ("a", "b", "c", "d", "a", None, "e")] == [
        "a",
        "b",
        "c",
        "other",
        "a",
        "unknown",
        "other",
    ]
    assert metrics_module._MAX_DISTINCT == 200  # the process-wide limit of model and scope values


# -- the authority CLI, the demo and the journal --------------------------------------------------------------------


def _cli() -> str:
    return str(Path(sys.executable).with_name("otel-cycles"))


def test_authority_serve_prints_the_admin_key(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "CYCLES_ADMIN_API_KEY"}
    process = subprocess.Popen(
        [_cli(), "authority", "serve", "--db", str(tmp_path / "a.db"), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert line.startswith("admin key (X-Admin-API-Key): cyc_admin_"), line
        key = line.split(": ", 1)[1].strip()

        def answers() -> bool:
            try:
                return httpx.get(
                    f"http://127.0.0.1:{port}/v1/admin/tenants", headers={"X-Admin-API-Key": key}
                ).is_success
            except httpx.TransportError:
                return False

        wait_until(answers, timeout=60)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/admin/tenants").status_code == 401
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_demo_budget_and_keep_db(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CYCLES_", "OPENAI_", "OTEL_", "PYTEST_"))}
    done = subprocess.run([_cli(), "demo", "--json", "--budget", "0.01", "--keep-db"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    kept = tmp_path / "otel-cycles-demo.db"
    assert kept.exists()
    with LocalAuthority(str(kept)) as authority:
        allocated = {b["scope_path"]: b["allocated"]["amount"] for b in authority.balances("demo")}
        spent = {b["scope_path"]: b["spent"]["amount"] for b in authority.balances("demo")}
    # $0.01 for the agent; the workflow gets 2.5x and the tenant 5x.
    assert allocated == {
        "tenant:demo": 5_000_000,
        "tenant:demo/workflow:research": 2_500_000,
        "tenant:demo/workflow:research/agent:researcher": 1_000_000,
    }
    assert set(spent.values()) == {summary["committed"]}
    assert summary["stopped"] is True


def test_a_commit_that_lands_at_once_never_touches_the_journal(
    tenant: Tenant, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: the worker sends a commit at once and journals it only if it has not landed within 0.2 s."""
    written = count_journal_writes(monkeypatch)
    tenant.budget("", 100_000_000)
    make_agent(model, [CyclesBudgetCallback(client=tenant.client, tenant=tenant.id)]).run("Research budget governance")
    committed = {r["reservation_id"] for r in tenant.authority.reservations(tenant.id) if r["status"] == "COMMITTED"}
    assert len(committed) == 5
    assert not written
