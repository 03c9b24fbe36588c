"""End to end through the real Collector: build it from the manifest, validate every config, run the project's own
config (plus the file-export overlay) on loopback ports, send governed-agent telemetry over OTLP, and check what it
exported: spans in the file exporter's JSON, metrics through a real Prometheus scraping the prometheus exporter, and
every PromQL expression of the Grafana dashboard.

The first session builds the Collector (minutes, cached outside the repository); later sessions take seconds.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

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
from tests.collector.telemetry import COMPLETION, MICROCENTS_PER_USD, PROMPT, GovernedRun, emit_governed_run

# Covers the first, uncached Collector build in whichever test triggers it.
pytestmark = pytest.mark.timeout(50 * 60)

CONFIG = COLLECTOR_DIR / "config.yaml"
FILE_EXPORT = COLLECTOR_DIR / "file-export.yaml"
DASHBOARD = COLLECTOR_DIR / "grafana" / "dashboards" / "agent-budgets.json"
DECISION_WAIT_S = 2
# Grafana's built-in variables, replaced by fixed windows that cover the whole test run.
GRAFANA_BUILTINS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "10m"}

CYCLES_ATTRIBUTES = {
    "cycles.reservation.id": str,
    "cycles.decision": str,
    "cycles.scope_path": str,
    "cycles.unit": str,
    "cycles.estimate.amount": int,
    "cycles.actual.amount": int,
    "cycles.budget.remaining": int,
    "gen_ai.agent.name": str,
    "gen_ai.usage.cost.amount": float,
    "gen_ai.usage.cost.currency": str,
    "gen_ai.usage.cost.source": str,
    "gen_ai.usage.input_cost": float,
    "gen_ai.usage.output_cost": float,
}
REDACTED_KEYS = {"gen_ai.input.messages", "gen_ai.output", "gen_ai.tool.args"}


@pytest.fixture(scope="session")
def collector_binary() -> Path:
    return build_collector()


# --- the Collector accepts its own configuration ---------------------------------------------------------------


@pytest.mark.parametrize(
    "configs",
    [pytest.param([CONFIG], id="config.yaml"), pytest.param([CONFIG, FILE_EXPORT], id="config.yaml+file-export.yaml")],
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
    configs = {p.name for p in COLLECTOR_DIR.glob("*.yaml")} - {"builder-config.yaml", "docker-compose.yaml"}
    assert configs == {CONFIG.name, FILE_EXPORT.name}, "add new Collector configs to test_config_validates"


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


@dataclass
class PipelineRun:
    """A Collector run, the Prometheus scraping it (None when not installed), and everything that was sent."""

    collector: CollectorProcess
    prometheus: PrometheusProcess | None
    ordinary: list[GovernedRun] = field(default_factory=list)
    kept: dict[str, GovernedRun] = field(default_factory=dict)
    """Runs tail sampling must keep, by why."""

    @property
    def runs(self) -> list[GovernedRun]:
        return [*self.ordinary, *self.kept.values()]

    @property
    def spans(self) -> list[dict[str, Any]]:
        return self.collector.exported_spans()


def _wait_for_traces(collector: CollectorProcess, trace_ids: set[str]) -> None:
    wait_for(
        lambda: trace_ids <= {s["traceId"] for s in collector.exported_spans()},
        timeout=DECISION_WAIT_S + 20,
        what=f"traces {sorted(trace_ids)} in the file exporter's output\n{collector.log_tail()}",
    )
    # Ordinary traces were sent first, so their decisions fell due no later than these; this covers a decision made
    # in the same tick that the file exporter had not flushed yet.
    time.sleep(2)


@pytest.fixture(scope="module")
def sampled(collector_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelineRun]:
    """Redaction on (the default) and 0% of ordinary traces kept: only denied and failed traces are exported.

    Prometheus scrapes it when installed; the span tests run without it, the metric tests skip (or fail under CI).
    """
    workdir = tmp_path_factory.mktemp("collector-sampled")
    env = {"CYCLES_SAMPLING_PERCENT": "0", "CYCLES_DECISION_WAIT": f"{DECISION_WAIT_S}s"}
    with ExitStack() as stack:
        configs = [CONFIG, FILE_EXPORT]
        collector = stack.enter_context(run_collector(collector_binary, workdir, env=env, configs=configs))
        prometheus = None
        if shutil.which("prometheus"):
            (workdir / "prometheus").mkdir()
            prometheus = stack.enter_context(
                run_prometheus(prometheus_binary(), workdir / "prometheus", targets=[collector.metrics_address])
            )
        yield PipelineRun(collector, prometheus)


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
    """Two bursts, the second after Prometheus scraped the first (so rates are non-zero), over gRPC and HTTP."""
    run, prometheus = sampled, sampled.prometheus
    grpc, http = run.collector.grpc_endpoint, run.collector.http_endpoint
    if prometheus:
        wait_for(lambda: bool(prometheus.query("up == 1")), timeout=20, what="Prometheus to scrape the Collector")
    run.ordinary.append(emit_governed_run(grpc, denied=False, n_traces=3))
    run.kept["denied"] = emit_governed_run(grpc, denied=True)
    if prometheus:
        _wait_for_scraped_cost(prometheus, sum(r.cost_usd for r in run.runs))
    run.ordinary.append(emit_governed_run(grpc, denied=False, n_traces=2))
    # The cycles.decision policy alone must keep a denial, even one whose span status is not ERROR.
    run.kept["denied-status-unset"] = emit_governed_run(grpc, denied=True, denial_sets_error_status=False)
    run.kept["tool-error"] = emit_governed_run(http, denied=False, tool_error=True, protocol="http/protobuf")
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


def test_llm_and_tool_spans_arrive_with_cost_and_budget_attributes(pipeline: PipelineRun) -> None:
    governed = _governed_spans(pipeline.spans)
    run = pipeline.runs[0]
    expected_names = {f"call_llm {run.model}", *(f"execute_tool {tool}" for tool in run.tools)}
    assert {s["name"] for s in governed} == expected_names
    for span in governed:
        attrs = span_attributes(span)
        assert span["_scope"] == "any_agent"
        assert span["_resource"]["service.name"] == run.service_name
        for key, kind in CYCLES_ATTRIBUTES.items():
            assert isinstance(attrs.get(key), kind), (span["name"], key, attrs.get(key))
        assert attrs["cycles.unit"] == "USD_MICROCENTS"
        assert attrs["gen_ai.usage.cost.currency"] == "USD"
        assert attrs["cycles.scope_path"] == "tenant:acme/workflow:research/agent:researcher"
        if attrs["gen_ai.operation.name"] == "call_llm":
            assert attrs["gen_ai.request.model"] == run.model
        else:
            assert attrs["gen_ai.tool.name"] in run.tools
        if attrs["cycles.decision"] == "ALLOW":
            assert attrs["cycles.actual.amount"] == round(attrs["gen_ai.usage.cost.amount"] * MICROCENTS_PER_USD)
    allowed_llm = [
        span_attributes(s)
        for s in governed
        if s["name"].startswith("call_llm") and span_attributes(s)["cycles.decision"] == "ALLOW"
    ]
    assert allowed_llm and all(a["gen_ai.usage.input_tokens"] > 0 for a in allowed_llm)


def test_denied_span_carries_the_decision_and_reason(pipeline: PipelineRun) -> None:
    denied_trace = pipeline.kept["denied"].trace_ids[0]
    denied = [
        s
        for s in _governed_spans(pipeline.spans)
        if s["traceId"] == denied_trace and span_attributes(s)["cycles.decision"] == "DENY"
    ]
    assert len(denied) == 1
    attrs = span_attributes(denied[0])
    assert attrs["cycles.reason_code"] == "BUDGET_EXCEEDED"
    assert attrs["cycles.actual.amount"] == 0
    assert denied[0]["status"].get("code") == 2  # STATUS_CODE_ERROR


def test_tail_sampling_keeps_denied_and_failed_traces_and_drops_ordinary_ones(pipeline: PipelineRun) -> None:
    exported = {s["traceId"] for s in pipeline.spans}
    kept = {t for r in pipeline.kept.values() for t in r.trace_ids}
    ordinary = {t for r in pipeline.ordinary for t in r.trace_ids}
    assert exported == kept
    assert not exported & ordinary
    # Kept traces are whole: every span of the run, not just the denied or failed one.
    for run in pipeline.kept.values():
        for trace_id in run.trace_ids:
            assert len([s for s in pipeline.spans if s["traceId"] == trace_id]) == run.spans_per_trace


def test_prompt_and_completion_are_redacted_by_default(pipeline: PipelineRun) -> None:
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


def test_sdk_metrics_reach_prometheus(pipeline: PipelineRun, prometheus: PrometheusProcess) -> None:
    runs = pipeline.runs
    assert math.isclose(prometheus.scalar("sum(cycles_cost_committed_USD_total)"), sum(r.cost_usd for r in runs))
    denials = sum(r.decisions.get("DENY", 0) for r in runs)
    assert prometheus.scalar('sum(cycles_reservation_decisions_total{cycles_decision="DENY"})') == denials
    tokens = sum(r.input_tokens + r.output_tokens for r in runs)
    assert prometheus.scalar("sum(gen_ai_client_token_usage_sum)") == tokens
    assert prometheus.scalar("sum(cycles_reservation_duration_seconds_count)") == sum(
        sum(r.decisions.values()) for r in runs
    )
    assert prometheus.query('cycles_budget_remaining_USD_MICROCENTS{cycles_unit="USD_MICROCENTS"}')


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
    collector_binary: Path, tmp_path: Path
) -> None:
    env = {"CYCLES_SAMPLING_PERCENT": "100", "CYCLES_REDACT_CONTENT": "false", "CYCLES_DECISION_WAIT": "1s"}
    with run_collector(collector_binary, tmp_path, env=env, configs=[CONFIG, FILE_EXPORT]) as collector:
        ordinary = emit_governed_run(collector.http_endpoint, denied=False, n_traces=3, protocol="http/protobuf")
        denied = emit_governed_run(collector.grpc_endpoint, denied=True, emit_metrics=False)
        _wait_for_traces(collector, {*ordinary.trace_ids, *denied.trace_ids})
        spans = collector.exported_spans()
    assert {s["traceId"] for s in spans} == {*ordinary.trace_ids, *denied.trace_ids}
    first_llm = [a for a in map(span_attributes, spans) if "gen_ai.input.messages" in a]
    assert len(first_llm) == 4
    assert all(PROMPT in a["gen_ai.input.messages"] for a in first_llm)
    assert any(span_attributes(s).get("gen_ai.output") == COMPLETION for s in spans)
