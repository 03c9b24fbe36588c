"""Governed-agent telemetry for the Collector end-to-end tests: real governed AnyAgent runs, exported over OTLP.

`AgentProcess` runs `tests/collector/governed_run.py` in its own interpreter: a tinyagent agent guarded by
`CyclesBudgetCallback` (reserving at an embedded `LocalAuthority`, calling a `ScriptedModel`), exported with
`otel_cycles.configure_export` to the Collector over gRPC or OTLP/HTTP. `AgentProcess.run` sends it one burst of
runs and returns a `GovernedRun`: the trace ids and totals of the spans it exported, read from an in-memory copy of
those same spans, so the Collector's outputs are checked against what the product really sent.

Runs come in three kinds, like a real deployment's:
* ordinary: charged to `RESEARCH_SCOPE`, which has ample budget; `invoke_agent` → `call_llm` → `execute_tool` →
  `call_llm`, all allowed and committed.
* denied: charged to `CAPPED_SCOPE`, reset to `CAPPED_BUDGET` before each run, with a fixed LLM estimate that the
  budget covers once but not twice: the first LLM call and the tool call are allowed, the second LLM call is denied
  (`cycles.decision=DENY`, status ERROR) and the agent stops with `BudgetExceeded`. One scope for every denial, so
  the denial counters of one application grow from burst to burst, as a dashboard's increase() needs.
* tool error: an ordinary run whose tool raises; its span ends with status ERROR and its reservation is released.

`emit_policy_probe` is the one synthetic producer left, a unit check of the tail-sampling configuration; see there.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

from otel_cycles import DEFAULT_TOOL_ESTIMATE

__all__ = [
    "Protocol",
    "AGENT_NAME",
    "CAPPED_SCOPE",
    "GOVERNANCE_PREFIXES",
    "MARKER_SERVICE",
    "COMPLETION",
    "MICROCENTS_PER_USD",
    "PROMPT",
    "RESEARCH_SCOPE",
    "AgentProcess",
    "Budgets",
    "Burst",
    "GovernedRun",
    "emit_marker",
    "emit_policy_probe",
    "start_agent_process",
]

Protocol = Literal["grpc", "http/protobuf"]

MICROCENTS_PER_USD = 100_000_000
"""`USD_MICROCENTS` per US dollar (1 USD = 100 cents = 10^8 microcents)."""

PROMPT = "Summarise the Q3 budget report for ACME in three bullet points."
"""The user prompt of every run; AnyAgent records it in `gen_ai.input.messages`, the redaction tests look for it."""

COMPLETION = "1. Spend is up 12%. 2. Research is over budget. 3. Tooling costs fell."
"""The scripted model's final answer (serve it with `ScriptedModel(answer=COMPLETION)`); lands in `gen_ai.output`."""

SERVICE_NAME = "otel-cycles-e2e"
AGENT_NAME = "researcher"
MODEL_ID = "openai:gpt-4o"
TOOL_NAME = "web_search"
TENANT = "acme"
RESEARCH_SCOPE = f"tenant:{TENANT}/workflow:research/agent:{AGENT_NAME}"
CAPPED_SCOPE = f"tenant:{TENANT}/workflow:capped/agent:{AGENT_NAME}"
RESEARCH_BUDGET = 50 * MICROCENTS_PER_USD
CAPPED_LLM_ESTIMATE = 1_000_000
"""Fixed reservation per LLM call of a denied run ($0.01): independent of how requests are priced."""
_CAPPED_MARGIN = 10_000
"""$0.0001: less than any first LLM call costs here (the scripted usage of >100 input tokens alone costs more)."""
CAPPED_BUDGET = CAPPED_LLM_ESTIMATE + DEFAULT_TOOL_ESTIMATE + _CAPPED_MARGIN
"""Holds the first LLM call's estimate and the tool's, so the tool is allowed even while the first call's commit is
still in flight; once both calls are paid (the first costs more than the margin), a second LLM estimate no longer
fits, whether or not that commit has landed. So the shape of a denied run does not depend on settlement timing."""
GOVERNANCE_PREFIXES = ("cycles.", "gen_ai.usage.")
"""The attributes otel-cycles sets on a governed span (budget decision and ledger figures; tokens and cost)."""
MARKER_SERVICE = "otel-cycles-marker"
"""`service.name` of the marker traces `emit_policy_probe` sends to prove an absence; never product telemetry."""
RESULT_PREFIX = "RESULT "
"""Marks governed_run.py's result lines on stdout (libraries may print too)."""
_BURST_TIMEOUT_S = 90


@dataclass(frozen=True)
class Burst:
    """One command to governed_run.py: run `traces` agents (one trace each) and flush."""

    traces: int
    workflow: str
    prompt: str = PROMPT
    completion: str = COMPLETION
    llm_estimate: int | None = None
    """A fixed LLM reservation; None prices each request (the default)."""
    tool_fails: bool = False
    expect_denial: bool = False
    pipeline_down: bool = False
    """The Collector is down: exporting spans and metrics may fail (commits may not)."""


