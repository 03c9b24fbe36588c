"""End to end through the real Collector: build it from the manifest, validate every config, run the project's own
config (plus the file-export overlay) on loopback ports, run real governed AnyAgent agents that export over OTLP to
it, and check what it exported: spans in the file exporter's JSON, metrics through a real Prometheus scraping the
prometheus exporter, and every PromQL expression of the Grafana dashboard.

The agents (`tests/collector/governed_run.py`, one process per OTLP protocol) are tinyagent agents guarded by
`CyclesBudgetCallback` against an embedded Cycles authority, calling a scripted model; what each burst of runs
exported is read back from an in-memory copy of its spans (`GovernedRun`), so every expected total is real data.
Only `test_denial_policy_keeps_a_trace_without_error_status` sends synthetic spans, as a unit check of one rule.

The first session builds the Collector (minutes, cached outside the repository); later sessions take seconds.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from otel_cycles.authority import LocalAuthority
from otel_cycles.testing import ScriptedModel
from tests.collector.collector_harness import (
    COLLECTOR_DIR,
    CollectorProcess,
    PrometheusProcess,
    build_collector,
    prometheus_binary,
    run_collector,
    run_prometheus,
    span_attributes,
    wait_for,
)
from tests.collector.telemetry import (
    CAPPED_LLM_ESTIMATE,
    CAPPED_SCOPE,
    COMPLETION,
    MICROCENTS_PER_USD,
    PROMPT,
    RESEARCH_SCOPE,
    AgentProcess,
    Budgets,
    GovernedRun,
    Protocol,
    emit_marker,
    emit_policy_probe,
    start_agent_process,
)

# Covers the first, uncached Collector build in whichever test triggers it.
pytestmark = pytest.mark.timeout(50 * 60)

CONFIG = COLLECTOR_DIR / "config.yaml"
FILE_EXPORT = COLLECTOR_DIR / "file-export.yaml"
LOCAL_STACK = COLLECTOR_DIR / "local-stack.yaml"
DASHBOARD = COLLECTOR_DIR / "grafana" / "dashboards" / "agent-budgets.json"
DECISION_WAIT_S = 2
# Grafana's built-in variables, replaced by fixed windows that cover the whole test run.
GRAFANA_BUILTINS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "10m"}

# Attributes of governed spans, by outcome (otel_cycles.attributes): every reservation stamps RESERVED; a settled
# call adds SETTLED, a committed one also COMMITTED (a released one has `cycles.released` instead); a denial has no
# reservation and no cost, but says why and where.
RESERVED_ATTRIBUTES = {
    "cycles.reservation.id": str,
    "cycles.decision": str,
    "cycles.scope_path": str,
    "cycles.unit": str,
    "cycles.estimate.amount": int,
    "cycles.budget.remaining": int,
    "gen_ai.agent.name": str,
}
SETTLED_ATTRIBUTES = {
    "cycles.actual.amount": int,
    "gen_ai.usage.cost.amount": float,
    "gen_ai.usage.cost.currency": str,
}
COMMITTED_ATTRIBUTES = {
    "gen_ai.usage.cost.source": str,
    "gen_ai.usage.input_cost": float,
    "gen_ai.usage.output_cost": float,
}
DENIED_ATTRIBUTES = {
    "cycles.decision": str,
    "cycles.reason_code": str,
    "cycles.scope_path": str,
    "cycles.unit": str,
    "cycles.estimate.amount": int,
    "cycles.budget.remaining": int,
    "gen_ai.agent.name": str,
}
REDACTED_KEYS = {"gen_ai.input.messages", "gen_ai.output", "gen_ai.tool.args"}


@pytest.fixture(scope="session")
def collector_binary() -> Path:
    return build_collector()


# --- the Collector accepts its own configuration ---------------------------------------------------------------


@pytest.mark.parametrize(
    "configs",
    [
        pytest.param([CONFIG], id="config.yaml"),
        pytest.param([CONFIG, FILE_EXPORT], id="config.yaml+file-export.yaml"),
        pytest.param([CONFIG, LOCAL_STACK], id="config.yaml+local-stack.yaml"),
    ],
)
@pytest.mark.parametrize(
    "env",
    [
        pytest.param({}, id="defaults"),
        pytest.param(
            {"CYCLES_REDACT_CONTENT": "false", "CYCLES_SAMPLING_PERCENT": "100", "CYCLES_DECISION_WAIT": "1s"},
            id="overrides",
        ),
    ],
)
def test_config_validates(collector_binary: Path, configs: list[Path], env: dict[str, str]) -> None:
    proc = subprocess.run(
        [str(collector_binary), "validate", *(f"--config={c}" for c in configs)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "deprecated" not in proc.stderr, proc.stderr


def test_binary_is_cached_outside_the_repository(collector_binary: Path) -> None:
    assert not collector_binary.resolve().is_relative_to(COLLECTOR_DIR.parent)
    assert re.fullmatch(r"otelcol-[0-9a-f]{64}", collector_binary.parent.name)


def test_every_collector_config_is_covered() -> None:
    # jaeger.yaml configures Jaeger, not the Collector (test_jaeger_e2e.py validates it).
    not_collector = {"builder-config.yaml", "docker-compose.yaml", "jaeger.yaml"}
    configs = {p.name for p in COLLECTOR_DIR.glob("*.yaml")} - not_collector
    assert configs == {CONFIG.name, FILE_EXPORT.name, LOCAL_STACK.name}, (
        "add new Collector configs to test_config_validates"
    )


def test_built_components_are_exactly_the_ones_the_configs_use(collector_binary: Path) -> None:
    proc = subprocess.run([str(collector_binary), "components"], capture_output=True, text=True, timeout=60, check=True)
    built = yaml.safe_load(proc.stdout)
    used: dict[str, set[str]] = {}
    for path in (CONFIG, FILE_EXPORT):
        config = yaml.safe_load(path.read_text())
        for kind in ("receivers", "processors", "exporters", "connectors", "extensions"):
            used.setdefault(kind, set()).update(name.split("/")[0] for name in config.get(kind) or {})
    for kind, names in used.items():
        assert {c["name"] for c in built.get(kind) or []} == names, kind
    manifest = yaml.safe_load((COLLECTOR_DIR / "builder-config.yaml").read_text())
    built_modules = {c["module"] for kind in used for c in built.get(kind) or []}
    manifest_modules = {m["gomod"] for kind in used for m in manifest.get(kind) or []}
    assert built_modules == manifest_modules


# --- one governed workload through the project's config -------------------------------------------------------


@pytest.fixture(scope="session")
def budgets() -> Iterator[Budgets]:
    """The agents' Cycles authority (a tenant with an ample and a capped budget) and their scripted model."""
    with LocalAuthority() as authority, ScriptedModel(tool_rounds=1, answer=COMPLETION) as model:
        yield Budgets.provision(authority, model.base_url)


