"""What governance costs a real agent run: otel-cycles versus the integration guide's recipe, end to end.

Real AnyAgent agents (tinyagent, openai) run against the scripted OpenAI-compatible model and the embedded authority,
each in its own process over loopback. Every answer but a run's last asks for one tool call, so a run of n LLM calls
makes n - 1 tool calls (tinyagent's final answer is a tool call too, governed like any other). Three variants of the
same agent run in a freshly shuffled order every round: no callback (the baseline), the guide's recipe
(`benchmarks.guide_recipe`: a synchronous reserve and commit around every LLM call and tool call) and otel-cycles.
A fourth variant, the guide's recipe on otel-cycles' transport (`guide_lean`: the same synchronous reserve and commit
per call, through `otel_cycles._lean_client`), is the floor of any design that decides every call by a reservation
made when the call is known and settles before `run()` returns: it makes exactly the round trips that cannot be taken
off a run's critical path, with the cheapest client we have; and a fifth, otel-cycles without the end-of-run wait
(`ours_nowait`). Overhead per run = the variant's wall time minus the baseline's in the same round; figures are
medians over rounds. CPU is the benchmark process's CPU time (every thread, not the authority's or the model's), the
same difference, divided by the governed calls of a run; the authority's CPU (its process, every thread, from
/proc/<pid>/task/*/schedstat) is reported per run or per wave beside it.

Concurrency: N runs of one agent at once under one event loop (`asyncio.gather` of `run_async`), 50 ms model
latency, 2 LLM calls + 1 tool call per run (tinyagent: + its final-answer tool call); overhead per wave = the wave's
wall time minus the baseline wave's. The waves add the guide's recipe made async-native (`guide_async`, see
`benchmarks.guide_async`: coroutine hooks on raw asyncio streams, nothing but the requests), the least a design that
reserves before and commits after every call can cost runs sharing a loop.

Run: `python -m benchmarks.bench_agents [--quick] [--no-write] [--also ours_no_lookahead]` (`--quick`: fewer rounds
and rows; `--also`: a variant beside otel-cycles in the rows' rounds, to weigh a design choice, see `EXTRA_VARIANTS`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import glob
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("OTEL_BSP_SCHEDULE_DELAY", "200")
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")  # the openai framework's own trace upload

from any_agent import AgentConfig, AnyAgent
from any_agent.callbacks import Callback
from runcycles import CyclesClient, CyclesConfig

from benchmarks._results import RESULTS_DIR, write_json, write_section
from benchmarks.bench_authority import setup, start_server
from benchmarks.guide_async import AsyncGuideBudgetCallback
from benchmarks.guide_recipe import GuideBudgetCallback
from otel_cycles import CyclesBudgetCallback
from otel_cycles._lean_client import lean_client

VARIANTS = ("none", "guide", "guide_lean", "ours", "ours_nowait")
"""`guide_lean`: the guide's recipe through our transport (the floor, see above); `ours_nowait`: otel-cycles with
`settle_timeout_s=0` (the end of a run does not wait for its commits)."""
WAVE_VARIANTS = ("none", "guide", "guide_lean", "guide_async", "ours")
EXTRA_VARIANTS = {
    "ours_no_lookahead": "otel-cycles with lookaheads off (`lookahead=False`): every call reserves when it comes",
    "guide_async": "the guide's recipe async-native (`benchmarks.guide_async`; tinyagent only, which awaits hooks)",
}
"""Variants `--also` adds to the rows, to compare a design choice side by side."""
FRAMEWORKS = ("tinyagent", "openai")
LATENCY_ROWS = ((0, 0), (20, 0), (200, 50))
"""(model latency ms, tool latency ms)."""
CALLS = (1, 8)
"""LLM calls per run."""
WAVES = (1, 4, 16, 64)
WAVE_MODEL_MS = 50
COMMAND = "python -m benchmarks.bench_agents"

_MODEL_SERVER = """
import sys, time
from otel_cycles.testing import ScriptedModel
model = ScriptedModel(delay=float(sys.argv[1]) / 1000, tool_rounds=int(sys.argv[2]), tools=["search_web"]).start()
print(model.base_url, flush=True)
sys.stdin.read()
"""


def start_model(latency_ms: int, tool_rounds: int) -> tuple[subprocess.Popen[str], str]:
    """The scripted model in its own process (its serving threads then take no CPU from the agents measured)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _MODEL_SERVER, str(latency_ms), str(tool_rounds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not re.match(r"http://127\.0\.0\.1:\d+", line):
        proc.kill()
        raise RuntimeError(f"scripted model did not start: {line!r}")
    return proc, line


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    proc.terminate()
    proc.wait(10)


def search_tool(latency_ms: int) -> Callable[[str], Coroutine[Any, Any, str]]:
    async def search_web(query: str) -> str:
        """Search the web for `query` and return the top results.

        Args:
            query: What to search for.
        """
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)
        return f"Top results for {query}: budgets, reservations, commits."

    return search_web


