"""Load: many concurrent governed agents, in several processes, against one shared budget with the REJECT policy.

The embedded authority runs in this process (a file-backed `LocalAuthority` on loopback) with the scripted model;
each worker process runs `--agents` tinyagent agents concurrently (`run_async` under one event loop), each doing
`--runs` runs of 3 LLM calls and 2 tool calls. The shared budget is sized to run out part-way (`--budget-fraction`
of what all runs would cost), so the agents race for the last of it. Checked afterwards: spent never exceeds
allocated, the ledger invariant holds on every scope, no reservation is left ACTIVE. Recorded: the authority's
request throughput and the reserve latency the agents saw (each worker times the callback's reserve call).

Run: `.venv/bin/python -m benchmarks.bench_load [--processes 4 --agents 16 --runs 3] [--no-write]`
(writes the "Load: 64 concurrent agents" section of RELIABILITY.md).
"""

# ruff: noqa: E501  (the report templates are Markdown table rows)
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RELIABILITY = ROOT / "RELIABILITY.md"
PER_RUN_COST = 517_000
"""About what one run commits (3 priced gpt-4o calls + 2 tool calls), to size the budget."""


@dataclass
class LoadResult:
    processes: int
    agents: int
    runs: int
    allocated: int
    spent: int
    reserved: int
    invariant_problems: list[str]
    active_left: int
    statuses: dict[str, int]
    completed_runs: int
    denied_runs: int
    failed_runs: int
    reserve_calls: int
    latencies_ms: list[float]
    elapsed_s: float

    @property
    def requests(self) -> int:
        """Authority requests on the governance path: every reserve, plus one commit or release per reservation."""
        return self.reserve_calls + self.statuses.get("COMMITTED", 0) + self.statuses.get("RELEASED", 0)

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def run_load(
    processes: int, agents: int, runs: int, budget_fraction: float = 0.6, timeout_s: float = 600
) -> LoadResult:
    """Run the load and return what the ledger says afterwards."""
    from otel_cycles.authority import LocalAuthority
    from otel_cycles.testing import ScriptedModel

    with tempfile.TemporaryDirectory() as tmp, ScriptedModel(tool_rounds=2) as model:
        authority = LocalAuthority(os.path.join(tmp, "ledger.db"), sweep_interval_s=0.5)
        try:
            tenant = "load"
            authority.create_tenant(tenant)
            api_key = authority.create_api_key(tenant)
            allocated = int(processes * agents * runs * PER_RUN_COST * budget_fraction)
            authority.create_budget(f"tenant:{tenant}", allocated * 4)
            authority.create_budget(f"tenant:{tenant}/workflow:load", allocated, commit_overage_policy="REJECT")
            started = time.monotonic()
            workers = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.bench_load",
                        "--worker",
                        authority.base_url,
                        api_key,
                        tenant,
                        model.base_url,
                        str(agents),
                        str(runs),
                        os.path.join(tmp, f"journal-{i}"),
                    ],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env={**os.environ, "OPENAI_API_KEY": "sk-fake", "OPENAI_AGENTS_DISABLE_TRACING": "1"},
                )  # fmt: skip
                for i in range(processes)
            ]
            reports = []
            for worker in workers:
                out, err = worker.communicate(timeout=timeout_s)
                if worker.returncode != 0:
                    raise RuntimeError(f"load worker failed ({worker.returncode}): {err[-3000:]}")
                reports.append(json.loads(out.strip().splitlines()[-1]))
            elapsed = time.monotonic() - started
            authority.sweep()
            balance = next(b for b in authority.balances(tenant) if b["scope_path"] == f"tenant:{tenant}/workflow:load")
            statuses: dict[str, int] = {}
            for reservation in authority.reservations(tenant):
                statuses[reservation["status"]] = statuses.get(reservation["status"], 0) + 1
            return LoadResult(
                processes=processes,
                agents=agents,
                runs=runs,
                allocated=allocated,
                spent=int(balance["spent"]["amount"]),
                reserved=int(balance["reserved"]["amount"]),
                invariant_problems=authority.check_invariants(),
                active_left=len(authority.reservations(tenant, status="ACTIVE")),
                statuses=statuses,
                completed_runs=sum(r["completed"] for r in reports),
                denied_runs=sum(r["denied"] for r in reports),
                failed_runs=sum(r["failed"] for r in reports),
                reserve_calls=sum(len(r["latencies_ms"]) for r in reports),
                latencies_ms=[v for r in reports for v in r["latencies_ms"]],
                elapsed_s=elapsed,
            )
        finally:
            authority.stop()