@dataclass
class PipelineRun:
    """A Collector run, the Prometheus scraping it (None when not installed), the governed applications exporting
    to it (one per protocol), and everything they exported."""

    collector: CollectorProcess
    prometheus: PrometheusProcess | None
    agents: dict[str, AgentProcess]
    """By OTLP protocol: `grpc`, `http/protobuf`."""
    ordinary: list[GovernedRun] = field(default_factory=list)
    kept: dict[str, GovernedRun] = field(default_factory=dict)
    """Runs tail sampling must keep, by why."""

    @property
    def runs(self) -> list[GovernedRun]:
        return [*self.ordinary, *self.kept.values()]

    @property
    def spans(self) -> list[dict[str, Any]]:
        return self.collector.exported_spans()

    def run_of(self, trace_id: str) -> GovernedRun:
        return next(r for r in self.runs if trace_id in r.trace_ids)


def _wait_for_traces(collector: CollectorProcess, trace_ids: set[str]) -> None:
    wait_for(
        lambda: trace_ids <= {s["traceId"] for s in collector.exported_spans()},
        timeout=DECISION_WAIT_S + 20,
        what=f"traces {sorted(trace_ids)} in the file exporter's output\n{collector.log_tail()}",
    )
    # The positive marker: a trace sent after every run, kept by the keep-errors rule. Once the file exporter wrote
    # it, tail sampling has decided on every earlier trace, so a trace still absent was dropped, not delayed.
    marker = emit_marker(collector.grpc_endpoint)
    wait_for(
        lambda: marker in {s["traceId"] for s in collector.exported_spans(markers=True)},
        timeout=DECISION_WAIT_S + 20,
        what=f"the marker trace {marker} in the file exporter's output\n{collector.log_tail()}",
    )