def process_cpu_s(pid: int) -> float:
    """CPU time of process `pid` so far, every thread, in seconds (schedstat: nanoseconds, unlike /proc/<pid>/stat's
    10 ms ticks, which are coarser than a run's authority time)."""
    total = 0
    for stat in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(stat) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total / 1e9


@dataclass
class Env:
    base_url: str
    key: str
    authority_pid: int

    def callback(self, variant: str) -> list[Callback]:
        client = CyclesClient(CyclesConfig(base_url=self.base_url, api_key=self.key))
        if variant == "guide":
            return [GuideBudgetCallback(client, tenant="bench", agent="a1")]
        if variant == "guide_lean":
            return [GuideBudgetCallback(lean_client(client), tenant="bench", agent="a1")]
        if variant == "guide_async":
            return [AsyncGuideBudgetCallback(self.base_url, self.key, tenant="bench", agent="a1")]
        if variant == "ours":
            return [CyclesBudgetCallback(client=client, tenant="bench", agent="a1")]
        if variant == "ours_nowait":
            return [CyclesBudgetCallback(client=client, tenant="bench", agent="a1", settle_timeout_s=0)]
        if variant == "ours_no_lookahead":
            return [CyclesBudgetCallback(client=client, tenant="bench", agent="a1", lookahead=False)]
        return []


def make_agents(
    env: Env, framework: str, model_url: str, tool_ms: int, variants: tuple[str, ...] = VARIANTS
) -> dict[str, AnyAgent]:
    return {
        variant: AnyAgent.create(
            framework,
            AgentConfig(
                model_id="openai:gpt-4o",
                api_base=model_url,
                api_key="sk-fake",
                instructions="You are a research assistant. Use the search tool, then answer.",
                tools=[search_tool(tool_ms)],
                callbacks=env.callback(variant),
            ),
        )
        for variant in variants
    }


def governed_calls(trace: Any) -> int:
    """LLM calls and tool calls in a run's trace: what the guide reserves for."""
    return sum(
        1 for span in trace.spans if span.attributes.get("gen_ai.operation.name") in ("call_llm", "execute_tool")
    )


PROMPT = "Find out how budget reservations work and summarise."


Sample = tuple[float, float, float]
"""Wall time, this process's CPU time and the authority's CPU time of one run (or wave), in seconds."""


def _timed(run: Callable[[], Any], authority_pid: int) -> Sample:
    wall, cpu, authority = time.perf_counter(), time.process_time(), process_cpu_s(authority_pid)
    run()
    return time.perf_counter() - wall, time.process_time() - cpu, process_cpu_s(authority_pid) - authority


def run_row(
    env: Env, framework: str, model_ms: int, tool_ms: int, calls: int, rounds: int, variants: tuple[str, ...] = VARIANTS
) -> dict[str, Any]:
    """Overhead per run of the guide and of otel-cycles at one latency and run length."""
    server, url = start_model(model_ms, calls - 1)
    try:
        agents = make_agents(env, framework, url, tool_ms, variants)
        # Warm up every variant (imports, connection pools, price caches) and count the governed calls of a run.
        spans = {variant: governed_calls(agents[variant].run(PROMPT)) for variant in variants for _ in range(2)}
        samples: dict[str, list[Sample]] = {variant: [] for variant in variants}
        order = list(variants)
        for _ in range(rounds):
            random.shuffle(order)
            gc.collect()
            for variant in order:
                run = lambda v=variant: agents[v].run(PROMPT)  # noqa: E731
                samples[variant].append(_timed(run, env.authority_pid))
    finally:
        stop(server)
    return summarise(samples, spans["guide"], per="run") | {
        "framework": framework,
        "model_ms": model_ms,
        "tool_ms": tool_ms,
        "llm_calls": calls,
        "rounds": rounds,
    }


