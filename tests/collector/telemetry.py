"""Synthetic governed-agent telemetry for the Collector end-to-end tests.

`emit_governed_run` sends what a governed AnyAgent run exports: `invoke_agent` / `call_llm` / `execute_tool` spans
from the `any_agent` scope, stamped with the `cycles.*` and `gen_ai.usage.cost.*` attributes, plus the SDK metrics
(`gen_ai.client.token.usage`, `cycles.cost.committed`, `cycles.reservation.decisions`, `cycles.reservation.duration`,
`cycles.budget.remaining`) with the names, units and attributes of `otel_cycles.metrics`. It is the one seam between
the tests and the telemetry producer: swap its body for a real governed run and the Collector tests stay unchanged.

Every call uses its own TracerProvider (never the global one). Metrics behave like those of one long-lived process:
one MeterProvider per (endpoint, protocol, service) for the whole test session, so counters keep growing across calls
and rates in Prometheus are non-zero, as they would be for a real agent that runs for a while.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Literal

from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

__all__ = ["MICROCENTS_PER_USD", "PROMPT", "COMPLETION", "GovernedRun", "emit_governed_run"]

Protocol = Literal["grpc", "http/protobuf"]

MICROCENTS_PER_USD = 100_000_000
"""`USD_MICROCENTS` per US dollar (1 USD = 100 cents = 10^8 microcents)."""

PROMPT = "Summarise the Q3 budget report for ACME in three bullet points."
"""User prompt placed in `gen_ai.input.messages`; the redaction tests look for it in the exported spans."""

COMPLETION = "1. Spend is up 12%. 2. Research is over budget. 3. Tooling costs fell."
"""Completion placed in `gen_ai.output` of every LLM span."""

_INPUT_PRICE = 2.5e-6  # USD per input token
_OUTPUT_PRICE = 10e-6  # USD per output token
_TOOL_COST = 0.001  # USD per tool call
_BUDGET = 50 * MICROCENTS_PER_USD  # starting balance of the leaf scope
_LLM_KIND = "llm.completion"
_TOOL_KIND = "tool.execution"


@dataclass
class GovernedRun:
    """What one `emit_governed_run` call sent, for assertions on what the Collector exported."""

    service_name: str
    model: str
    tools: tuple[str, ...]
    """`gen_ai.tool.name` of the tool calls."""
    spans_per_trace: int
    trace_ids: list[str] = field(default_factory=list)
    """Hex trace ids, one per trace."""
    cost_usd: float = 0.0
    """Sum of `gen_ai.usage.cost.amount` over all LLM and tool spans."""
    input_tokens: int = 0
    output_tokens: int = 0
    decisions: dict[str, int] = field(default_factory=dict)
    """Number of spans per `cycles.decision` value."""
    remaining: int = _BUDGET
    """`cycles.budget.remaining` after the last reservation."""


def emit_governed_run(
    otlp_endpoint: str,
    *,
    denied: bool,
    n_traces: int = 1,
    protocol: Protocol = "grpc",
    service_name: str = "otel-cycles-e2e",
    agent_name: str = "researcher",
    model: str = "gpt-4o-mini",
    scope_path: str = "tenant:acme/workflow:research/agent:researcher",
    denial_sets_error_status: bool = True,
    tool_error: bool = False,
    emit_metrics: bool = True,
) -> GovernedRun:
    """Send `n_traces` governed agent runs to an OTLP endpoint and flush.

    Each trace is `invoke_agent` → `call_llm` → `execute_tool web_search` → `call_llm`. With `denied`, the second LLM
    call is refused (`cycles.decision=DENY`, `cycles.reason_code=BUDGET_EXCEEDED`, status ERROR unless
    `denial_sets_error_status` is false, no usage) and the agent span ends in error. With `tool_error`, the tool
    span ends in error (an ordinary failure, not a budget decision).

    Args:
        otlp_endpoint: `host:port` for gRPC, or a base URL such as `http://127.0.0.1:4318` for OTLP/HTTP.
        denied: Whether the run hits a budget denial.
        n_traces: Number of agent runs (one trace each).
        protocol: `grpc` or `http/protobuf`, as in `OTEL_EXPORTER_OTLP_PROTOCOL`.
        service_name: The `service.name` resource attribute.
        agent_name: `gen_ai.agent.name` on every span.
        model: `gen_ai.request.model` of the LLM calls.
        scope_path: `cycles.scope_path` charged by every reservation.
        denial_sets_error_status: Set status ERROR on the denied span (the contract); false isolates the
            `cycles.decision` sampling policy from the error-status one.
        tool_error: End the tool span (and the agent span) in error.
        emit_metrics: Also export the SDK metrics for the calls.

    Returns:
        The trace ids and the totals that were sent.
    """
    # A fresh service.instance.id per call; a cached MeterProvider keeps the one it was created with, so each
    # provider is its own single writer, like one application process.
    resource = Resource.create({"service.name": service_name, "service.instance.id": str(uuid.uuid4())})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(_span_exporter(otlp_endpoint, protocol)))
    if emit_metrics:
        meter_provider, instruments = _session_metrics(otlp_endpoint, protocol, resource)
    else:
        meter_provider = MeterProvider(resource=resource)  # no reader: the measurements go nowhere
        instruments = _Instruments(meter_provider.get_meter("otel_cycles"))
    run = GovernedRun(service_name=service_name, model=model, tools=("web_search",), spans_per_trace=4)
    emitter = _RunEmitter(
        tracer_provider.get_tracer("any_agent"), instruments, run, agent_name=agent_name, scope_path=scope_path
    )
    try:
        for _ in range(n_traces):
            emitter.trace(
                model, denied=denied, denial_sets_error_status=denial_sets_error_status, tool_error=tool_error
            )
    finally:
        tracer_provider.force_flush()
        tracer_provider.shutdown()
        meter_provider.force_flush()
    return run


_providers: dict[tuple[str, str, str], tuple[MeterProvider, _Instruments]] = {}
_providers_lock = threading.Lock()  # guards _providers


def _session_metrics(endpoint: str, protocol: Protocol, resource: Resource) -> tuple[MeterProvider, _Instruments]:
    key = (endpoint, protocol, str(resource.attributes["service.name"]))
    with _providers_lock:
        if key not in _providers:
            # Exports only on force_flush; never shut down, so interpreter exit does not retry a stopped Collector.
            reader = PeriodicExportingMetricReader(_metric_exporter(endpoint, protocol), export_interval_millis=3.6e6)
            provider = MeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)
            _providers[key] = (provider, _Instruments(provider.get_meter("otel_cycles")))
        return _providers[key]


def _span_exporter(endpoint: str, protocol: Protocol) -> SpanExporter:
    if protocol == "grpc":
        return GrpcSpanExporter(endpoint=endpoint, insecure=True)
    return HttpSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")


def _metric_exporter(endpoint: str, protocol: Protocol) -> MetricExporter:
    if protocol == "grpc":
        return GrpcMetricExporter(endpoint=endpoint, insecure=True)
    return HttpMetricExporter(endpoint=f"{endpoint.rstrip('/')}/v1/metrics")


# Bucket boundaries as advised by otel_cycles.metrics (semconv token buckets; sub-millisecond reserve latency).
_TOKEN_BUCKETS = [float(4**i) for i in range(14)]
_DURATION_BUCKETS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]


class _Instruments:
    """The governance layer's instruments, declared as in `otel_cycles.metrics`."""

    def __init__(self, meter: Meter) -> None:
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS
        )
        self.cost_committed = meter.create_counter("cycles.cost.committed", unit="USD")
        self.decisions = meter.create_counter("cycles.reservation.decisions", unit="{reservation}")
        self.reserve_duration = meter.create_histogram(
            "cycles.reservation.duration", unit="s", explicit_bucket_boundaries_advisory=_DURATION_BUCKETS
        )
        self.budget_remaining = meter.create_gauge("cycles.budget.remaining", unit="USD_MICROCENTS")