def _start_agents(
    stack: ExitStack, collector: CollectorProcess, budgets: Budgets, workdir: Path
) -> dict[str, AgentProcess]:
    """One governed application per OTLP protocol, both importing in parallel while the rest starts up."""
    endpoints: list[tuple[Protocol, str]] = [
        ("grpc", f"http://{collector.grpc_endpoint}"),
        ("http/protobuf", collector.http_endpoint),
    ]
    agents: dict[str, AgentProcess] = {
        protocol: stack.enter_context(
            start_agent_process(endpoint, protocol, budgets, workdir / f"agents-{protocol.replace('/', '-')}.log")
        )
        for protocol, endpoint in endpoints
    }
    # Exit callbacks run last-in first-out: both applications get EOF first, then each is waited for (in parallel).
    for agent in agents.values():
        stack.callback(agent.end_input)
    return agents


@pytest.fixture(scope="module")
def sampled(
    collector_binary: Path, budgets: Budgets, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PipelineRun]:
    """Redaction on (the default) and 0% of ordinary traces kept: only denied and failed traces are exported.

    Prometheus scrapes it when installed; the span tests run without it, the metric tests skip (or fail under CI).
    """
    workdir = tmp_path_factory.mktemp("collector-sampled")
    env = {"CYCLES_SAMPLING_PERCENT": "0", "CYCLES_DECISION_WAIT": f"{DECISION_WAIT_S}s"}
    with ExitStack() as stack:
        configs = [CONFIG, FILE_EXPORT]
        collector = stack.enter_context(run_collector(collector_binary, workdir, env=env, configs=configs))
        agents = _start_agents(stack, collector, budgets, workdir)
        prometheus = None
        if shutil.which("prometheus"):
            (workdir / "prometheus").mkdir()
            prometheus = stack.enter_context(
                run_prometheus(prometheus_binary(), workdir / "prometheus", targets=[collector.metrics_address])
            )
        yield PipelineRun(collector, prometheus, agents)


def _wait_for_scraped_cost(prometheus: PrometheusProcess, total: float) -> None:
    """Wait until Prometheus has scraped `total` USD from both the span-derived and the SDK cost counters."""
    wait_for(
        lambda: (
            math.isclose(prometheus.scalar("sum(cycles_spans_cost_USD_total)"), total, rel_tol=1e-9)
            and math.isclose(prometheus.scalar("sum(cycles_cost_committed_USD_total)"), total, rel_tol=1e-9)
        ),
        timeout=20,
        what=f"Prometheus to scrape {total} USD of cost",
    )