def summarise(samples: dict[str, list[Sample]], governed: int, per: str) -> dict[str, Any]:
    """Paired differences against the ungoverned variant of the same round, medians over rounds; each ratio with its
    95 % bootstrap interval (`ratio_interval`)."""
    out: dict[str, Any] = {"governed_calls": governed}
    for variant in (v for v in samples if v != "none"):
        pairs = list(zip(samples[variant], samples["none"], strict=True))
        out[f"{variant}_ms"] = statistics.median(v[0] - b[0] for v, b in pairs) * 1000
        out[f"{variant}_cpu_ms_per_call"] = statistics.median(v[1] - b[1] for v, b in pairs) * 1000 / governed
        out[f"{variant}_authority_cpu_ms"] = statistics.median(v[2] for v in samples[variant]) * 1000
    out["none_ms"] = statistics.median(s[0] for s in samples["none"]) * 1000
    out["ratio"] = out["ours_ms"] / out["guide_ms"] if out["guide_ms"] > 0 else float("nan")
    out["ratio_interval"] = ratio_interval(samples, "ours")
    for variant in (v for v in samples if v not in ("none", "guide", "ours")):
        if f"{variant}_ms" in out:
            out[f"{variant}_ratio"] = out[f"{variant}_ms"] / out["guide_ms"] if out["guide_ms"] > 0 else float("nan")
            out[f"{variant}_ratio_interval"] = ratio_interval(samples, variant)
    out["cpu_ratio"] = (
        out["ours_cpu_ms_per_call"] / out["guide_cpu_ms_per_call"] if out["guide_cpu_ms_per_call"] > 0 else float("nan")
    )
    return out


BOOTSTRAP_RESAMPLES = 2000


