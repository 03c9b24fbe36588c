"""Soak: thousands of governed calls with random model errors, failing tools, cancelled runs and parallel tool calls.

One process, one embedded authority, one scripted model. Each run picks a scenario at random (seeded): a normal run
(3 LLM + 2 tool calls), parallel tool calls (2 per round), a model HTTP 500 (the reservation is released), a tool
that raises, or a run cancelled mid-tool (`asyncio.wait_for` times out while the tool sleeps). Checked at the end:

* zero drift: the authority's `spent` equals the usage priced independently (genai-prices on each finished span's
  reported tokens, plus the flat tool cost), summed over every governed span;
* zero leaked reservations: nothing ACTIVE and nothing reserved once the run is over (cancelled runs included);
* flat memory: tracemalloc and RSS at start / middle / end of the governed loop.

Run: `.venv/bin/python -m benchmarks.bench_soak [--calls 10000] [--seed 1] [--no-write]` (writes the "Soak" section
of RELIABILITY.md). `tests/reliability/test_soak.py` runs ~500 calls.
"""

# ruff: noqa: E501  (the report templates are Markdown table rows)
from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.oracle import DEFAULT_TOOL_COST, Oracle

ROOT = Path(__file__).resolve().parents[1]
RELIABILITY = ROOT / "RELIABILITY.md"
SCENARIOS = ("ok", "parallel", "model_error", "tool_error", "cancel")
TOOL_COSTS = {"search_web": DEFAULT_TOOL_COST, "slow_search": DEFAULT_TOOL_COST, "broken_search": DEFAULT_TOOL_COST}
"""What each of the soak's tools commits: configured on the callback and given to the oracle, so neither side
derives it from the other."""
ORACLE = Oracle(tool_costs=TOOL_COSTS)
WEIGHTS = (0.45, 0.2, 0.12, 0.12, 0.11)


@dataclass
class SoakResult:
    calls: int = 0
    runs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SCENARIOS, 0))
    priced: int = 0
    """Independently priced (`tests.oracle`) spend of every reserved governed call, released ones included."""
    stamped: int = 0
    """Sum of `cycles.actual.amount` over the same spans (what otel-cycles decided to commit)."""
    spent: int = 0
    reserved: int = 0
    active_left: int = 0
    released: int = 0
    invariant_problems: list[str] = field(default_factory=list)
    memory: list[tuple[str, int, float, float]] = field(default_factory=list)
    """(label, calls so far, tracemalloc current MiB, RSS MiB)."""
    anyagent_contexts: int = 0
    """Run contexts any-agent never released (runs cancelled from outside, see `_drop_any_agent_leftovers`)."""
    anyagent_trace_ids: int = 0
    """Trace ids any-agent's span generation remembers (one per run, never forgotten)."""
    elapsed_s: float = 0.0

    @property
    def drift(self) -> int:
        return self.spent - self.priced


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _rebuild_interned_strings(churn: int = 1_000_000) -> None:
    """Make CPython rebuild its interned-string table now, while tracemalloc watches.

    pathlib interns every path part, and runcycles' journal names each file after its reservation, so every commit
    interns a few unique strings that die right after. Each leaves a dead slot in the table; when the slots run out,
    CPython rebuilds the table at the size its live strings need. The first rebuild after `tracemalloc.start()`
    replaces a table allocated before tracing (at import time), so it shows as one new multi-MiB block (`pathlib.py`,
    7.5 MiB in a process that imported every framework): a one-off step, not growth, that would otherwise land at a
    random point of the soak. Interning and dropping `churn` unique strings forces that rebuild before the start
    figure; later rebuilds replace a traced table with one of the same size.
    """
    for n in range(churn):
        sys.intern(f"otel-cycles-soak-warm-up-{n}")