@pytest.fixture(scope="module")
def pipeline(sampled: PipelineRun) -> PipelineRun:
    """Two bursts of real governed runs, the second after Prometheus scraped the first, over gRPC and HTTP.

    The gRPC application runs both bursts, so its counters grow between scrapes (rates and increases are non-zero)
    and its two denials land on the same series; the HTTP one runs the failed-tool run.
    """
    run, prometheus = sampled, sampled.prometheus
    grpc, http = run.agents["grpc"], run.agents["http/protobuf"]
    if prometheus:
        wait_for(lambda: bool(prometheus.query("up == 1")), timeout=20, what="Prometheus to scrape the Collector")
    run.ordinary.append(grpc.run(n_traces=3))
    run.kept["denied"] = grpc.run(denied=True)
    if prometheus:
        _wait_for_scraped_cost(prometheus, sum(r.cost_usd for r in run.runs))
    run.ordinary.append(grpc.run(n_traces=2))
    run.kept["denied-again"] = grpc.run(denied=True)
    run.kept["tool-error"] = http.run(tool_error=True)
    _wait_for_traces(run.collector, {t for r in run.kept.values() for t in r.trace_ids})
    if prometheus:
        _wait_for_scraped_cost(prometheus, sum(r.cost_usd for r in run.runs))
    return run


def _governed_spans(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in spans if span_attributes(s).get("gen_ai.operation.name") in ("call_llm", "execute_tool")]


@pytest.fixture
def prometheus(pipeline: PipelineRun) -> PrometheusProcess:
    if pipeline.prometheus is None:
        prometheus_binary()  # skips, or fails under CI
        raise AssertionError("unreachable")
    return pipeline.prometheus


def test_the_runs_were_real_governed_agent_runs(pipeline: PipelineRun) -> None:
    """What the in-memory copies of the exported spans say, before anything is checked against the Collector."""
    for run in pipeline.runs:
        assert run.service_name == "otel-cycles-e2e"
        assert (run.model, run.tools, run.spans_per_trace) == ("gpt-4o", ("web_search",), 4)
        assert run.prompts == len(run.trace_ids)  # one gen_ai.input.messages per trace, carrying the prompt
    for run in pipeline.ordinary:
        assert run.scope_path == RESEARCH_SCOPE
        assert run.decisions == {"ALLOW": 3 * len(run.trace_ids)}
        assert run.error_spans == 0 and run.completions == len(run.trace_ids)
        assert run.input_tokens > 0 and run.cost_usd > 0
    for why in ("denied", "denied-again"):
        denied = pipeline.kept[why]
        assert denied.scope_path == CAPPED_SCOPE
        assert denied.decisions == {"ALLOW": 2, "DENY": 1}
        assert denied.error_spans == 2  # the denied LLM call and the agent it stopped
        assert denied.completions == 0  # the model was never asked for the final answer
        assert 0 <= denied.remaining < CAPPED_LLM_ESTIMATE
    failed = pipeline.kept["tool-error"]
    assert failed.decisions == {"ALLOW": 3} and failed.error_spans == 1 and failed.completions == 1