class _RunEmitter:
    def __init__(
        self, tracer: Tracer, instruments: _Instruments, run: GovernedRun, *, agent_name: str, scope_path: str
    ) -> None:
        self._tracer = tracer
        self._metrics = instruments
        self._run = run
        self._agent = agent_name
        self._scope = scope_path
        self._reservations = 0

    def trace(self, model: str, *, denied: bool, denial_sets_error_status: bool, tool_error: bool) -> None:
        agent_attrs = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": self._agent}
        with self._tracer.start_as_current_span(
            f"invoke_agent [{self._agent}]", kind=SpanKind.INTERNAL, attributes=agent_attrs
        ) as agent:
            self._run.trace_ids.append(format(agent.get_span_context().trace_id, "032x"))
            self._llm(model, input_tokens=1200, output_tokens=300, first=True)
            self._tool("web_search", failed=tool_error)
            if denied:
                self._denied_llm(model, set_error=denial_sets_error_status)
                agent.set_status(Status(StatusCode.ERROR, "BudgetExceeded: BUDGET_EXCEEDED"))
            else:
                self._llm(model, input_tokens=1800, output_tokens=450, first=False)
                if tool_error:
                    agent.set_status(Status(StatusCode.ERROR, "tool web_search failed"))

    def _reserve(self, kind: str, decision: str, reason: str, estimate: int, actual: int) -> dict[str, str | int]:
        self._reservations += 1
        if decision != "DENY":
            self._run.remaining -= actual
        self._run.decisions[decision] = self._run.decisions.get(decision, 0) + 1
        self._metrics.reserve_duration.record(0.004, {"cycles.action.kind": kind, "cycles.decision": decision})
        self._metrics.decisions.add(
            1, {"cycles.decision": decision, "cycles.reason_code": reason, "cycles.action.kind": kind}
        )
        self._metrics.budget_remaining.set(
            self._run.remaining, {"cycles.scope_path": self._scope, "cycles.unit": "USD_MICROCENTS"}
        )
        attrs: dict[str, str | int] = {
            "cycles.reservation.id": f"rsv-{self._reservations:06d}",
            "cycles.decision": decision,
            "cycles.scope_path": self._scope,
            "cycles.unit": "USD_MICROCENTS",
            "cycles.estimate.amount": estimate,
            "cycles.actual.amount": actual,
            "cycles.budget.remaining": self._run.remaining,
            "gen_ai.agent.name": self._agent,
        }
        if reason:
            attrs["cycles.reason_code"] = reason
        return attrs

    def _cost_attrs(self, input_cost: float, output_cost: float) -> dict[str, str | float]:
        return {
            "gen_ai.usage.cost.amount": input_cost + output_cost,
            "gen_ai.usage.cost.currency": "USD",
            "gen_ai.usage.cost.source": "local",
            "gen_ai.usage.input_cost": input_cost,
            "gen_ai.usage.output_cost": output_cost,
        }

    def _llm(self, model: str, *, input_tokens: int, output_tokens: int, first: bool) -> None:
        input_cost, output_cost = input_tokens * _INPUT_PRICE, output_tokens * _OUTPUT_PRICE
        cost = input_cost + output_cost
        actual = round(cost * MICROCENTS_PER_USD)
        with self._tracer.start_as_current_span(f"call_llm {model}", kind=SpanKind.CLIENT) as span:
            span.set_attributes(
                {
                    "gen_ai.operation.name": "call_llm",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": model,
                    "gen_ai.usage.input_tokens": input_tokens,
                    "gen_ai.usage.output_tokens": output_tokens,
                    "gen_ai.output": COMPLETION,
                    **self._reserve(_LLM_KIND, "ALLOW", "", estimate=actual * 2, actual=actual),
                    **self._cost_attrs(input_cost, output_cost),
                }
            )
            if first:
                span.set_attribute("gen_ai.input.messages", json.dumps([{"role": "user", "content": PROMPT}]))
            time.sleep(0.001)
        self._run.cost_usd += cost
        self._run.input_tokens += input_tokens
        self._run.output_tokens += output_tokens
        common = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": model}
        self._metrics.token_usage.record(input_tokens, {**common, "gen_ai.token.type": "input"})
        self._metrics.token_usage.record(output_tokens, {**common, "gen_ai.token.type": "output"})
        self._metrics.cost_committed.add(
            cost,
            {
                "gen_ai.request.model": model,
                "cycles.action.kind": _LLM_KIND,
                "cycles.scope_path": self._scope,
                "gen_ai.usage.cost.source": "local",
            },
        )

    def _denied_llm(self, model: str, *, set_error: bool) -> None:
        with self._tracer.start_as_current_span(f"call_llm {model}", kind=SpanKind.CLIENT) as span:
            span.set_attributes(
                {
                    "gen_ai.operation.name": "call_llm",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": model,
                    **self._reserve(_LLM_KIND, "DENY", "BUDGET_EXCEEDED", estimate=3_000_000, actual=0),
                    **self._cost_attrs(0.0, 0.0),
                }
            )
            if set_error:
                span.set_status(Status(StatusCode.ERROR, "BudgetExceeded: BUDGET_EXCEEDED"))

    def _tool(self, tool: str, *, failed: bool) -> None:
        actual = round(_TOOL_COST * MICROCENTS_PER_USD)
        with self._tracer.start_as_current_span(f"execute_tool {tool}", kind=SpanKind.INTERNAL) as span:
            span.set_attributes(
                {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": tool,
                    "gen_ai.tool.args": json.dumps({"query": "ACME Q3 budget"}),
                    "gen_ai.output": "3 results",
                    **self._reserve(_TOOL_KIND, "ALLOW", "", estimate=actual, actual=actual),
                    **self._cost_attrs(_TOOL_COST, 0.0),
                }
            )
            if failed:
                span.set_status(Status(StatusCode.ERROR, "web_search: upstream timeout"))
        self._run.cost_usd += _TOOL_COST
        self._metrics.cost_committed.add(
            _TOOL_COST,
            {
                "gen_ai.request.model": "",
                "cycles.action.kind": _TOOL_KIND,
                "cycles.scope_path": self._scope,
                "gen_ai.usage.cost.source": "local",
            },
        )
