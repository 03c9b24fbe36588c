"""A process SIGKILLed after its LLM calls but before its commits were sent: the next start replays the journal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from otel_cycles import CyclesBudgetCallback
from otel_cycles import _settlement as settlement_module
from otel_cycles._settlement import settlement_for
from otel_cycles.testing import ScriptedModel
from tests.oracle import DEFAULT_TOOL_COST, llm_price
from tests.reliability.conftest import Stack
from tests.reliability.fault_proxy import FaultProxy
from tests.reliability.helpers import count_journal_writes

ROOT = Path(__file__).resolve().parents[2]


def test_killed_process_commits_replay_on_next_start(stack: Stack, model: ScriptedModel, tmp_path: Path) -> None:
    stack.budget("", 100_000_000)
    # The proxy is the authority URL the process knows (the journal identity is base URL + key); it holds every
    # commit, so none reaches the authority before the kill.
    with FaultProxy(stack.base_url) as proxy:
        proxy.add(path="/commit", method="POST", hold=True)
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.kill_script", proxy.base_url, stack.api_key, stack.tenant,
             model.base_url, stack.journal_dir, "2"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "OPENAI_API_KEY": "sk-fake"},
        )  # fmt: skip
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line, process.stderr.read() if process.stderr else ""
            assert json.loads(line)["spans"] > 0
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        assert process.returncode == -signal.SIGKILL
        # What the killed process should have committed: the usage the scripted model served it (2 runs x 3 calls),
        # priced by genai-prices, and its 4 search_web calls at the default tool cost.
        usages = [r.usage for r in model.requests]
        assert len(usages) == 6 and all(u is not None for u in usages)
        expected = sum(llm_price(u.prompt_tokens, u.completion_tokens) for u in usages if u) + 4 * DEFAULT_TOOL_COST
        assert stack.spent() == 0
        assert len(stack.active()) == 10  # 2 runs x (3 LLM + 2 tool calls), all still held
        journaled = list(Path(stack.journal_dir).rglob("*.json"))
        assert len(journaled) == 10

        proxy.clear()
        proxy.release_held()
        # "The next start": a callback built for the same authority URL, key and journal directory replays it.
        CyclesBudgetCallback(client=stack.client(proxy.base_url), tenant=stack.tenant)
        assert stack.wait_for(lambda: stack.spent() == expected and not stack.active()), (stack.spent(), expected)
        assert stack.wait_for(lambda: not list(Path(stack.journal_dir).rglob("*.json")))


def test_commits_behind_a_hung_request_are_journaled_without_a_later_commit(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last commits of a run queue behind a commit the authority never answers, and no later commit comes to
    journal them: the Settlement's journal guard does, so a kill at that point still loses nothing."""
    monkeypatch.setattr(settlement_module, "STUCK_S", 1.0)  # wide enough that the queued commits arrive before it
    written = count_journal_writes(monkeypatch)
    stack.budget("", 100_000_000)
    with FaultProxy(stack.base_url) as proxy:
        proxy.add(path="/commit", method="POST", hold=True)
        client = stack.client(proxy.base_url, read_timeout=30.0)
        settlement = settlement_for(client)
        subject = {"tenant": stack.tenant}
        action = {"kind": "tool.execution", "name": "search"}
        ids = []
        for n in range(3):
            created = client.create_reservation(
                {"idempotency_key": f"guard-{stack.tenant}-{n}", "subject": subject, "action": action,
                 "estimate": {"unit": "USD_MICROCENTS", "amount": 10_000}}
            )  # fmt: skip
            assert created.is_success and created.body is not None, created
            ids.append(str(created.body["reservation_id"]))

        def bodies(n: int) -> Callable[[], tuple[dict[str, Any], dict[str, Any]]]:
            actual = {"unit": "USD_MICROCENTS", "amount": 1_000 * (n + 1)}
            commit = {"idempotency_key": f"guard-commit-{stack.tenant}-{n}", "actual": actual}
            event = {"idempotency_key": f"guard-event-{stack.tenant}-{n}", "subject": subject, "action": action,
                     "actual": actual}  # fmt: skip
            return lambda: (commit, event)

        settlement.commit(ids[0], bodies(0))
        assert stack.wait_for(lambda: len(proxy.requests("/commit", "POST")) == 1)  # held: the worker is stuck
        settlement.commit(ids[1], bodies(1))
        settlement.commit(ids[2], bodies(2))
        assert stack.wait_for(lambda: len(list(Path(stack.journal_dir).rglob("*.json"))) == 3)
        assert written == {reservation_id: 1 for reservation_id in ids}  # the one in flight too, each once
        proxy.clear()
        proxy.release_held()
        assert stack.wait_for(lambda: stack.spent() == 6_000 and not stack.active())
        assert stack.wait_for(lambda: not list(Path(stack.journal_dir).rglob("*.json")))