def test_llm_and_tool_spans_arrive_with_cost_and_budget_attributes(pipeline: PipelineRun) -> None:
    governed = _governed_spans(pipeline.spans)
    run = pipeline.runs[0]
    expected_names = {f"call_llm {run.model}", *(f"execute_tool {tool}" for tool in run.tools)}
    assert {s["name"] for s in governed} == expected_names
    outcomes: set[tuple[str, str]] = set()
    for span in governed:
        attrs = span_attributes(span)
        assert span["_scope"] == "any_agent"
        assert span["_resource"]["service.name"] == run.service_name
        if attrs["cycles.decision"] == "DENY":
            expected, outcome = DENIED_ATTRIBUTES, "denied"
            assert "cycles.reservation.id" not in attrs and "gen_ai.usage.cost.amount" not in attrs
        elif attrs.get("cycles.released"):
            expected, outcome = {**RESERVED_ATTRIBUTES, **SETTLED_ATTRIBUTES}, "released"
            assert attrs["cycles.actual.amount"] == 0 == attrs["gen_ai.usage.cost.amount"]
        else:
            expected, outcome = {**RESERVED_ATTRIBUTES, **SETTLED_ATTRIBUTES, **COMMITTED_ATTRIBUTES}, "committed"
            assert attrs["cycles.actual.amount"] == round(attrs["gen_ai.usage.cost.amount"] * MICROCENTS_PER_USD)
            assert attrs["cycles.actual.amount"] > 0
        for key, kind in expected.items():
            assert isinstance(attrs.get(key), kind), (span["name"], key, attrs.get(key))
        assert attrs["cycles.unit"] == "USD_MICROCENTS"
        assert attrs["gen_ai.agent.name"] == "researcher"
        assert attrs.get("gen_ai.usage.cost.currency", "USD") == "USD"
        assert attrs["cycles.scope_path"] == pipeline.run_of(span["traceId"]).scope_path
        if attrs["gen_ai.operation.name"] == "call_llm":
            assert attrs["gen_ai.request.model"] == run.model
        else:
            assert attrs["gen_ai.tool.name"] in run.tools
        outcomes.add((attrs["gen_ai.operation.name"], outcome))
    # The kept traces hold every kind of governed span: committed LLM and tool calls, a denial, a released tool call.
    assert outcomes == {
        ("call_llm", "committed"),
        ("execute_tool", "committed"),
        ("call_llm", "denied"),
        ("execute_tool", "released"),
    }
    allowed_llm = [
        span_attributes(s)
        for s in governed
        if s["name"].startswith("call_llm") and span_attributes(s)["cycles.decision"] == "ALLOW"
    ]
    assert allowed_llm and all(a["gen_ai.usage.input_tokens"] > 0 for a in allowed_llm)


def test_denied_span_carries_the_decision_and_reason(pipeline: PipelineRun) -> None:
    for why in ("denied", "denied-again"):
        denied_trace = pipeline.kept[why].trace_ids[0]
        in_trace = [s for s in _governed_spans(pipeline.spans) if s["traceId"] == denied_trace]
        denied = [s for s in in_trace if span_attributes(s)["cycles.decision"] == "DENY"]
        assert len(denied) == 1
        attrs = span_attributes(denied[0])
        assert attrs["cycles.reason_code"] == "BUDGET_EXCEEDED"
        assert attrs.get("cycles.actual.amount", 0) == 0
        assert attrs["cycles.scope_path"] == CAPPED_SCOPE
        # Denied because the remaining budget no longer covered the call's reservation.
        assert attrs["cycles.budget.remaining"] < attrs["cycles.estimate.amount"] == CAPPED_LLM_ESTIMATE
        assert denied[0]["status"].get("code") == 2  # STATUS_CODE_ERROR
        # The run was stopped mid-way: the first LLM call and the tool call before it were allowed.
        assert sorted(span_attributes(s)["cycles.decision"] for s in in_trace) == ["ALLOW", "ALLOW", "DENY"]


def test_failed_tool_span_is_kept_with_error_status(pipeline: PipelineRun) -> None:
    failed_trace = pipeline.kept["tool-error"].trace_ids[0]
    tools = [s for s in pipeline.spans if s["traceId"] == failed_trace and s["name"].startswith("execute_tool")]
    assert len(tools) == 1
    assert tools[0]["status"].get("code") == 2  # STATUS_CODE_ERROR
    assert span_attributes(tools[0])["cycles.released"] is True


def test_tail_sampling_keeps_denied_and_failed_traces_and_drops_ordinary_ones(pipeline: PipelineRun) -> None:
    exported = {s["traceId"] for s in pipeline.spans}
    kept = {t for r in pipeline.kept.values() for t in r.trace_ids}
    ordinary = {t for r in pipeline.ordinary for t in r.trace_ids}
    assert len(ordinary) == 5 and len(kept) == 3
    assert exported == kept
    assert not exported & ordinary
    # Kept traces are whole: every span of the run, not just the denied or failed one.
    for run in pipeline.kept.values():
        for trace_id in run.trace_ids:
            assert len([s for s in pipeline.spans if s["traceId"] == trace_id]) == run.spans_per_trace


