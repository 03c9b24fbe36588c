"""`otel-cycles demo` as a newcomer runs it: to the budget stop, with numbers that equal the authority's ledger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from otel_cycles._cli import main
from otel_cycles.authority import LocalAuthority
from tests.core.otlp_receiver import OtlpReceiver

AGENT_SCOPE = "tenant:demo/workflow:research/agent:researcher"


def run_demo(*args: str, cwd: Path) -> tuple[str, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CYCLES_", "OPENAI_", "OTEL_", "PYTEST_"))}
    env["COLUMNS"] = "200"  # rich wraps at 80 columns when not on a terminal
    cli = Path(sys.executable).with_name("otel-cycles")
    done = subprocess.run([str(cli), "demo", "--json", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    *printed, last = done.stdout.strip().splitlines()
    summary: dict[str, Any] = json.loads(last)
    return "\n".join(printed), summary


def test_demo_stops_at_the_budget_and_prints_the_ledger(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    printed, summary = run_demo("--db", str(db), cwd=tmp_path)

    assert summary["stopped"] is True and summary["reason_code"] == "BUDGET_EXCEEDED"
    assert summary["stopped_at"] == AGENT_SCOPE
    assert "Stopped before LLM call" in printed and "BUDGET_EXCEEDED" in printed
    calls = summary["calls"]
    assert calls[-1]["decision"] == "DENY" and calls[-1]["committed"] is None
    assert {c["kind"] for c in calls} == {"llm.completion", "tool.execution"}

    with LocalAuthority(str(db)) as authority:  # the ledger the demo kept, read independently
        ledger = {b["scope_path"]: b for b in authority.balances("demo")}
        assert authority.reservations("demo", status="ACTIVE") == []
        assert authority.check_invariants() == []
    assert set(ledger) == {"tenant:demo", "tenant:demo/workflow:research", AGENT_SCOPE}
    committed = sum(c["committed"] or 0 for c in calls)
    assert summary["committed"] == committed
    for scope, balance in ledger.items():
        spent, remaining = balance["spent"]["amount"], balance["remaining"]["amount"]
        assert spent == committed
        # The balances table row of this scope shows exactly the ledger's numbers.
        row = next(line for line in printed.splitlines() if line.startswith(f"│ {scope} "))
        assert f"{spent:,}" in row and f"{remaining:,}" in row
    # The budget left after the last call in the progress lines is the ledger's remaining at the agent scope.
    agent_remaining = ledger[AGENT_SCOPE]["remaining"]["amount"]
    assert summary["remaining_printed"] == agent_remaining
    assert f"researcher has {agent_remaining:,} µ¢" in printed
    progress = [line for line in printed.splitlines() if line.lstrip().startswith(("1 ", "2 ", "3 ", "4 ", "5 ", "6 "))]
    assert progress and progress[-1].rstrip().endswith(f"{agent_remaining:,} µ¢ (${agent_remaining / 1e8:.8f})")


def test_demo_exports_over_otlp_and_leaves_nothing_behind(tmp_path: Path) -> None:
    with OtlpReceiver() as receiver:
        printed, summary = run_demo("--framework", "openai", "--otlp", receiver.endpoint, cwd=tmp_path)
    assert summary["stopped"] is True
    governed = [s for s in receiver.spans if "cycles.decision" in s["attributes"]]
    assert len(governed) == len(summary["calls"])
    assert sum(s["attributes"].get("cycles.actual.amount", 0) for s in governed) == summary["committed"]
    assert receiver.service_names == {"otel-cycles-demo"}  # spans and metrics, named by the demo
    assert list(tmp_path.iterdir()) == []  # in-memory ledger, no journal, no files


def test_demo_refuses_to_overwrite_a_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "kept.db"
    db.write_bytes(b"")
    assert main(["demo", "--db", str(db)]) == 2
    assert "exists" in capsys.readouterr().out


def test_demo_needs_a_real_models_key(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(["demo", "--model", "openai:gpt-4o-mini"]) == 2
    assert "OPENAI_API_KEY" in capsys.readouterr().out