def ratio_interval(samples: dict[str, list[Sample]], variant: str) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of `variant`'s ratio (its median overhead over the guide's): whole rounds
    are resampled, so each keeps its pairing with the ungoverned run and the guide's run of the same round. Seeded,
    so the same samples always give the same interval. How far a ratio can move when the same code is run again."""
    rounds = list(zip(samples[variant], samples["guide"], samples["none"], strict=True))
    rng = random.Random(0)
    ratios = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        drawn = rng.choices(rounds, k=len(rounds))
        guide = statistics.median(g[0] - n[0] for _, g, n in drawn)
        if guide > 0:
            ratios.append(statistics.median(v[0] - n[0] for v, _, n in drawn) / guide)
    if not ratios:
        return float("nan"), float("nan")
    ratios.sort()
    return ratios[int(0.025 * len(ratios))], ratios[min(len(ratios) - 1, int(0.975 * len(ratios)))]


def run_waves(env: Env, framework: str, sizes: tuple[int, ...], rounds: int) -> list[dict[str, Any]]:
    """N concurrent `run_async` runs of one agent per variant, under one event loop."""
    server, url = start_model(WAVE_MODEL_MS, 1)
    results = []
    try:
        agents = make_agents(env, framework, url, 0, WAVE_VARIANTS)
        loop = asyncio.new_event_loop()

        def wave(variant: str, n: int) -> None:
            async def all_runs() -> None:
                await asyncio.gather(*(agents[variant].run_async(PROMPT) for _ in range(n)))

            loop.run_until_complete(all_runs())

        governed = governed_calls(loop.run_until_complete(agents["guide"].run_async(PROMPT)))
        for n in sizes:
            for variant in WAVE_VARIANTS:
                wave(variant, n)  # warm-up: connection pools grow to n
            samples: dict[str, list[Sample]] = {variant: [] for variant in WAVE_VARIANTS}
            order = list(WAVE_VARIANTS)
            for _ in range(rounds):
                random.shuffle(order)
                gc.collect()
                for variant in order:
                    one = lambda v=variant, n=n: wave(v, n)  # noqa: E731
                    samples[variant].append(_timed(one, env.authority_pid))
            row = summarise(samples, governed * n, per="wave")
            row |= {"framework": framework, "concurrent": n, "rounds": rounds, "model_ms": WAVE_MODEL_MS}
            wave_s = {v: statistics.median(s[0] for s in samples[v]) for v in WAVE_VARIANTS}
            row["wave_ms"] = {v: wave_s[v] * 1000 for v in WAVE_VARIANTS}
            row["governed_calls_per_s"] = {v: governed * n / wave_s[v] for v in WAVE_VARIANTS if v != "none"}
            results.append(row)
            print(_wave_line(row), flush=True)
        loop.close()
    finally:
        stop(server)
    return results


def _ratio(r: dict[str, Any], key: str, *, bold: bool = False) -> str:
    """A ratio with its 95 % bootstrap interval: `0.70 [0.62-0.78]`."""
    low, high = r[f"{key}_interval"]
    value = f"**{r[key]:.2f}**" if bold else f"{r[key]:.2f}"
    return f"{value} [{low:.2f}-{high:.2f}]"


def _row_line(r: dict[str, Any]) -> str:
    return (
        f"| {r['framework']} | {r['model_ms']} / {r['tool_ms']} ms | {r['llm_calls']} ({r['governed_calls']}) "
        f"| {r['none_ms']:.1f} ms | {r['guide_ms']:.2f} ms "
        f"| {r['guide_lean_ms']:.2f} ms ({_ratio(r, 'guide_lean_ratio')}) "
        f"| {r['ours_ms']:.2f} ms | {_ratio(r, 'ratio', bold=True)} "
        f"| {r['ours_nowait_ms']:.2f} ms ({_ratio(r, 'ours_nowait_ratio')}) "
        f"| {r['guide_cpu_ms_per_call']:.2f} / {r['ours_cpu_ms_per_call']:.2f} ms "
        f"| {r['guide_authority_cpu_ms']:.1f} / {r['ours_authority_cpu_ms']:.1f} ms |"
    )


def _wave_line(r: dict[str, Any]) -> str:
    w, rate = r["wave_ms"], r["governed_calls_per_s"]
    return (
        f"| {r['framework']} | {r['concurrent']} | {w['none']:.0f} / {w['guide']:.0f} / {w['ours']:.0f} ms "
        f"| {r['guide_ms']:.1f} ms | {r['guide_lean_ms']:.1f} ms ({_ratio(r, 'guide_lean_ratio')}) "
        f"| {r['guide_async_ms']:.1f} ms ({_ratio(r, 'guide_async_ratio')}) "
        f"| {r['ours_ms']:.1f} ms | {_ratio(r, 'ratio', bold=True)} "
        f"| {rate['guide']:,.0f} / {rate['guide_lean']:,.0f} / {rate['guide_async']:,.0f} / {rate['ours']:,.0f} "
        f"| {r['guide_async_cpu_ms_per_call']:.2f} / {r['ours_cpu_ms_per_call']:.2f} ms "
        f"| {r['guide_authority_cpu_ms']:.0f} / {r['ours_authority_cpu_ms']:.0f} ms |"
    )


def report(rows: list[dict[str, Any]], waves: list[dict[str, Any]], command: str) -> str:
    head = (
        "| framework | model / tool latency | LLM calls per run (governed calls) | ungoverned run | guide overhead"
        " per run | floor: the guide's recipe on our transport, overhead (ratio) | otel-cycles overhead per run"
        " | ratio | `settle_timeout_s=0`: overhead (ratio) | CPU per governed call, guide / ours"
        " | authority CPU per run, guide / ours |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    wave_head = (
        "| framework | concurrent runs | wave wall time, none / guide / ours | guide overhead per wave"
        " | the guide's recipe on our transport, overhead per wave (ratio)"
        " | the guide's recipe async-native (`guide_async`), overhead per wave (ratio)"
        " | otel-cycles overhead per wave | ratio"
        " | governed calls/s, guide / on our transport / async-native / ours"
        " | CPU per governed call, async-native / ours"
        " | authority CPU per wave, guide / ours |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    return (
        f"Command: `{command}` (results also in `benchmarks/results/agents.json`). The ratios come from the same "
        "rounds, variants shuffled in every round. The floor is the guide's recipe (a synchronous reserve and commit "
        "per call) through otel-cycles' transport: the round trips no design can take off the critical path when "
        "every call is decided by a reservation and balances are settled when `run()` returns. "
        "`settle_timeout_s=0` is otel-cycles without the end-of-run wait for the run's commits (balances then settle "
        "about a round trip after `run()` returns).\n\n"
        "Each ratio is followed by its 95 % bootstrap interval over the rounds (whole rounds resampled; "
        "`ratio_interval` in `benchmarks/bench_agents.py`): how far it may move when the same code runs again.\n\n"
        "**Overhead per run** (wall time minus the ungoverned run of the same round, median over rounds):\n\n"
        + head
        + "\n"
        + "\n".join(_row_line(r) for r in rows)
        + f"\n\n**Concurrent runs** (one agent, N `run_async` runs under one event loop, {WAVE_MODEL_MS} ms model "
        "latency, one tool round per run). Runs sharing a loop overlap each other's round trips, so the guide's "
        "recipe on our transport is no floor here: the guide's recipe made async-native (`benchmarks.guide_async`: "
        "coroutine hooks on raw asyncio streams, no thread, nothing but the requests) shows what the protocol's own "
        "round trips cost a wave; the rest of otel-cycles' overhead is its CPU per governed call.\n\n"
        + wave_head
        + "\n"
        + "\n".join(_wave_line(r) for r in waves)
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, tinyagent only")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per row (default 25, quick 8)")
    parser.add_argument("--frameworks", default=None, help="comma-separated (default tinyagent,openai)")
    parser.add_argument("--waves", default=None, help="concurrency levels, e.g. 1,4 (default 1,4,16,64; 'none')")
    parser.add_argument("--rows", default=None, help="model/tool/calls triples, e.g. 20/0/8,0/0/1 ('none': no rows)")
    parser.add_argument("--also", default="", help=f"extra row variants, comma-separated: {', '.join(EXTRA_VARIANTS)}")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    extra = tuple(v for v in args.also.split(",") if v)
    if unknown := set(extra) - set(EXTRA_VARIANTS):
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    rounds = args.rounds or (8 if args.quick else 25)
    frameworks = args.frameworks.split(",") if args.frameworks else (["tinyagent"] if args.quick else FRAMEWORKS)
    if "guide_async" in extra and frameworks != ["tinyagent"]:
        parser.error("--also guide_async needs --frameworks tinyagent: only tinyagent awaits coroutine hooks")
    if args.waves == "none":
        sizes: tuple[int, ...] = ()
    else:
        sizes = tuple(int(n) for n in args.waves.split(",")) if args.waves else ((1, 16) if args.quick else WAVES)
    if args.rows == "none":
        rows_spec = []
    elif args.rows:
        rows_spec = [tuple(int(x) for x in spec.split("/")) for spec in args.rows.split(",")]
    else:
        rows_spec = [(m, t, c) for m, t in LATENCY_ROWS for c in CALLS]
    rows: list[dict[str, Any]] = []
    waves: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        authority, base_url = start_server(os.path.join(tmp, "bench.db"))
        try:
            env = Env(base_url, setup(base_url), authority.pid)
            for framework in frameworks:
                for model_ms, tool_ms, calls in rows_spec:
                    # Long runs get fewer rounds, so a row takes about a minute at most.
                    run_s = calls * model_ms / 1000 + (calls - 1) * tool_ms / 1000
                    n = max(5, min(rounds, int(20 / max(run_s, 0.05))))
                    rows.append(run_row(env, framework, model_ms, tool_ms, calls, n, VARIANTS + extra))
                    print(_row_line(rows[-1]), flush=True)
            if sizes:
                waves = run_waves(env, "tinyagent", sizes, max(4, rounds // 2))
        finally:
            authority.terminate()
            authority.wait(10)
    command = COMMAND + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    body = report(rows, waves, command.replace(" --no-write", ""))
    for variant in extra:
        body += f"\n`{variant}`: {EXTRA_VARIANTS[variant]}, beside otel-cycles in the same rounds:\n\n"
        body += "| framework | model / tool latency | LLM calls | otel-cycles ratio | this variant's ratio |\n"
        body += "|---|---|---|---|---|\n"
        for r in rows:
            body += (
                f"| {r['framework']} | {r['model_ms']} / {r['tool_ms']} ms | {r['llm_calls']} "
                f"| {_ratio(r, 'ratio', bold=True)} | {_ratio(r, f'{variant}_ratio')} |\n"
            )
    print(body)
    if not args.no_write:
        write_section("Governance overhead on real agent runs", body)
        write_json(RESULTS_DIR / "agents.json", {"command": command, "rows": rows, "waves": waves})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