@dataclass
class GovernedRun:
    """What one burst of real governed runs exported, read from an in-memory copy of the exported spans."""

    service_name: str
    model: str
    """`gen_ai.request.model` of the `call_llm` spans (tinyagent records the model name without the provider)."""
    tools: tuple[str, ...]
    """`gen_ai.tool.name` of the tool calls."""
    spans_per_trace: int
    """Spans in each trace, the `invoke_agent` span included (every trace of a burst has the same shape)."""
    scope_path: str
    """`cycles.scope_path` of every governed span: the deepest budgeted scope (for a denial, the limiting one)."""
    trace_ids: list[str] = field(default_factory=list)
    """Hex trace ids, one per run."""
    cost_usd: float = 0.0
    """Sum of `gen_ai.usage.cost.amount` over all LLM and tool spans."""
    input_tokens: int = 0
    output_tokens: int = 0
    decisions: dict[str, int] = field(default_factory=dict)
    """Number of spans per `cycles.decision` value."""
    remaining: int = 0
    """`cycles.budget.remaining` of the burst's last allowed reservation: where it left the `cycles.budget.remaining`
    gauge (set on allowed reservations only; the balance a denial reports is on its span, not on the gauge)."""
    error_spans: int = 0
    """Spans with status ERROR."""
    prompts: int = 0
    """Spans whose `gen_ai.input.messages` contain the prompt."""
    completions: int = 0
    """Spans whose `gen_ai.output` is the scripted final answer."""
    governed: dict[str, dict[str, Any]] = field(default_factory=dict)
    """By hex span id, every governed LLM and tool span's `cycles.*` and `gen_ai.usage.*` attributes, as exported."""


@dataclass(frozen=True)
class Budgets:
    """Where the agents are charged: one tenant of a running `LocalAuthority`, and the model they call."""

    authority: Any
    """An `otel_cycles.authority.LocalAuthority`."""
    api_key: str
    model_url: str
    """`ScriptedModel.base_url`."""

    @classmethod
    def provision(cls, authority: Any, model_url: str) -> Budgets:
        """Create the tenant, its API key and both budgets (leaf scopes only, as a per-agent cap would be)."""
        authority.create_tenant(TENANT)
        api_key: str = authority.create_api_key(TENANT)
        authority.create_budget(RESEARCH_SCOPE, RESEARCH_BUDGET)
        authority.create_budget(CAPPED_SCOPE, CAPPED_BUDGET)
        return cls(authority, api_key, model_url)

    def reset_capped(self) -> None:
        """Give the capped scope its budget back (commits of earlier runs have all landed: each burst flushes)."""
        self.authority.fund(CAPPED_SCOPE, "RESET_SPENT", CAPPED_BUDGET)


class AgentProcess:
    """A running governed_run.py: one governed application exporting to one OTLP endpoint."""

    def __init__(self, process: subprocess.Popen[str], budgets: Budgets, log: Path) -> None:
        self._process = process
        self._budgets = budgets
        self._log = log
        self._lines: queue.Queue[str | None] = queue.Queue()
        assert process.stdout is not None
        threading.Thread(target=self._read, args=(process.stdout,), daemon=True).start()

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:
            if line.startswith(RESULT_PREFIX):
                self._lines.put(line[len(RESULT_PREFIX) :])
        self._lines.put(None)

    def run(
        self, *, denied: bool = False, n_traces: int = 1, tool_error: bool = False, pipeline_down: bool = False
    ) -> GovernedRun:
        """Run `n_traces` governed agents (one trace each), flush everything, and return what was exported.

        Args:
            denied: Charge the capped scope, so the second LLM call of the run is denied (one trace only: the scope
                is reset to its cap before the run).
            n_traces: Number of agent runs.
            tool_error: Make the tool raise (an ordinary failure, not a budget decision).
            pipeline_down: The Collector is down, so exporting spans and metrics may fail; commits still must not.
        """
        if denied:
            if n_traces != 1:
                raise ValueError("a denied burst is one run: the capped scope is reset before it")
            self._budgets.reset_capped()
            burst = Burst(
                1,
                "capped",
                llm_estimate=CAPPED_LLM_ESTIMATE,
                expect_denial=True,
                tool_fails=tool_error,
                pipeline_down=pipeline_down,
            )
        else:
            burst = Burst(n_traces, "research", tool_fails=tool_error, pipeline_down=pipeline_down)
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(asdict(burst)) + "\n")
        self._process.stdin.flush()
        try:
            line = self._lines.get(timeout=_BURST_TIMEOUT_S)
        except queue.Empty:
            raise AssertionError(f"no result after {_BURST_TIMEOUT_S} s for {burst}\n{self.log_tail()}") from None
        if line is None:
            raise AssertionError(f"governed_run.py exited ({self._process.poll()}) during {burst}\n{self.log_tail()}")
        result = json.loads(line)
        if "error" in result:
            raise AssertionError(f"{burst} failed in governed_run.py:\n{result['error']}\n{self.log_tail()}")
        data = result["run"]
        return GovernedRun(**{**data, "tools": tuple(data["tools"])})

    def log_tail(self, chars: int = 4000) -> str:
        return self._log.read_text(errors="replace")[-chars:] if self._log.exists() else ""

    def end_input(self) -> None:
        """EOF on stdin: the application shuts its export down (a final flush) and exits; `close` waits for that."""
        if self._process.stdin is not None and not self._process.stdin.closed:
            self._process.stdin.close()

    def close(self) -> None:
        """End the application and wait until it exited."""
        self.end_input()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=5)
            raise AssertionError(f"governed_run.py did not exit\n{self.log_tail()}") from None


