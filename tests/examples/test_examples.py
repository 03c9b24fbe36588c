"""Every example in `examples/` runs offline in its own interpreter and reaches the outcome it promises.

The examples run in parallel subprocesses (started once per module); each keeps its embedded ledger in a SQLite
file (`EXAMPLES_DB`), which the tests read back to check the example's printed numbers against the authority.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from otel_cycles.authority import LocalAuthority
from otel_cycles.testing import ScriptedModel
from tests.core.otlp_receiver import OtlpReceiver
from tests.oracle import DEFAULT_TOOL_COST, llm_price

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
GUIDE_SECTIONS = {
    "quick_start": "60-Second Quick Start, Basic agent",
    "tools": "With tools",
    "switching_frameworks": "Switching frameworks",
    "per_agent_scoping": "Per-agent budget scoping",
    "preflight": "Preflight budget check",
    "async_usage": "Async usage",
    "error_handling": "Error handling (and degradation paths)",
    "cost_analysis": "Post-run cost analysis",
    "attach_otel": "OTel mode 1: attach to an existing setup",
    "export_collector": "OTel mode 2: export through the collector",
    "callback_only": "OTel mode 3: callback-only",
}
COST_KEYS = {"cycles.reservation.id", "cycles.decision", "cycles.scope_path", "cycles.estimate.amount",
             "cycles.actual.amount", "gen_ai.usage.cost.amount"}  # fmt: skip


def scripted_spend(requests: int | range, tool_calls: int = 0, tool_cost: int = DEFAULT_TOOL_COST) -> int:
    """The independent price of an offline run: the scripted model's documented usage for requests `requests` (the
    first n, or a range of request numbers; `Usage(100 + n, 20 + n)` for request n), priced by genai-prices as gpt-4o,
    plus `tool_calls` flat tool costs."""
    numbers = range(1, requests + 1) if isinstance(requests, int) else requests
    return sum(llm_price(100 + n, 20 + n) for n in numbers) + tool_calls * tool_cost


@dataclass
class Run:
    """One example's run: its RESULT line and the authority's ledger afterwards."""

    result: dict[str, Any]
    balances: dict[str, dict[str, int]]
    reservations: list[dict[str, Any]]
    stdout: str

    def spent(self, scope: str = "tenant:acme") -> int:
        return self.balances[scope]["spent"]


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without anything that would point an example elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CYCLES_", "OPENAI_", "OTEL_", "PYTEST_"))}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def run_example(name: str, env: dict[str, str]) -> tuple[dict[str, Any], str]:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py")], cwd=REPO, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT "), done.stdout[-2000:]
    result: dict[str, Any] = json.loads(last.removeprefix("RESULT "))
    return result, done.stdout


def _run_offline(name: str, workdir: Path, otlp: str) -> Run:
    db = workdir / f"{name}.db"
    result, stdout = run_example(name, clean_env(EXAMPLES_DB=str(db), OTEL_EXPORTER_OTLP_ENDPOINT=otlp))
    with LocalAuthority(str(db)) as authority:
        balances = {
            b["scope_path"]: {key: b[key]["amount"] for key in ("spent", "remaining", "reserved")}
            for b in authority.balances("acme")
        }
        reservations = authority.reservations("acme")
        assert authority.check_invariants() == []
    return Run(result, balances, reservations, stdout)


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as server:
        yield server


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver) -> Iterator[dict[str, Future[Run]]]:
    workdir = tmp_path_factory.mktemp("examples")
    # The slowest (three frameworks) first; three at a time keeps two cores busy while imports wait on disk.
    order = sorted(GUIDE_SECTIONS, key=lambda name: name != "switching_frameworks")
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="example") as pool:
        yield {name: pool.submit(_run_offline, name, workdir, receiver.endpoint) for name in order}


def outcome(runs: dict[str, Future[Run]], name: str) -> Run:
    run = runs[name].result(timeout=300)
    # What every example prints about the budget is what the authority holds, and nothing is left reserved.
    if "balances" in run.result:
        assert run.result["balances"] == run.balances
    assert [r for r in run.reservations if r["status"] == "ACTIVE"] == []
    return run


def test_every_guide_section_has_an_example() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.py") if not p.stem.startswith("_")) == sorted(GUIDE_SECTIONS)


def test_quick_start(runs: dict[str, Future[Run]]) -> None:
    run = outcome(runs, "quick_start")
    assert run.spent("tenant:acme/agent:support-bot") == 0  # denied before the model was called
    assert run.result["answer"] == "None" and "Budget exhausted." in run.stdout
    assert run.spent() == scripted_spend(1)  # my-agent's one answer (no tools offered)
    assert {r["status"] for r in run.reservations} == {"COMMITTED"}


def test_tools_budget_stops_the_research(runs: dict[str, Future[Run]]) -> None:
    run = outcome(runs, "tools")
    assert run.result["stopped"] is True
    assert run.result["tool_commits"] == [200_000, 200_000]
    tools = [r for r in run.reservations if r["action"]["kind"] == "tool.execution"]
    assert [r["reserved"]["amount"] for r in tools] == [200_000, 200_000]
    # Two answers asked for a tool (each committed at its $0.002 estimate); the third LLM call was denied.
    assert run.spent("tenant:acme/agent:research-agent") == run.spent() == scripted_spend(2, 2, 200_000)


def test_switching_frameworks(runs: dict[str, Future[Run]]) -> None:
    run = outcome(runs, "switching_frameworks")
    spent = run.result["spent"]
    # One scripted model serves the three runs in turn: two requests and one tool call each.
    assert spent == {
        "openai": scripted_spend(range(1, 3), 1),
        "langchain": scripted_spend(range(3, 5), 1),
        "google": scripted_spend(range(5, 7), 1),
    }
    assert sum(spent.values()) == run.spent()


def test_per_agent_scoping(runs: dict[str, Future[Run]]) -> None:
    run = outcome(runs, "per_agent_scoping")
    pipeline = "tenant:acme/workflow:content-pipeline"
    researcher, writer = run.spent(f"{pipeline}/agent:researcher"), run.spent(f"{pipeline}/agent:writer")
    # The researcher: two answers and a tool call; the writer (no tools): one answer, the model's third request.
    assert (researcher, writer) == (scripted_spend(2, 1), scripted_spend(range(3, 4)))
    assert researcher + writer == run.spent(pipeline) == run.spent()
    llm = {
        (r["subject"]["agent"], r["reserved"]["amount"])
        for r in run.reservations
        if r["action"]["kind"] == "llm.completion"
    }
    assert llm == {("researcher", 3_000_000), ("writer", 2_000_000)}


def test_preflight(runs: dict[str, Future[Run]]) -> None:
    run = outcome(runs, "preflight")
    assert run.result["outcomes"] == {"support-bot": "ran", "ticket-bot": "skipped"}
    assert run.result["helper"] == [False, "BUDGET_EXCEEDED"]
    assert {r["subject"].get("agent") for r in run.reservations} == {"support-bot"}  # decide() reserves nothing
    assert run.spent("tenant:acme/agent:ticket-bot") == 0


def test_async_usage(runs: dict[str, Future[Run]]) -> None:
    run = outcome(runs, "async_usage")
    assert run.result["answer"] != "None"
    assert run.spent("tenant:acme/agent:async-agent") == run.spent() == scripted_spend(1)


def test_error_handling_degrades(runs: dict[str, Future[Run]]) -> None:
    run = outcome(runs, "error_handling")
    result = run.result
    assert result["errors"] == ["BudgetExceeded", "AgentRunError"]
    assert (result["research"], result["writer_model"], result["editor"]) == ("cached", "openai:gpt-4o-mini", "skipped")
    pipeline = "tenant:acme/workflow:pipeline"
    assert run.spent(f"{pipeline}/agent:writer") == run.spent() > 0  # only the cheaper model was paid for
    failed = [r for r in run.reservations if r["subject"]["agent"] == "support"]
    assert failed and {r["status"] for r in failed} == {"RELEASED"}  # the HTTP 500 call cost nothing


def test_cost_analysis_matches_the_ledger(runs: dict[str, Future[Run]]) -> None:
    run = outcome(runs, "cost_analysis")
    result = run.result
    assert (result["input_tokens"], result["output_tokens"]) == (101 + 102 + 103, 21 + 22 + 23)
    llm_microcents = round(result["cost_usd"] * 100_000_000)
    assert llm_microcents == scripted_spend(3) and result["tool_committed"] == 2 * DEFAULT_TOOL_COST
    assert llm_microcents + result["tool_committed"] == result["spent"]["tenant:acme"] == run.spent()


def test_attach_to_existing_otel(runs: dict[str, Future[Run]]) -> None:
    run = outcome(runs, "attach_otel")
    spans = run.result["spans"]
    assert len(spans) == 5 and all(COST_KEYS <= set(s["attributes"]) for s in spans)
    assert sum(s["attributes"]["cycles.actual.amount"] for s in spans) == run.spent() == scripted_spend(3, 2)


def test_export_collector(runs: dict[str, Future[Run]], receiver: OtlpReceiver) -> None:
    run = outcome(runs, "export_collector")
    exported = [s for s in receiver.spans if s["attributes"].get("gen_ai.agent.name") == "exported-agent"]
    governed = [s for s in exported if "cycles.decision" in s["attributes"]]
    assert len(governed) == 5 and all(COST_KEYS <= set(s["attributes"]) for s in governed)
    assert sum(s["attributes"]["cycles.actual.amount"] for s in governed) == run.spent() == scripted_spend(3, 2)
    assert {"gen_ai.client.token.usage", "cycles.cost.committed"} <= receiver.metric_names
    assert "otel-cycles" in receiver.service_names  # named by configure_export, not unknown_service:python


def test_callback_only(runs: dict[str, Future[Run]]) -> None:
    run = outcome(runs, "callback_only")
    assert run.result["statuses"] == ["COMMITTED"] and run.result["reservations"] == 5
    assert run.result["committed"] == run.spent() == scripted_spend(3, 2)


def test_quick_start_against_a_cycles_server(tmp_path: Path) -> None:
    """With `CYCLES_BASE_URL` set nothing is started: the example uses that server, its key and its budgets."""
    with LocalAuthority() as server, ScriptedModel(tool_rounds=0) as model:
        server.create_tenant("acme")
        api_key = server.create_api_key("acme")
        server.create_budget("tenant:acme", 100_000_000)
        server.create_budget("tenant:acme/agent:support-bot", 100_000)
        env = clean_env(
            CYCLES_BASE_URL=server.base_url,
            CYCLES_API_KEY=api_key,
            CYCLES_TENANT="acme",
            CYCLES_JOURNAL_DIR=str(tmp_path),
            OPENAI_BASE_URL=model.base_url,
            OPENAI_API_KEY="sk-test",
        )
        result, _ = run_example("quick_start", env)
        balances = {b["scope_path"]: b for b in server.balances("acme")}
    assert model.request_count == 1  # my-agent's answer; support-bot was denied before its call
    assert result["balances"]["tenant:acme"]["spent"] == balances["tenant:acme"]["spent"]["amount"] > 0
    assert result["answer"] == "None"