def _worker(
    authority_url: str, api_key: str, tenant: str, model_url: str, agents: int, runs: int, journal: str
) -> None:
    import asyncio

    from any_agent import AgentConfig, AnyAgent
    from runcycles import CyclesClient, CyclesConfig

    import otel_cycles.callback as callback_module
    from otel_cycles import BudgetExceeded, CyclesBudgetCallback
    from tests.core.agents import search_web

    latencies: list[float] = []
    timed = callback_module.reserve  # type: ignore[attr-defined]

    def reserve(client: Any, body: dict[str, Any], **options: Any) -> Any:
        started = time.perf_counter()
        try:
            return timed(client, body, **options)
        finally:
            latencies.append((time.perf_counter() - started) * 1000)

    callback_module.reserve = reserve  # type: ignore[attr-defined]
    client = CyclesClient(CyclesConfig(base_url=authority_url, api_key=api_key, journal_dir=journal, read_timeout=10))
    counts = {"completed": 0, "denied": 0, "failed": 0}

    async def one_agent(index: int) -> None:
        callback = CyclesBudgetCallback(
            client=client, tenant=tenant, workflow="load", agent=f"agent-{os.getpid()}-{index}", overage_policy="REJECT"
        )
        config = AgentConfig(
            model_id="openai:gpt-4o", api_base=model_url, api_key="sk-fake", tools=[search_web], callbacks=[callback]
        )
        agent = await AnyAgent.create_async("tinyagent", config)
        for _ in range(runs):
            try:
                await agent.run_async("Research budget governance")
                counts["completed"] += 1
            except BudgetExceeded:
                counts["denied"] += 1
            except Exception:
                counts["failed"] += 1

    async def main() -> None:
        await asyncio.gather(*(one_agent(i) for i in range(agents)))

    asyncio.run(main())
    from otel_cycles._settlement import flush_all

    flush_all(30)
    print(json.dumps({**counts, "latencies_ms": [round(v, 3) for v in latencies]}), flush=True)


def _report(result: LoadResult, command: str) -> str:
    throughput = result.requests / result.elapsed_s
    return f"""Command: `{command}`

| figure | value |
|---|---|
| agents (processes x async agents per process) | {result.processes * result.agents} ({result.processes} x {result.agents}), {result.runs} runs each |
| runs completed / stopped by the budget / failed | {result.completed_runs} / {result.denied_runs} / {result.failed_runs} |
| shared budget (REJECT), allocated | {result.allocated:,} USD_MICROCENTS |
| spent at the end | {result.spent:,} ({100 * result.spent / result.allocated:.1f} % of allocated; never above) |
| reserved at the end / reservations left ACTIVE | {result.reserved} / {result.active_left} |
| ledger invariant violations (every scope) | {len(result.invariant_problems)} |
| reservations by final status | {", ".join(f"{k} {v}" for k, v in sorted(result.statuses.items()))} |
| authority requests (reserve + commit/release) | {result.requests:,} in {result.elapsed_s:.1f} s = **{throughput:.0f} req/s** |
| reserve latency seen by agents p50 / p95 / p99 / max | {result.pct(0.5):.1f} / {result.pct(0.95):.1f} / {result.pct(0.99):.1f} / {max(result.latencies_ms or [0]):.1f} ms |

The throughput is end-to-end (it includes the agents' own work and the scripted model on the same 2 cores), so it
is a floor for the authority, not its ceiling; `benchmarks/bench_authority.py` measures the authority alone.
"""


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        url, key, tenant, model_url, agents, runs, journal = sys.argv[2:9]
        _worker(url, key, tenant, model_url, int(agents), int(runs), journal)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    result = run_load(args.processes, args.agents, args.runs)
    ok = result.spent <= result.allocated and not result.invariant_problems and result.active_left == 0
    command = f".venv/bin/python -m benchmarks.bench_load --processes {args.processes} --agents {args.agents} --runs {args.runs}"
    report = _report(result, command)
    print(report)
    if not args.no_write:
        sys.path.insert(0, str(ROOT))
        from benchmarks._results import write_section

        write_section(f"Load: {args.processes * args.agents} concurrent agents", report, RELIABILITY)
    if not ok:
        raise SystemExit(f"load check failed: {result}")


if __name__ == "__main__":
    main()
