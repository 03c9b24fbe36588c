"""A process SIGKILLed after its LLM calls but before its commits were sent: the next start replays the journal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from otel_cycles import CyclesBudgetCallback
from otel_cycles.testing import ScriptedModel
from tests.oracle import DEFAULT_TOOL_COST, llm_price
from tests.reliability.conftest import Stack
from tests.reliability.fault_proxy import FaultProxy

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