def run_soak(
    calls: int,
    exporter: Any,
    seed: int = 1,
    tool_delay_s: float = 0.01,
    make_callback: Any = None,
    trace_malloc_top: int = 0,
) -> SoakResult:
    """Run governed agent runs until `calls` reservations were made; `exporter` is an in-memory span exporter
    already attached to the global tracer provider (it is cleared as the soak goes, to keep memory flat).
    `make_callback(**kwargs)` builds the callback (default: `CyclesBudgetCallback`). `trace_malloc_top > 0` records
    tracebacks (25 frames) and prints that many top growth sites between the middle and the end snapshots."""
    from any_agent import AgentConfig, AnyAgent
    from runcycles import CyclesClient, CyclesConfig

    from otel_cycles import CyclesBudgetCallback
    from otel_cycles.authority import LocalAuthority
    from otel_cycles.testing import ScriptedModel

    rng = random.Random(seed)
    result = SoakResult()

    def search_web(query: str) -> str:
        """Search the web.

        Args:
            query: What to search for.
        """
        time.sleep(tool_delay_s)
        return f"results for {query}"

    async def slow_search(query: str) -> str:
        """Search the web, slowly.

        Args:
            query: What to search for.
        """
        await asyncio.sleep(1.0)
        return f"results for {query}"

    def broken_search(query: str) -> str:
        """Search the web (broken).

        Args:
            query: What to search for.
        """
        raise RuntimeError("search backend down")

    with tempfile.TemporaryDirectory() as tmp, ScriptedModel(tool_rounds=2) as model:
        authority = LocalAuthority(os.path.join(tmp, "ledger.db"), sweep_interval_s=1.0)
        try:
            authority.create_tenant("soak")
            key = authority.create_api_key("soak")
            authority.create_budget("tenant:soak", 10**15)
            client = CyclesClient(CyclesConfig(base_url=authority.base_url, api_key=key, journal_dir=f"{tmp}/journal"))
            if make_callback is None:
                make_callback = CyclesBudgetCallback
            callback = make_callback(client=client, tenant="soak", agent="soaker", tool_cost=TOOL_COSTS)

            def agent(tools: list[Any]) -> Any:
                config = AgentConfig(
                    model_id="openai:gpt-4o", api_base=model.base_url, api_key="sk-fake", tools=tools,
                    callbacks=[callback],
                )  # fmt: skip
                return AnyAgent.create("tinyagent", config)

            agents = {"normal": agent([search_web]), "broken": agent([broken_search]), "slow": agent([slow_search])}
            tracemalloc.start(25 if trace_malloc_top else 1)
            _rebuild_interned_strings()
            gc.collect()
            middle_snapshot: tracemalloc.Snapshot | None = None
            result.memory.append(("start", 0, tracemalloc.get_traced_memory()[0] / 2**20, _rss_mib()))
            started = time.monotonic()
            middle_recorded = False
            while result.calls < calls:
                scenario = rng.choices(SCENARIOS, WEIGHTS)[0]
                result.runs[scenario] += 1
                prompt = "Research budget governance"
                try:
                    if scenario == "cancel":

                        async def cancelled(prompt: str = prompt, timeout: float = 0.05 + rng.random() * 0.1) -> None:
                            await asyncio.wait_for(agents["slow"].run_async(prompt), timeout=timeout)

                        asyncio.run(cancelled())
                    else:
                        which = "broken" if scenario == "tool_error" else "normal"
                        if scenario == "parallel":
                            prompt += " PARALLEL"
                        if scenario == "model_error":
                            prompt += " FAIL500"
                        agents[which].run(prompt)
                except Exception:  # model errors, cancellations: expected
                    pass
                for span in exporter.get_finished_spans():
                    attributes = span.attributes or {}
                    if not attributes.get("cycles.action.kind") or "cycles.reservation.id" not in attributes:
                        continue
                    result.calls += 1
                    result.priced += ORACLE.expected(span)  # every reserved call: the oracle decides what is owed
                    if attributes.get("cycles.released"):
                        result.released += 1
                        continue
                    result.stamped += int(attributes["cycles.actual.amount"])
                exporter.clear()  # the harness's own span store: without this it keeps every span
                model.reset()  # the scripted model's log of served requests (bodies included): same
                if not middle_recorded and result.calls >= calls // 2:
                    middle_recorded = True
                    gc.collect()
                    result.memory.append(
                        ("middle", result.calls, tracemalloc.get_traced_memory()[0] / 2**20, _rss_mib())
                    )
                    if trace_malloc_top:
                        middle_snapshot = tracemalloc.take_snapshot()
            result.elapsed_s = time.monotonic() - started
            gc.collect()
            result.memory.append(("end", result.calls, tracemalloc.get_traced_memory()[0] / 2**20, _rss_mib()))
            end_snapshot = tracemalloc.take_snapshot() if trace_malloc_top else None
            result.anyagent_contexts, result.anyagent_trace_ids = _drop_any_agent_leftovers(agents.values())
            gc.collect()
            result.memory.append(
                (
                    "end, any-agent leftovers dropped",
                    result.calls,
                    tracemalloc.get_traced_memory()[0] / 2**20,
                    _rss_mib(),
                )
            )
            if middle_snapshot is not None and end_snapshot is not None:
                _print_growth(middle_snapshot, end_snapshot, trace_malloc_top)
            tracemalloc.stop()
            from otel_cycles._settlement import flush_all

            flush_all(30)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # late commits of cancelled runs, if any, land asynchronously
                balance = next(b for b in authority.balances("soak") if b["scope_path"] == "tenant:soak")
                if int(balance["spent"]["amount"]) >= result.priced and not authority.reservations("soak", "ACTIVE"):
                    break
                time.sleep(0.1)
            balance = next(b for b in authority.balances("soak") if b["scope_path"] == "tenant:soak")
            result.spent = int(balance["spent"]["amount"])
            result.reserved = int(balance["reserved"]["amount"])
            result.active_left = len(authority.reservations("soak", status="ACTIVE"))
            result.invariant_problems = authority.check_invariants()
            return result
        finally:
            authority.stop()