def test_prompt_and_completion_are_redacted_by_default(pipeline: PipelineRun) -> None:
    # The application did export them (in-memory copies), in traces that were kept...
    assert all(run.prompts for run in pipeline.kept.values())
    assert pipeline.kept["tool-error"].completions == 1
    # ...and the Collector removed them before any exporter.
    raw = pipeline.collector.traces_file.read_text()
    assert PROMPT not in raw
    assert COMPLETION not in raw
    for span in pipeline.spans:
        assert not REDACTED_KEYS & span_attributes(span).keys(), span["name"]


def test_span_metrics_count_every_span_including_sampled_out_ones(
    pipeline: PipelineRun, prometheus: PrometheusProcess
) -> None:
    runs = pipeline.runs
    assert math.isclose(prometheus.scalar("sum(cycles_spans_cost_USD_total)"), sum(r.cost_usd for r in runs))
    assert prometheus.scalar("sum(cycles_spans_tokens_input_total)") == sum(r.input_tokens for r in runs)
    assert prometheus.scalar("sum(cycles_spans_tokens_output_total)") == sum(r.output_tokens for r in runs)
    for decision in ("ALLOW", "DENY"):
        expected = sum(r.decisions.get(decision, 0) for r in runs)
        assert prometheus.scalar(f'sum(cycles_spans_decisions_total{{cycles_decision="{decision}"}})') == expected
    by_agent = prometheus.query("sum by (gen_ai_agent_name, gen_ai_request_model) (cycles_spans_cost_USD_total)")
    assert {(r["metric"]["gen_ai_agent_name"], r["metric"]["gen_ai_request_model"]) for r in by_agent} == {
        ("researcher", runs[0].model),
        ("researcher", "none"),  # tool calls
    }
    by_scope = prometheus.query("sum by (cycles_scope_path) (cycles_spans_decisions_total)")
    assert {r["metric"]["cycles_scope_path"] for r in by_scope} == {RESEARCH_SCOPE, CAPPED_SCOPE}


def test_sdk_metrics_reach_prometheus(pipeline: PipelineRun, prometheus: PrometheusProcess) -> None:
    runs = pipeline.runs
    # One application per protocol, each its own series (service.instance.id): totals are sums over series.
    assert len(prometheus.query("cycles_reservation_decisions_total")) >= 2
    assert math.isclose(prometheus.scalar("sum(cycles_cost_committed_USD_total)"), sum(r.cost_usd for r in runs))
    denials = sum(r.decisions.get("DENY", 0) for r in runs)
    assert prometheus.scalar('sum(cycles_reservation_decisions_total{cycles_decision="DENY"})') == denials == 2
    tokens = sum(r.input_tokens + r.output_tokens for r in runs)
    assert prometheus.scalar("sum(gen_ai_client_token_usage_sum)") == tokens
    assert prometheus.scalar("sum(cycles_reservation_duration_seconds_count)") == sum(
        sum(r.decisions.values()) for r in runs
    )
    # The gauge holds each application's last reading per scope; only the gRPC one charged the capped scope, and its
    # last allowed reservation there was in the last denied run.
    capped = prometheus.query(f'cycles_budget_remaining_USD_MICROCENTS{{cycles_scope_path="{CAPPED_SCOPE}"}}')
    assert [float(r["value"][1]) for r in capped] == [pipeline.kept["denied-again"].remaining]


def _dashboard_targets() -> list[Any]:
    dashboard = json.loads(DASHBOARD.read_text())
    params = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            if (target.get("datasource") or panel["datasource"])["type"] == "prometheus":
                params.append(pytest.param(target["expr"], id=f"{panel['title']} {target['refId']}"))
    return params


