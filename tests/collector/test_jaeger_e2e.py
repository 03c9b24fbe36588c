"""End to end into a real Jaeger: governed AnyAgent runs export OTLP to the project's Collector (`config.yaml` as
shipped: redaction on, tail sampling with 0% of ordinary traces kept), whose `otlp_grpc/jaeger` exporter sends to a
real Jaeger v2 (`collector/jaeger.yaml`, built by `collector/build-jaeger.sh`); everything is read back through
Jaeger's query API (`/api/v3/services`, `/api/v3/traces`, `/api/traces/{id}`, tag search on `/api/traces`).

The oracles are independent of the pipeline: each span's attributes are compared with the in-memory copy of what the
application exported (`GovernedRun.governed`), and the cost in Jaeger with the Cycles authority's ledger. Absence is
proved after a positive marker: a trace sent later than the dropped ones, which tail sampling keeps, has arrived.

Without Go (no cached binaries, nothing to build them with) these tests skip locally and fail under CI.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from otel_cycles.authority import LocalAuthority
from otel_cycles.testing import ScriptedModel
from tests.collector.collector_harness import (
    COLLECTOR_DIR,
    JaegerProcess,
    build_collector,
    build_jaeger,
    listening,
    run_collector,
    run_jaeger,
    span_attributes,
    wait_for,
)
from tests.collector.telemetry import (
    CAPPED_SCOPE,
    COMPLETION,
    GOVERNANCE_PREFIXES,
    MARKER_SERVICE,
    PROMPT,
    RESEARCH_SCOPE,
    SERVICE_NAME,
    TENANT,
    Budgets,
    GovernedRun,
    emit_marker,
    start_agent_process,
)

# Covers a first, uncached Jaeger build (10-15 minutes on 2 cores) in whichever test triggers it.
pytestmark = pytest.mark.timeout(50 * 60)

CONFIG = COLLECTOR_DIR / "config.yaml"
JAEGER_CONFIG = COLLECTOR_DIR / "jaeger.yaml"
GOVERNED_OPERATIONS = ("call_llm", "execute_tool")
REDACTED_KEYS = {"gen_ai.input.messages", "gen_ai.output", "gen_ai.tool.args"}
ARRIVAL_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def jaeger_binary() -> Path:
    return build_jaeger()


@pytest.fixture(scope="module")
def collector_binary() -> Path:
    return build_collector()


@pytest.fixture(scope="module")
def budgets() -> Iterator[Budgets]:
    """This module's own authority, so its ledger holds exactly the runs made here."""
    with LocalAuthority() as authority, ScriptedModel(tool_rounds=1, answer=COMPLETION) as model:
        yield Budgets.provision(authority, model.base_url)


