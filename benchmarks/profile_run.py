"""Where the time of a governed run goes: wall time per hook phase, and CPU per thread, of real tinyagent runs.

The same setup as `bench_agents` (scripted model and embedded authority in their own processes), otel-cycles only.
Each of the callback's hooks and the span processor's `on_end` is timed where it runs (for tinyagent the before-hooks
and the end-of-run wait run on the hook pool, see `otel_cycles._async_hooks`, and are timed there); CPU is read per
thread from /proc (Linux only), so the agent's own work, the hook pool and the settlement worker
are told apart.

With `--concurrent N`, each of the `--runs` is a wave of N `run_async` runs under one event loop (the waves of
`bench_agents`), and the figures are per wave.

Each governed run (or wave) alternates with the same run of the agent without a callback, so the process CPU and
the cyclic garbage collector's work (collections per generation and their time, from `gc.callbacks`) of both are
side by side: what governance adds that no hook shows.

Run: `python -m benchmarks.profile_run [--calls 8] [--model-ms 20] [--runs 30] [--concurrent N]` (prints a Markdown
table).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import gc
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.bench_agents import PROMPT, Env, make_agents, start_model, stop
from benchmarks.bench_authority import setup, start_server
from otel_cycles import CyclesBudgetCallback, CyclesSpanProcessor, metrics
from otel_cycles.processor import ensure_processor

PHASES = (
    ("before_llm_call", "reserve the LLM call, or adopt its lookahead"),
    ("after_llm_call", "price the usage, stamp the span, send the lookaheads"),
    ("before_tool_execution", "reserve the tool call, or adopt its lookahead"),
    ("after_tool_execution", "stamp the tool's cost"),
    ("on_end", "span processor: queue the commit"),
    ("after_agent_invocation", "end of run: release unused lookaheads, wait for the run's commits"),
)


def _thread_cpu() -> dict[str, float]:
    """CPU seconds per Python thread name (the threads of a pool summed) of this process, from /proc (schedstat:
    nanoseconds, finer than a wave)."""
    out: dict[str, float] = collections.defaultdict(float)
    for thread in threading.enumerate():
        try:
            stat = (Path("/proc/self/task") / str(thread.native_id) / "schedstat").read_text()
        except OSError:
            continue
        out[thread.name.rstrip("_0123456789")] += int(stat.split()[0]) / 1e9
    return out


def _timed(record: list[tuple[float, float]], fn: Callable[..., Any], recording: threading.Event) -> Callable[..., Any]:
    """`fn`, recording (wall, CPU of the thread it runs on) per call while `recording` is set: the hooks are
    synchronous, so the thread's CPU meanwhile is theirs."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not recording.is_set():  # the span processor also sees the ungoverned runs' spans
            return fn(*args, **kwargs)
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            record.append((time.perf_counter() - started, time.thread_time() - cpu))

    return wrapper


class _Collections:
    """The cyclic garbage collector's collections per generation and their time, charged to the variant running."""

    def __init__(self) -> None:
        self.variant = ""
        self.count: collections.Counter[tuple[str, int]] = collections.Counter()
        self.seconds: dict[tuple[str, int], float] = collections.defaultdict(float)
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if not self.variant:
            return
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.count[self.variant, info["generation"]] += 1
        self.seconds[self.variant, info["generation"]] += time.perf_counter() - self._started

    def line(self, variant: str, runs: int) -> str:
        return ", ".join(
            f"generation {g}: {self.count[variant, g] / runs:.1f} x, {self.seconds[variant, g] * 1000 / runs:.2f} ms"
            for g in range(3)
        )