@contextmanager
def start_agent_process(
    otlp_endpoint: str,
    protocol: Protocol,
    budgets: Budgets,
    log: Path,
    *,
    service_name: str = SERVICE_NAME,
    export_timeout_s: int | None = None,
) -> Iterator[AgentProcess]:
    """Start governed_run.py exporting to `otlp_endpoint`; it imports in the background, the first `run` waits.

    Args:
        otlp_endpoint: OTLP base URL, e.g. `http://127.0.0.1:4317` for gRPC or `http://127.0.0.1:4318` for HTTP.
        protocol: `grpc` or `http/protobuf`, as in `OTEL_EXPORTER_OTLP_PROTOCOL`.
        budgets: The tenant and model the agents use.
        log: File for the process's stderr.
        service_name: The application's `service.name` (`OTEL_SERVICE_NAME`).
        export_timeout_s: `OTEL_EXPORTER_OTLP_TIMEOUT`: how long one OTLP export may retry (SDK default 10 s); short
            when the Collector will be down, so each failed flush gives up quickly.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != "PYTEST_CURRENT_TEST"}
    env |= {"OTEL_SERVICE_NAME": service_name, "OPENAI_API_KEY": "sk-fake", "OPENAI_AGENTS_DISABLE_TRACING": "1"}
    if export_timeout_s is not None:
        env["OTEL_EXPORTER_OTLP_TIMEOUT"] = str(export_timeout_s)
    authority_url: str = budgets.authority.base_url
    args = [sys.executable, "-m", "tests.collector.governed_run", otlp_endpoint, protocol, authority_url]
    args += [budgets.api_key, TENANT, budgets.model_url]
    with log.open("w") as stderr:
        process = subprocess.Popen(
            args,
            cwd=Path(__file__).resolve().parents[2],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    agents = AgentProcess(process, budgets, log)
    try:
        yield agents
    finally:
        agents.close()


def emit_policy_probe(grpc_endpoint: str) -> tuple[str, str]:
    """SYNTHETIC, on purpose: a unit check of the tail-sampling rule `keep-budget-denials`, not product telemetry.

    Every real denial also sets status ERROR, so real runs cannot show that the `cycles.decision` policy keeps a trace
    by itself (the `keep-errors` policy would keep it anyway). This sends two otherwise identical two-span traces with
    status UNSET: one whose LLM span has `cycles.decision=DENY`, one with `ALLOW`. Nothing else (no cost, tokens or
    metrics), so the probe needs a Collector of its own but no totals.

    Returns:
        The hex trace ids (denied, allowed).
    """
    resource = Resource.create({"service.name": "otel-cycles-policy-probe"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(GrpcSpanExporter(endpoint=grpc_endpoint, insecure=True)))
    tracer = provider.get_tracer("any_agent")
    trace_ids = []
    try:
        for decision in ("DENY", "ALLOW"):
            with tracer.start_as_current_span(f"invoke_agent [{AGENT_NAME}]") as agent:
                trace_ids.append(format(agent.get_span_context().trace_id, "032x"))
                with tracer.start_as_current_span("call_llm gpt-4o", kind=SpanKind.CLIENT) as span:
                    span.set_attributes({"gen_ai.operation.name": "call_llm", "cycles.decision": decision})
    finally:
        provider.shutdown()
    return trace_ids[0], trace_ids[1]


def emit_marker(grpc_endpoint: str) -> str:
    """SYNTHETIC, on purpose: a marker that proves an absence. One span, status ERROR (so tail sampling keeps it),
    service `MARKER_SERVICE`, no GenAI or budget attributes (so no span-derived metric counts it).

    Sent after some traces, the marker showing up downstream proves that tail sampling has decided on those earlier
    traces (decisions fall due in arrival order), so one still absent was dropped, not delayed.

    Returns:
        The marker's hex trace id.
    """
    provider = TracerProvider(resource=Resource.create({"service.name": MARKER_SERVICE}))
    provider.add_span_processor(SimpleSpanProcessor(GrpcSpanExporter(endpoint=grpc_endpoint, insecure=True)))
    try:
        with provider.get_tracer("otel-cycles-tests").start_as_current_span("marker") as span:
            span.set_status(StatusCode.ERROR, "marker")
            return format(span.get_span_context().trace_id, "032x")
    finally:
        provider.shutdown()