def _drop_any_agent_leftovers(agents: Any) -> tuple[int, int]:
    """Count, then drop, the per-run state any-agent 1.18 itself keeps forever; returns (contexts, trace ids).

    Measured, not hidden: the "end" row includes it, the row after drops it, so the difference is any-agent's.

    * `AnyAgent.run_async` pops its run `Context` (current span, `AgentTrace`, `shared`) from
      `_wrapper.callback_context` only in `except Exception` and after success; a run cancelled from outside raises
      `CancelledError` (a BaseException) and its Context stays for the agent's lifetime, with the wrapper never
      unwrapped again (`frameworks/any_agent.py`, `run_async`).
    * `_SpanGeneration.first_llm_calls` adds each run's trace id and never removes it
      (`callbacks/span_generation/base.py`, `_set_llm_input`).
    """
    contexts = trace_ids = 0
    for agent in agents:
        wrapper = getattr(agent, "_wrapper", None)
        leftovers = getattr(wrapper, "callback_context", None)
        if isinstance(leftovers, dict):
            contexts += len(leftovers)
            leftovers.clear()
        for callback in agent.config.callbacks or []:
            seen = getattr(callback, "first_llm_calls", None)
            if isinstance(seen, set):
                trace_ids += len(seen)
                seen.clear()
    return contexts, trace_ids


def _print_growth(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, top: int) -> None:
    """Print the `top` allocation sites (full tracebacks) that grew most from `before` to `after`."""
    ignore = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap*"),
    ]
    before, after = before.filter_traces(ignore), after.filter_traces(ignore)
    stats = after.compare_to(before, "traceback")
    print(f"tracemalloc: top {top} growth sites, middle -> end (size diff, count diff, traceback most recent last)")
    for stat in stats[:top]:
        print(f"\n+{stat.size_diff / 1024:.1f} KiB ({stat.count_diff:+d} blocks), now {stat.size / 1024:.1f} KiB")
        for line in stat.traceback.format(limit=25):
            print(f"  {line}")
    by_file = after.compare_to(before, "filename")
    print(f"\ntracemalloc: top {top} files by growth")
    for stat in by_file[:top]:
        print(f"  +{stat.size_diff / 1024:8.1f} KiB ({stat.count_diff:+7d} blocks)  {stat.traceback[0].filename}")
    sys.stdout.flush()


def _report(result: SoakResult, command: str) -> str:
    rows = "\n".join(
        f"| {label} | {calls:,} | {traced:.2f} | {rss:.1f} |" for label, calls, traced, rss in result.memory
    )
    runs = ", ".join(f"{k} {v}" for k, v in result.runs.items())
    return f"""Command: `{command}`

| figure | value |
|---|---|
| governed calls (reservations) | {result.calls:,} in {result.elapsed_s:.0f} s ({result.calls / result.elapsed_s:.0f} calls/s) |
| runs by scenario | {runs} |
| released (errors, cancels) | {result.released:,} |
| priced usage (independent) / committed spend at the authority | {result.priced:,} / {result.spent:,} USD_MICROCENTS |
| **drift** | **{result.drift}** |
| reserved at the end / reservations left ACTIVE | {result.reserved} / {result.active_left} |
| ledger invariant violations | {len(result.invariant_problems)} |
| left behind by any-agent 1.18 (not otel-cycles) | {result.anyagent_contexts:,} run contexts of cancelled runs, {result.anyagent_trace_ids:,} trace ids |

| point | calls | tracemalloc (MiB) | RSS (MiB) |
|---|---|---|---|
{rows}

Memory is measured on the governed process only: the harness's in-memory span exporter and the scripted model's
request log are cleared after every run. The "end" row still includes what any-agent 1.18 itself keeps per run (the
`Context` of every run cancelled from outside, and one trace id per run in its span generation); the last row drops
those, so the difference is any-agent's. pydantic-core's JSON string cache (up to 16,384 strings, ~1.4 MiB) fills
during the first ~16k unique ids parsed and then stays flat. Diagnose growth with `--trace-malloc-top N`.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--trace-malloc-top", type=int, default=0, metavar="N",
        help="print the N top tracemalloc growth sites between the middle and the end (slower; implies --no-write)",
    )  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "sk-fake")
    os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")
    import any_agent  # noqa: F401  (installs the SDK tracer provider)
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    result = run_soak(args.calls, exporter, seed=args.seed, trace_malloc_top=args.trace_malloc_top)
    report = _report(result, f".venv/bin/python -m benchmarks.bench_soak --calls {args.calls} --seed {args.seed}")
    print(report)
    if not args.no_write and not args.trace_malloc_top:
        sys.path.insert(0, str(ROOT))
        from benchmarks._results import write_section

        write_section("Soak", report, RELIABILITY)
    if result.drift or result.active_left or result.reserved or result.invariant_problems:
        raise SystemExit(f"soak check failed: {result}")


if __name__ == "__main__":
    main()
