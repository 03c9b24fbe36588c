"""Governance overhead per LLM call (ours vs the guide's recipe) and span throughput with our processor.

(a) Critical-path overhead: the time an agent spends inside the budget hooks for one LLM call (reserve, price,
    stamp, end the span — which runs the span processors) plus the end-of-run wait for settlement, divided per
    call. Both callbacks talk to the same embedded authority, running in its own process over loopback HTTP.
    The guide's recipe reserves and commits synchronously; ours reserves synchronously and commits in the
    background. The model call (between a call's before- and after-hook) and the agent's own work after it (tool
    execution, parsing: between one call's after-hook and the next call's before-hook) are each simulated with a
    sleep of the stated latency; that gap is when background commits happen in a real agent. 0 is the worst case:
    the previous call's commit then competes with the next reservation for the same single-threaded authority.
(b) Span throughput: spans/s through an SDK TracerProvider with CyclesSpanProcessor + BatchSpanProcessor versus
    BatchSpanProcessor alone (null exporter), alternating rounds in one process.

Run: `.venv/bin/python -m benchmarks.bench_governance [--calls 300] [--no-write]`
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from typing import Any

os.environ.setdefault("OTEL_BSP_SCHEDULE_DELAY", "200")

from any_agent.callbacks import Callback, Context
from any_agent.tracing.agent_trace import AgentTrace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from runcycles import CyclesClient, CyclesConfig

from benchmarks._results import write_section
from benchmarks.bench_authority import setup, start_server
from benchmarks.guide_recipe import GuideBudgetCallback
from otel_cycles import CyclesBudgetCallback, CyclesSpanProcessor

CALLS_PER_RUN = 3
MESSAGES = [{"role": "system", "content": "You are a research assistant." * 4}, {"role": "user", "content": "x" * 800}]


class _NullExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _run_once(callback: Callback, tracer: Any, model_latency_s: float) -> float:
    """One agent run of CALLS_PER_RUN LLM calls driven exactly as AnyAgent drives hooks; returns hook seconds."""
    invoke = tracer.start_span("invoke_agent [bench]", attributes={"gen_ai.request.model": "openai:gpt-4o"})
    context = Context(current_span=invoke, trace=AgentTrace(), tracer=tracer, shared={})
    spent = 0.0
    started = time.perf_counter()
    callback.before_agent_invocation(context, "prompt")
    spent += time.perf_counter() - started
    for n in range(CALLS_PER_RUN):
        span = tracer.start_span("call_llm gpt-4o")  # what AnyAgent's span generation does
        span.set_attributes({"gen_ai.operation.name": "call_llm", "gen_ai.request.model": "gpt-4o"})
        context.current_span = span
        started = time.perf_counter()
        callback.before_llm_call(context, messages=MESSAGES, model="gpt-4o")
        spent += time.perf_counter() - started
        time.sleep(model_latency_s)  # the model call
        span.set_attributes({"gen_ai.usage.input_tokens": 300 + n, "gen_ai.usage.output_tokens": 40 + n})
        started = time.perf_counter()
        callback.after_llm_call(context)
        span.end()  # AnyAgent's SpanEndCallback: runs the span processors
        spent += time.perf_counter() - started
        if n < CALLS_PER_RUN - 1:  # the last call's answer ends the run at once
            time.sleep(model_latency_s)  # the agent's own work before its next call (tools, parsing)
    invoke.end()
    started = time.perf_counter()
    callback.after_agent_invocation(context, "prompt")
    spent += time.perf_counter() - started
    return spent


def overhead(base_url: str, key: str, runs: int, model_latency_s: float, journal_dir: str) -> dict[str, float]:
    provider = TracerProvider()
    provider.add_span_processor(CyclesSpanProcessor())
    tracer = provider.get_tracer("any_agent")
    config = CyclesConfig(base_url=base_url, api_key=key, journal_dir=journal_dir)
    ours = CyclesBudgetCallback(client=CyclesClient(config), tenant="bench", agent="a1", attach_processor=False)
    guide = GuideBudgetCallback(CyclesClient(config), tenant="bench", agent="a1")
    samples: dict[str, list[float]] = {"ours": [], "guide": []}
    for warmup in (True, False):
        for _ in range(5 if warmup else runs):
            # Alternate so both see the same machine noise.
            for name, callback in (("ours", ours), ("guide", guide)):
                seconds = _run_once(callback, tracer, model_latency_s) / CALLS_PER_RUN
                if not warmup:
                    samples[name].append(seconds)
    ours_ms = statistics.median(samples["ours"]) * 1000
    guide_ms = statistics.median(samples["guide"]) * 1000
    return {"ours_ms": ours_ms, "guide_ms": guide_ms, "ratio": ours_ms / guide_ms}


def throughput(spans: int, rounds: int) -> dict[str, float]:
    def rate(with_cycles: bool) -> float:
        provider = TracerProvider()
        if with_cycles:
            provider.add_span_processor(CyclesSpanProcessor())
        batch = BatchSpanProcessor(_NullExporter(), max_queue_size=spans + 1)
        provider.add_span_processor(batch)
        tracer = provider.get_tracer("any_agent")
        started = time.perf_counter()
        for i in range(spans):
            with tracer.start_as_current_span("call_llm gpt-4o") as span:
                span.set_attributes({"gen_ai.usage.input_tokens": i, "gen_ai.usage.output_tokens": 1})
        elapsed = time.perf_counter() - started
        batch.force_flush()
        provider.shutdown()
        return spans / elapsed

    with_rates, without_rates = [], []
    for _ in range(rounds):
        without_rates.append(rate(False))
        with_rates.append(rate(True))
    with_rate, without_rate = statistics.median(with_rates), statistics.median(without_rates)
    return {"with": with_rate, "without": without_rate, "ratio": with_rate / without_rate}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=60, help="agent runs per callback (3 LLM calls each)")
    parser.add_argument("--spans", type=int, default=20_000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        server, base_url = start_server(os.path.join(tmp, "bench.db"))
        try:
            key = setup(base_url)
            results = {
                latency: overhead(base_url, key, args.runs, latency / 1000, os.path.join(tmp, "journal"))
                for latency in (0, 20)
            }
        finally:
            server.terminate()
            server.wait(10)
    spans = throughput(args.spans, rounds=5)
    lines = [
        "| model latency | guide recipe (sync reserve + commit) | otel-cycles | ratio (target <= 0.5) |",
        "|---|---|---|---|",
    ]
    for latency, r in results.items():
        lines.append(f"| {latency} ms | {r['guide_ms']:.2f} ms/call | {r['ours_ms']:.2f} ms/call | {r['ratio']:.2f} |")
    body = (
        "Command: `.venv/bin/python -m benchmarks.bench_governance`\n\n"
        "**(a) Governance time on the agent's critical path per LLM call** (median over "
        f"{args.runs} runs of {CALLS_PER_RUN} calls; hooks + span end + end-of-run settlement wait, authority in "
        "its own process over loopback):\n\n" + "\n".join(lines) + "\n\n"
        f"**(b) Span throughput** ({args.spans} spans x 5 alternating rounds, null exporter): BatchSpanProcessor "
        f"alone {spans['without']:,.0f} spans/s; with CyclesSpanProcessor {spans['with']:,.0f} spans/s; "
        f"ratio **{spans['ratio']:.2f}** (target >= 0.85).\n"
    )
    print(body)
    if not args.no_write:
        write_section("Governance overhead", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