def test_jaeger_accepts_its_configuration(jaeger_binary: Path) -> None:
    done = subprocess.run(
        [str(jaeger_binary), "validate", f"--config={JAEGER_CONFIG}"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def _spent(budgets: Budgets, scope: str) -> int:
    """What the authority's ledger says `scope` has spent."""
    (balance,) = [b for b in budgets.authority.balances(TENANT) if b["scope_path"] == scope]
    return int(balance["spent"]["amount"])


def _governed(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """By span id, the `cycles.*` / `gen_ai.usage.*` attributes of the governed LLM and tool spans."""
    return {
        span["spanId"]: {k: v for k, v in span["attributes"].items() if k.startswith(GOVERNANCE_PREFIXES)}
        for span in spans
        if span["attributes"].get("gen_ai.operation.name") in GOVERNED_OPERATIONS
    }


def _governed_v3(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`_governed` of spans in OTLP JSON (the v3 API)."""
    return _governed([{"spanId": s["spanId"], "attributes": span_attributes(s)} for s in spans])


def _wait_for_trace(jaeger: JaegerProcess, trace_id: str, n_spans: int) -> None:
    wait_for(
        lambda: len(jaeger.trace(trace_id)) == n_spans,
        timeout=ARRIVAL_TIMEOUT_S,
        what=f"trace {trace_id} with {n_spans} spans in Jaeger\n{jaeger.log_tail()}",
    )


@dataclass
class Shipped:
    """What the governed runs exported through the Collector, and the Jaeger that received the sampled traces."""

    jaeger: JaegerProcess
    ordinary: GovernedRun
    """Three ordinary runs: all allowed, no error, so tail sampling at 0% drops them."""
    denied: GovernedRun
    """Stopped by the budget: kept."""
    failed: GovernedRun
    """Its tool raised: kept."""
    kept_spent: int
    """The ledger's spend of the two kept runs (denied: the capped scope's spend, reset just before it; failed: what
    the research scope's spend grew by during its run)."""

    @property
    def kept(self) -> list[GovernedRun]:
        return [self.denied, self.failed]


@pytest.fixture(scope="module")
def shipped(
    collector_binary: Path, jaeger_binary: Path, budgets: Budgets, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shipped]:
    workdir = tmp_path_factory.mktemp("jaeger")
    env = {"CYCLES_SAMPLING_PERCENT": "0", "CYCLES_DECISION_WAIT": "1s"}
    with ExitStack() as stack:
        jaeger = stack.enter_context(run_jaeger(jaeger_binary, workdir))
        collector = stack.enter_context(
            run_collector(collector_binary, workdir, env=env, configs=[CONFIG], jaeger=jaeger)
        )
        agent = stack.enter_context(
            start_agent_process(f"http://{collector.grpc_endpoint}", "grpc", budgets, workdir / "agent.log")
        )
        ordinary = agent.run(n_traces=3)
        denied = agent.run(denied=True)
        denied_spent = _spent(budgets, CAPPED_SCOPE)
        research_before = _spent(budgets, RESEARCH_SCOPE)
        failed = agent.run(tool_error=True)
        failed_spent = _spent(budgets, RESEARCH_SCOPE) - research_before
        for run in (denied, failed):
            _wait_for_trace(jaeger, run.trace_ids[0], run.spans_per_trace)
        # The positive marker: sent after every run above, kept by the keep-errors rule. Once it is in Jaeger, tail
        # sampling has decided on the ordinary traces (they came first), so their absence means they were dropped.
        marker = emit_marker(collector.grpc_endpoint)
        _wait_for_trace(jaeger, marker, 1)
        yield Shipped(jaeger, ordinary, denied, failed, denied_spent + failed_spent)


def test_the_runs_were_governed_and_exported_their_content(shipped: Shipped) -> None:
    """What the application exported (its in-memory copy), before anything is checked against Jaeger."""
    assert len(shipped.ordinary.trace_ids) == 3 and shipped.ordinary.decisions == {"ALLOW": 9}
    assert shipped.denied.decisions == {"ALLOW": 2, "DENY": 1} and shipped.denied.scope_path == CAPPED_SCOPE
    assert shipped.failed.decisions == {"ALLOW": 3} and shipped.failed.error_spans == 1
    for run in shipped.kept:
        assert run.service_name == SERVICE_NAME and len(run.governed) == 3
        assert run.prompts == 1  # the prompt was exported; the Collector must remove it
    assert shipped.failed.completions == 1
    assert shipped.kept_spent > 0


def test_every_governed_span_reaches_jaeger_with_the_attributes_the_run_exported(shipped: Shipped) -> None:
    for run in shipped.kept:
        (trace_id,) = run.trace_ids
        spans = shipped.jaeger.trace(trace_id)
        assert len(spans) == run.spans_per_trace
        assert {span["service"] for span in spans} == {SERVICE_NAME}
        # Same span ids, and per span the same cycles.* and gen_ai.usage.* (tokens, cost) attributes and values.
        assert _governed(spans) == run.governed
        # The same through the v3 API (OTLP JSON): the trace as stored, not just as the internal API renders it.
        assert _governed_v3(shipped.jaeger.find(SERVICE_NAME)[trace_id]) == run.governed


def test_jaeger_holds_the_kept_traces_and_none_of_the_sampled_out_ones(shipped: Shipped) -> None:
    jaeger = shipped.jaeger
    assert {SERVICE_NAME, MARKER_SERVICE} <= jaeger.services()
    kept = {run.trace_ids[0] for run in shipped.kept}
    assert set(jaeger.find(SERVICE_NAME)) == kept
    for trace_id in shipped.ordinary.trace_ids:
        assert jaeger.get(f"/api/v3/traces/{trace_id}") is None  # 404: no such trace
        assert jaeger.trace(trace_id) == []


def test_cost_in_jaeger_equals_what_the_ledger_spent_on_those_runs(shipped: Shipped) -> None:
    traces = shipped.jaeger.find(SERVICE_NAME)
    governed = [attrs for spans in traces.values() for attrs in _governed_v3(spans).values()]
    total = sum(int(attrs.get("cycles.actual.amount", 0)) for attrs in governed)
    assert total == shipped.kept_spent > 0
    # Each span's micro-cents and its USD cost agree (1 USD = 10^8 USD_MICROCENTS).
    for attrs in governed:
        if "cycles.actual.amount" in attrs:
            assert attrs["cycles.actual.amount"] == round(attrs["gen_ai.usage.cost.amount"] * 100_000_000)


def test_a_budget_denial_is_found_by_searching_jaeger_for_its_decision(shipped: Shipped) -> None:
    jaeger = shipped.jaeger
    assert jaeger.search(SERVICE_NAME, {"cycles.decision": "DENY"}) == set(shipped.denied.trace_ids)
    # The search filters: both kept traces have allowed calls, only one a denial.
    assert jaeger.search(SERVICE_NAME, {"cycles.decision": "ALLOW"}) == {r.trace_ids[0] for r in shipped.kept}
    spans = jaeger.trace(shipped.denied.trace_ids[0])
    (denial,) = [s["attributes"] for s in spans if s["attributes"].get("cycles.decision") == "DENY"]
    assert denial["cycles.reason_code"] == "BUDGET_EXCEEDED" and denial["cycles.scope_path"] == CAPPED_SCOPE


def test_content_the_collector_redacts_never_reaches_jaeger(shipped: Shipped) -> None:
    jaeger = shipped.jaeger
    stored = json.dumps([jaeger.get(f"/api/traces/{run.trace_ids[0]}") for run in shipped.kept])
    stored += json.dumps(jaeger.get("/api/v3/traces/" + shipped.failed.trace_ids[0]))
    assert PROMPT not in stored and COMPLETION not in stored
    for run in shipped.kept:
        for span in jaeger.trace(run.trace_ids[0]):
            assert not REDACTED_KEYS & span["attributes"].keys(), span["name"]


# --- the ledger never depends on the trace pipeline ------------------------------------------------------------


def _assert_settled(budgets: Budgets, runs: list[GovernedRun]) -> None:
    """Every reservation of `runs` is finished in the ledger: committed with the span's actual amount, or released
    (a failed tool call); and the tenant holds no reservation open."""
    ledger = {r["reservation_id"]: r for r in budgets.authority.reservations(TENANT)}
    checked = 0
    for run in runs:
        for attrs in run.governed.values():
            if attrs["cycles.decision"] == "DENY":
                continue
            reservation = ledger[attrs["cycles.reservation.id"]]
            if attrs.get("cycles.released"):
                assert reservation["status"] == "RELEASED"
            else:
                assert reservation["status"] == "COMMITTED"
                assert reservation["committed"]["amount"] == attrs["cycles.actual.amount"] > 0
            checked += 1
    assert checked == sum(run.decisions.get("ALLOW", 0) for run in runs) > 0
    assert budgets.authority.reservations(TENANT, status="ACTIVE") == []


def test_jaeger_down_then_collector_down_the_agents_finish_and_every_reservation_settles(
    collector_binary: Path, budgets: Budgets, tmp_path: Path
) -> None:
    # No Jaeger: the Collector's otlp_grpc/jaeger exporter points at a port nothing listens on; it keeps every trace.
    env = {"CYCLES_SAMPLING_PERCENT": "100", "CYCLES_DECISION_WAIT": "1s"}
    with ExitStack() as stack:
        collector = stack.enter_context(run_collector(collector_binary, tmp_path, env=env, configs=[CONFIG]))
        agent = stack.enter_context(
            start_agent_process(
                f"http://{collector.grpc_endpoint}", "grpc", budgets, tmp_path / "agent.log", export_timeout_s=1
            )
        )
        jaeger_down = [agent.run(n_traces=2), agent.run(denied=True)]
        _assert_settled(budgets, jaeger_down)
        assert jaeger_down[0].completions == 2  # both agents answered
        collector.stop()
        assert not listening(collector.grpc_endpoint)
        collector_down = [agent.run(n_traces=1, pipeline_down=True), agent.run(denied=True, pipeline_down=True)]
        _assert_settled(budgets, collector_down)
        assert collector_down[0].completions == 1
