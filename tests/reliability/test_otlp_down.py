"""The OTLP endpoint is down (nothing listens) or hangs: governance and commits are unaffected and the agent is not
blocked by export failures."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from otel_cycles.testing import ScriptedModel
from tests.oracle import DEFAULT_TOOL_COST, llm_price
from tests.reliability.conftest import Stack
from tests.reliability.fault_proxy import free_port

ROOT = Path(__file__).resolve().parents[2]


class _BlackHole:
    """Accepts connections and never answers (a hung collector)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.mark.parametrize("endpoint_kind", ["refused", "hung"])
def test_export_failures_do_not_block_or_change_governance(stack: Stack, endpoint_kind: str) -> None:
    stack.budget("", 100_000_000)
    hole = _BlackHole() if endpoint_kind == "hung" else None
    endpoint = hole.endpoint if hole else f"http://127.0.0.1:{free_port()}"
    try:
        with ScriptedModel(tool_rounds=2) as model:
            # The subprocess timeout bounds the run: an export blocking the agent or its exit would exceed it.
            result = subprocess.run(
                [sys.executable, "-m", "tests.core.mode_script", "export", stack.base_url, stack.api_key,
                 stack.tenant, model.base_url, endpoint],
                cwd=ROOT, capture_output=True, text=True, timeout=120,
                env={**os.environ, "OPENAI_API_KEY": "sk-fake", "OTEL_EXPORTER_OTLP_TIMEOUT": "2"},
            )  # fmt: skip
            usages = [r.usage for r in model.requests]
    finally:
        if hole:
            hole.close()
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["final_output"]
    assert model.request_count == 3
    # Governance is unchanged: what the model served, priced independently, plus two default-cost tool calls.
    expected = sum(llm_price(u.prompt_tokens, u.completion_tokens) for u in usages if u) + 2 * DEFAULT_TOOL_COST
    assert stack.spent() == expected and stack.active() == []
    statuses = [r["status"] for r in stack.api.reservations(stack.tenant)]
    assert statuses == ["COMMITTED"] * 5