def _substitute(expr: str) -> str:
    for name, value in GRAFANA_BUILTINS.items():
        expr = expr.replace(name, value)
    # Dashboard variables are multi-value with "All" = ".*"; the test selects All.
    return re.sub(r"\$\{?(service|agent|model|scope)\}?", ".*", expr)


@pytest.mark.parametrize("expr", _dashboard_targets())
def test_dashboard_query_returns_data_from_the_run(
    pipeline: PipelineRun, prometheus: PrometheusProcess, expr: str
) -> None:
    query = _substitute(expr)
    assert "$" not in query, f"unsubstituted variable in {query}"
    result = prometheus.query(query)
    assert result, f"no data for {query}"
    values = [float(r["value"][1]) for r in result]
    # Every panel shows a non-negative quantity that this run made positive (spend, denials, tokens, latency, ...).
    assert any(math.isfinite(v) and v > 0 for v in values), f"{query} returned only {values}"


def test_dashboard_variables_have_values(pipeline: PipelineRun, prometheus: PrometheusProcess) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    for variable in dashboard["templating"]["list"]:
        match = re.fullmatch(r"label_values\((\w+), *(\w+)\)", variable["definition"])
        assert match, variable["definition"]
        metric, label = match.groups()
        assert {s.get(label) for s in prometheus.series(metric)} - {None, ""}, variable["name"]


# --- the other settings: everything kept, content intact ------------------------------------------------------


def test_full_sampling_without_redaction_keeps_every_trace_and_its_content(
    collector_binary: Path, budgets: Budgets, tmp_path: Path
) -> None:
    env = {"CYCLES_SAMPLING_PERCENT": "100", "CYCLES_REDACT_CONTENT": "false", "CYCLES_DECISION_WAIT": "1s"}
    with ExitStack() as stack:
        collector = stack.enter_context(
            run_collector(collector_binary, tmp_path, env=env, configs=[CONFIG, FILE_EXPORT])
        )
        agents = _start_agents(stack, collector, budgets, tmp_path)
        ordinary = agents["http/protobuf"].run(n_traces=3)
        denied = agents["grpc"].run(denied=True)
        _wait_for_traces(collector, {*ordinary.trace_ids, *denied.trace_ids})
        spans = collector.exported_spans()
    assert {s["traceId"] for s in spans} == {*ordinary.trace_ids, *denied.trace_ids}
    assert len(spans) == ordinary.spans_per_trace * 3 + denied.spans_per_trace
    first_llm = [a for a in map(span_attributes, spans) if "gen_ai.input.messages" in a]
    assert len(first_llm) == ordinary.prompts + denied.prompts == 4
    assert all(PROMPT in a["gen_ai.input.messages"] for a in first_llm)
    outputs = [a["gen_ai.output"] for a in map(span_attributes, spans) if a.get("gen_ai.output") == COMPLETION]
    assert len(outputs) == ordinary.completions == 3
    assert any("gen_ai.tool.args" in span_attributes(s) for s in spans)


# --- the tail-sampling rule on its own (synthetic) ------------------------------------------------------------


def test_denial_policy_keeps_a_trace_without_error_status(collector_binary: Path, tmp_path: Path) -> None:
    """A unit check of the `keep-budget-denials` rule, with SYNTHETIC spans (`emit_policy_probe`).

    Real denials always set status ERROR too, so the real runs above would be kept by `keep-errors` even if the
    `cycles.decision` policy were gone; this isolates it: same traces, status UNSET, only the decision differs.
    """
    env = {"CYCLES_SAMPLING_PERCENT": "0", "CYCLES_DECISION_WAIT": "1s"}
    with run_collector(collector_binary, tmp_path, env=env, configs=[CONFIG, FILE_EXPORT]) as collector:
        denied, allowed = emit_policy_probe(collector.grpc_endpoint)
        _wait_for_traces(collector, {denied})
        spans = collector.exported_spans()
    assert {s["traceId"] for s in spans} == {denied}
    assert allowed != denied
    assert len(spans) == 2
