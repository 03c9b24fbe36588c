"""A governed AnyAgent application for the Collector end-to-end tests: real tinyagent runs exported over OTLP.

Usage: python -m tests.collector.governed_run OTLP_ENDPOINT PROTOCOL AUTHORITY_URL API_KEY TENANT MODEL_URL

One process is one application. AnyAgent binds the global tracer provider at import and `configure_export` sets the
global MeterProvider, so a process exports to one endpoint with one protocol, and its counters keep growing from one
burst of runs to the next, as a long-lived agent's do (rates and increases in Prometheus need that). It starts
nothing: the test owns the Cycles authority (tenant, API key, budgets), the scripted model and the Collector.

Protocol: one JSON `Burst` per line on stdin. For each, the agent runs, everything is flushed (spans, commits,
metrics), and one line `RESULT {"run": {...GovernedRun fields...}}` (or `RESULT {"error": "..."}`) goes to stdout. The
GovernedRun is computed from an in-memory copy of the very spans that were exported: an `InMemorySpanExporter` on the
same tracer provider as the OTLP exporter. EOF on stdin: shut down (final flush) and exit.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import traceback
from collections import Counter
from collections.abc import Sequence
from typing import Any

from any_agent import AgentConfig, AnyAgent
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from runcycles import CyclesClient, CyclesConfig

import otel_cycles
from tests.collector.telemetry import (
    AGENT_NAME,
    GOVERNANCE_PREFIXES,
    MODEL_ID,
    RESULT_PREFIX,
    TOOL_NAME,
    Burst,
    GovernedRun,
)

_tool_fails = threading.Event()


def web_search(query: str) -> str:
    """Search the web for `query` and return the top results.

    Args:
        query: What to search for.
    """
    if _tool_fails.is_set():
        raise RuntimeError("web_search: upstream timeout")
    return f"3 results for {query}: Q3 spend is up 12%, research is over budget, tooling costs fell."


assert web_search.__name__ == TOOL_NAME


class Application:
    """The governed application: OTLP export configured once, agents built per burst."""

    def __init__(self, endpoint: str, protocol: str, authority_url: str, api_key: str, tenant: str, model_url: str):
        self.copy = InMemorySpanExporter()
        self.export = otel_cycles.configure_export(endpoint, protocol=protocol, metric_interval_ms=60_000)
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider) and provider is self.export.tracer_provider
        provider.add_span_processor(SimpleSpanProcessor(self.copy))
        self.client = CyclesClient(CyclesConfig(base_url=authority_url, api_key=api_key, journal_enabled=False))
        self.tenant = tenant
        self.model_url = model_url

    def burst(self, burst: Burst) -> GovernedRun:
        self.copy.clear()
        callback = otel_cycles.CyclesBudgetCallback(
            client=self.client,
            tenant=self.tenant,
            workflow=burst.workflow,
            agent=AGENT_NAME,
            llm_estimate=burst.llm_estimate,
        )
        agent = AnyAgent.create(
            "tinyagent",
            AgentConfig(
                model_id=MODEL_ID,
                name=AGENT_NAME,
                api_base=self.model_url,
                api_key="sk-fake",
                tools=[web_search],
                callbacks=[callback],
            ),
        )
        if burst.tool_fails:
            _tool_fails.set()
        try:
            for _ in range(burst.traces):
                try:
                    agent.run(burst.prompt)
                except otel_cycles.BudgetExceeded:
                    if not burst.expect_denial:
                        raise
                else:
                    if burst.expect_denial:
                        raise AssertionError("the run finished, but its budget should have denied a call")
        finally:
            _tool_fails.clear()
            # Commits first: the ledger must be settled whatever happens to the trace pipeline.
            if not self.export.cycles_processor.force_flush():
                raise AssertionError("flushing commits timed out")
            if not self.export.force_flush() and not burst.pipeline_down:
                raise AssertionError("flushing spans, commits or metrics timed out")
        return summarise(self.copy.get_finished_spans(), prompt=burst.prompt, completion=burst.completion)

    def shutdown(self) -> None:
        self.export.shutdown()


def summarise(spans: Sequence[ReadableSpan], *, prompt: str, completion: str) -> GovernedRun:
    """What these exported spans carry, as the totals the Collector's outputs are checked against."""
    by_trace: dict[int, list[ReadableSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        assert span.context is not None
        by_trace.setdefault(span.context.trace_id, []).append(span)
    counts = {len(trace_spans) for trace_spans in by_trace.values()}
    if len(counts) != 1:
        raise AssertionError(f"traces of one burst differ in shape: {sorted(counts)} spans")

    def attrs(span: ReadableSpan) -> dict[str, Any]:
        return dict(span.attributes or {})

    def operation(span: ReadableSpan) -> Any:
        return attrs(span).get("gen_ai.operation.name")

    leaves = [s for s in spans if operation(s) in ("call_llm", "execute_tool")]
    governed = sorted((s for s in leaves if "cycles.decision" in attrs(s)), key=lambda s: s.start_time or 0)
    # The cycles.budget.remaining gauge is set on allowed reservations only (a denial's figure comes from a balance
    # query), so `remaining` is that of the last allowed one, in reservation (= span start) order.
    allowed = [attrs(s) for s in governed if attrs(s)["cycles.decision"] != "DENY"]
    models = {attrs(s).get("gen_ai.request.model") for s in leaves if operation(s) == "call_llm"}
    scopes = {attrs(s).get("cycles.scope_path") for s in governed}
    services = {str(s.resource.attributes.get("service.name")) for s in spans}
    if len(models) != 1 or len(scopes) != 1 or len(services) != 1 or len(governed) != len(leaves):
        raise AssertionError(f"expected one model, scope and service, all calls governed: {models} {scopes} {services}")
    return GovernedRun(
        service_name=services.pop(),
        model=str(models.pop()),
        tools=tuple(sorted({str(attrs(s)["gen_ai.tool.name"]) for s in leaves if operation(s) == "execute_tool"})),
        spans_per_trace=counts.pop(),
        scope_path=str(scopes.pop()),
        trace_ids=[format(trace_id, "032x") for trace_id in by_trace],
        cost_usd=sum(float(attrs(s).get("gen_ai.usage.cost.amount", 0.0)) for s in leaves),
        input_tokens=sum(int(attrs(s).get("gen_ai.usage.input_tokens", 0)) for s in leaves),
        output_tokens=sum(int(attrs(s).get("gen_ai.usage.output_tokens", 0)) for s in leaves),
        decisions=dict(Counter(str(attrs(s)["cycles.decision"]) for s in governed)),
        remaining=int(allowed[-1]["cycles.budget.remaining"]),
        error_spans=sum(1 for s in spans if s.status.status_code is StatusCode.ERROR),
        prompts=sum(1 for s in spans if prompt in str(attrs(s).get("gen_ai.input.messages", ""))),
        completions=sum(1 for s in spans if attrs(s).get("gen_ai.output") == completion),
        governed={
            format(s.context.span_id, "016x"): {k: v for k, v in attrs(s).items() if k.startswith(GOVERNANCE_PREFIXES)}
            for s in governed
            if s.context is not None
        },
    )


def main(argv: Sequence[str]) -> None:
    app = Application(*argv)
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                result: dict[str, Any] = {"run": dataclasses.asdict(app.burst(Burst(**json.loads(line))))}
            except Exception:
                result = {"error": traceback.format_exc()}
            print(RESULT_PREFIX + json.dumps(result), flush=True)
    finally:
        app.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