class _CountedOutcomes:
    """Stands in for the `cycles.lookahead` counter during the timed runs, tallying its outcomes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.outcomes: collections.Counter[str] = collections.Counter()

    def add(self, amount: int, attributes: Any = None, *args: Any, **kwargs: Any) -> None:
        self.outcomes[str((attributes or {}).get("outcome", ""))] += amount
        self.inner.add(amount, attributes, *args, **kwargs)


def profile(calls: int, model_ms: int, runs: int, framework: str, tool_ms: int = 0, concurrent: int = 0) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        authority, base_url = start_server(os.path.join(tmp, "bench.db"))
        server, model_url = start_model(model_ms, calls - 1)
        try:
            agents = make_agents(
                Env(base_url, setup(base_url), authority.pid), framework, model_url, tool_ms, ("none", "ours")
            )
            callback = next(c for c in agents["ours"].config.callbacks if isinstance(c, CyclesBudgetCallback))
            processor = ensure_processor()
            assert isinstance(processor, CyclesSpanProcessor)
            loop = asyncio.new_event_loop()

            def run(variant: str) -> None:
                if not concurrent:
                    agents[variant].run(PROMPT)
                    return

                async def wave() -> None:
                    await asyncio.gather(*(agents[variant].run_async(PROMPT) for _ in range(concurrent)))

                loop.run_until_complete(wave())

            for _ in range(3):
                run("none")
                run("ours")
            times: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in PHASES}
            recording = threading.Event()
            for name, _ in PHASES:
                owner: Any = processor if name == "on_end" else callback
                setattr(owner, name, _timed(times[name], getattr(owner, name), recording))
            walls = []
            counted = _CountedOutcomes(metrics.lookahead)
            metrics.lookahead = counted  # type: ignore[assignment]
            garbage = _Collections()
            gc.callbacks.append(garbage)
            used: dict[str, float] = collections.defaultdict(float)
            process_cpu = {"none": 0.0, "ours": 0.0}
            for _ in range(runs):
                for variant in ("none", "ours"):
                    garbage.variant = variant
                    cpu_before, cpu, started = _thread_cpu(), time.process_time(), time.perf_counter()
                    if variant == "ours":
                        recording.set()
                    run(variant)
                    recording.clear()
                    wall = time.perf_counter() - started
                    process_cpu[variant] += time.process_time() - cpu
                    if variant == "ours":
                        walls.append(wall)
                        for name, seconds in _thread_cpu().items():
                            used[name] += seconds - cpu_before.get(name, 0.0)
            garbage.variant = ""
            gc.callbacks.remove(garbage)
            metrics.lookahead = counted.inner
            loop.close()
        finally:
            stop(server)
            authority.terminate()
            authority.wait(10)
    per = f"wave of {concurrent} concurrent runs" if concurrent else "run"
    lines = [
        f"{framework}, {calls} LLM calls per run, {model_ms} ms model latency, {tool_ms} ms tool latency, {runs} "
        f"{'waves' if concurrent else 'runs'}; median {per} {statistics.median(walls) * 1000:.1f} ms.\n",
        f"| phase | calls per {per} | wall ms per call (median) | wall ms per {per} | CPU ms per {per} "
        "| what it does |",
        "|---|---|---|---|---|---|",
    ]
    for name, what in PHASES:
        samples = times[name]
        if samples:
            lines.append(
                f"| `{name}` | {len(samples) / runs:.0f} | {statistics.median(w for w, _ in samples) * 1000:.3f} "
                f"| {sum(w for w, _ in samples) * 1000 / runs:.2f} | {sum(c for _, c in samples) * 1000 / runs:.2f} "
                f"| {what} |"
            )
    hooks_cpu = sum(c for samples in times.values() for _, c in samples) * 1000 / runs
    outcomes = ", ".join(f"{name} {n}" for name, n in sorted(counted.outcomes.items())) or "none"
    lines += [
        "",
        f"Process CPU per {per}: {process_cpu['ours'] * 1000 / runs:.1f} ms governed, "
        f"{process_cpu['none'] * 1000 / runs:.1f} ms without a callback (alternating); the phases above "
        f"{hooks_cpu:.1f} ms of it.",
        "",
        f"Cyclic garbage collector per {per}: governed {garbage.line('ours', runs)}; "
        f"without a callback {garbage.line('none', runs)}.",
        "",
        f"Lookahead outcomes over the {runs} {'waves' if concurrent else 'runs'} (`cycles.lookahead`): {outcomes}.",
        "",
    ]
    lines += [f"| thread (governed runs) | CPU ms per {per} |", "|---|---|"]
    for name, seconds in sorted(used.items(), key=lambda item: -item[1]):
        if seconds > 0:
            lines.append(f"| {name} | {seconds * 1000 / runs:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--model-ms", type=int, default=20)
    parser.add_argument("--tool-ms", type=int, default=0)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--framework", default="tinyagent")
    parser.add_argument("--concurrent", type=int, default=0, help="runs per wave under one event loop (0: one run)")
    args = parser.parse_args(argv)
    print(profile(args.calls, args.model_ms, args.runs, args.framework, args.tool_ms, args.concurrent))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
