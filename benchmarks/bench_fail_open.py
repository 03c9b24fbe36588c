"""Fail-open with the authority down: how long a governed run takes, and how long its process needs to exit after it.

Each scenario runs one fail-open agent run (tinyagent, the scripted model, 3 LLM calls + 2 tool calls = 5 governed
calls) in a fresh process configured from `CYCLES_*`, with the authority at a loopback port that is either **hung**
(accepts connections, never answers) or **closed**, plus a **healthy** embedded authority as the baseline (its exit
time is the interpreter's own teardown of AnyAgent's imports, which no setting can remove). Run time is measured
inside the child; exit time is from the end of the run to the end of the process, measured by this parent.

Run: `.venv/bin/python -m benchmarks.bench_fail_open [--code DIR] [--no-write]`
(`--code DIR` times another checkout's `otel_cycles`, e.g. `git archive <rev> otel_cycles | tar -x -C DIR`.)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TITLE = "Fail-open with the authority down"


def _child(model_url: str) -> None:
    os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")
    from any_agent import AgentConfig, AnyAgent

    from otel_cycles import CyclesBudgetCallback

    def search_web(query: str) -> str:
        """Search the web.

        Args:
            query: What to search for.
        """
        return f"results for {query}"

    callback = CyclesBudgetCallback(fail_open=True)
    config = AgentConfig(
        model_id="openai:gpt-4o", api_base=model_url, api_key="sk-fake", tools=[search_web], callbacks=[callback]
    )
    agent = AnyAgent.create("tinyagent", config)
    started = time.monotonic()
    agent.run("Research budget governance")
    print(json.dumps({"run_s": time.monotonic() - started, "ended_at": time.time()}), flush=True)


class _Hung:
    """Accepts connections and never answers."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.listener.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for conn in self.held:
            conn.close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _measure(code: Path, base_url: str, api_key: str, model_url: str, journal: str) -> dict[str, float | int]:
    env = {
        **os.environ,
        "PYTHONPATH": str(code),
        "CYCLES_BASE_URL": base_url,
        "CYCLES_API_KEY": api_key,
        "CYCLES_TENANT": "acme",
        "CYCLES_JOURNAL_DIR": journal,
    }
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", model_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    ended = time.time()
    if done.returncode != 0:
        raise SystemExit(f"child failed: {done.stderr[-2000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "run_s": figures["run_s"],
        "exit_s": ended - figures["ended_at"],
        "log_lines": len([line for line in done.stderr.splitlines() if line.strip()]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", metavar="MODEL_URL", help=argparse.SUPPRESS)
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose otel_cycles to time (default: this)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    if args.child:
        _child(args.child)
        return
    sys.path.insert(0, str(ROOT))
    from benchmarks._results import write_section
    from otel_cycles.authority import LocalAuthority
    from otel_cycles.testing import ScriptedModel

    rows: dict[str, dict[str, float | int]] = {}
    with ScriptedModel(tool_rounds=2) as model, tempfile.TemporaryDirectory() as tmp:
        with LocalAuthority() as authority:
            authority.create_tenant("acme")
            authority.create_budget("tenant:acme", 10**10)
            key = authority.create_api_key("acme")
            rows["healthy"] = _measure(args.code, authority.base_url, key, model.base_url, f"{tmp}/healthy")
        hung = _Hung()
        try:
            rows["hung"] = _measure(args.code, f"http://127.0.0.1:{hung.port}", "k", model.base_url, f"{tmp}/hung")
        finally:
            hung.close()
        closed = f"http://127.0.0.1:{_closed_port()}"
        rows["closed port"] = _measure(args.code, closed, "k", model.base_url, f"{tmp}/closed")
    lines = [
        "| authority | run (5 governed calls) | exit after the run | stderr lines |",
        "|---|---|---|---|",
        *(f"| {name} | {r['run_s']:.2f} s | {r['exit_s']:.2f} s | {r['log_lines']} |" for name, r in rows.items()),
    ]
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        write_section(
            TITLE,
            "Command: `.venv/bin/python -m benchmarks.bench_fail_open` (defaults: `CYCLES_RESERVE_TIMEOUT_S=3`, "
            "`CYCLES_BREAKER_COOLDOWN_S=2`, `CYCLES_EXIT_TIMEOUT_S=3`; the shared 2-core machine was loaded by other "
            "jobs, so compare rows, not absolute seconds).\n\n" + table,
        )


if __name__ == "__main__":
    main()
