"""Governed-span throughput: what `CyclesSpanProcessor` adds to ending a span that carries a real reservation.

Each round makes `--spans` real reservations at the embedded authority (in its own process, not timed), opens one
`call_llm` span per reservation with token usage on it, registers the reservation for it and prices it, as the
callback's before- and after-hooks do. Timed: ending the spans, on the thread that ends them, through an SDK
TracerProvider with BatchSpanProcessor (null exporter) alone; with a processor in front of it that only looks each
span's reservation up (the least any processor that commits per span must do: the floor); and with
CyclesSpanProcessor in front of it, in a shuffled order every round. With CyclesSpanProcessor each end queues a real
commit, which the settlement worker sends meanwhile (it competes for the interpreter); the drain time and the process
CPU per span, worker included, are reported beside.

Run: `python -m benchmarks.bench_spans [--quick] [--no-write]`
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from runcycles import CyclesClient, CyclesConfig
from runcycles.client import _serialize_body
from runcycles.response import CyclesResponse

from benchmarks._results import RESULTS_DIR, write_json, write_section
from benchmarks.bench_authority import setup, start_server
from otel_cycles import CyclesSpanProcessor
from otel_cycles._accounting import decide
from otel_cycles._lean_client import lean_client
from otel_cycles._registry import REGISTRY, PendingReservation, RunState, span_key
from otel_cycles._settlement import settlement_for
from otel_cycles.pricing import normalize_model_id

COMMAND = "python -m benchmarks.bench_spans"
SUBJECT = {"tenant": "bench", "agent": "a1"}
ACTION = {"kind": "llm.completion", "name": "openai:gpt-4o"}


class _NullExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _LookupOnly(SpanProcessor):
    """The floor: find the ended span's reservation, and do nothing with it."""

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is not None:
            REGISTRY.get((context.trace_id, context.span_id))


VARIANTS = ("bsp", "lookup", "cycles")


def _reserve_many(client: CyclesClient, n: int, threads: bool = True) -> list[tuple[str, str]]:
    def one(_: int) -> tuple[str, str]:
        key = str(uuid.uuid4())
        body = {
            "idempotency_key": key,
            "subject": SUBJECT,
            "action": ACTION,
            "estimate": {"unit": "USD_MICROCENTS", "amount": 100_000},
            "ttl_ms": 600_000,
        }
        response = client.create_reservation(body)
        assert response.is_success and response.body is not None, response.error_message
        return key, str(response.body["reservation_id"])

    if not threads:
        return [one(i) for i in range(n)]
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(n)))


def _round(client: CyclesClient, spans: int, variant: str) -> dict[str, float]:
    provider = TracerProvider()
    if variant == "cycles":
        provider.add_span_processor(CyclesSpanProcessor())
    elif variant == "lookup":
        provider.add_span_processor(_LookupOnly())
    batch = BatchSpanProcessor(_NullExporter(), max_queue_size=max(spans + 1, 512))
    provider.add_span_processor(batch)
    tracer = provider.get_tracer("any_agent")
    reservations = _reserve_many(client, spans)
    settlement = settlement_for(client)
    run = RunState(run_id=uuid.uuid4().hex)
    model = normalize_model_id("openai:gpt-4o")
    opened = []
    for i, (key, reservation_id) in enumerate(reservations):
        span = tracer.start_span("call_llm gpt-4o")
        usage = {"gen_ai.usage.input_tokens": 300 + i, "gen_ai.usage.output_tokens": 40}
        span.set_attributes({"gen_ai.operation.name": "call_llm", **usage})
        # Registered in every variant (the lookup is part of a processor's cost); only CyclesSpanProcessor pops it.
        pending = PendingReservation(span, run, settlement, ACTION["kind"], ACTION, SUBJECT, 100_000, key, None)
        pending.reservation_id, pending.model = reservation_id, model
        # As the callback's after-hook does before the span ends: price the call (not timed; see the module docstring).
        pending.outcome = decide(pending, usage, errored=False)
        span_key_ = span_key(span)
        assert span_key_ is not None
        REGISTRY.add(span_key_, pending)
        opened.append((span_key_, span))
    gc.collect()
    gc.disable()
    try:
        cpu = time.process_time()
        started = time.perf_counter()
        for _, span in opened:
            span.end()
        elapsed = time.perf_counter() - started
        settlement.flush(60)
        drained = time.perf_counter() - started
        cpu = time.process_time() - cpu
    finally:
        gc.enable()
    for opened_key, _ in opened:
        leftover = REGISTRY.pop(opened_key)
        if leftover is not None:  # not CyclesSpanProcessor: release what nothing settled
            body = {"idempotency_key": f"r-{leftover.idempotency_key}"}
            client.release_reservation(leftover.reservation_id or "", body)
    batch.force_flush()
    provider.shutdown()
    return {"end_us": elapsed / spans * 1e6, "drain_s": drained, "cpu_us": cpu / spans * 1e6}


class _HttpClientCyclesClient(CyclesClient):
    """runcycles' client with its POSTs sent through `http.client` on one keep-alive connection: what the lean
    transport did before it read and wrote HTTP itself, kept here as the comparison that justifies that."""

    def __init__(self, client: CyclesClient) -> None:
        super().__init__(client._config)
        url = urlsplit(client._config.base_url)
        self._connection = http.client.HTTPConnection(url.hostname or "", url.port)

    def _post(self, path: str, body: Any) -> CyclesResponse:
        data = _serialize_body(body)
        headers = {
            "X-Cycles-API-Key": self._config.api_key,
            "Content-Type": "application/json",
            "X-Idempotency-Key": str(data["idempotency_key"]),
        }
        self._connection.request("POST", path, body=json.dumps(data).encode(), headers=headers)
        response = self._connection.getresponse()
        raw = response.read()
        return CyclesResponse.success(response.status, json.loads(raw), headers=dict(response.getheaders()))


def transport(client: CyclesClient, requests: int) -> dict[str, float]:
    """Process CPU and wall time per reservation through runcycles' httpx client, through `http.client` and through
    the lean transport, interleaved in a shuffled order in rounds of 50 requests."""
    senders = {"httpx": client, "http_client": _HttpClientCyclesClient(client), "lean": lean_client(client)}
    cpu = dict.fromkeys(senders, 0.0)
    wall = dict.fromkeys(senders, 0.0)
    for sender in senders.values():
        _reserve_many(sender, 20, threads=False)  # warm up: connections
    order = list(senders)
    for _ in range(requests // 50):
        random.shuffle(order)
        for name in order:
            cpu_at, wall_at = time.process_time(), time.perf_counter()
            _reserve_many(senders[name], 50, threads=False)
            cpu[name] += time.process_time() - cpu_at
            wall[name] += time.perf_counter() - wall_at
    done = requests // 50 * 50
    out = {}
    for name in senders:
        out[f"{name}_cpu_us"] = cpu[name] / done * 1e6
        out[f"{name}_wall_us"] = wall[name] / done * 1e6
    return out


def throughput(client: CyclesClient, spans: int, rounds: int) -> dict[str, Any]:
    measured: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    order = list(VARIANTS)
    for _ in range(rounds):
        random.shuffle(order)
        for variant in order:
            measured[variant].append(_round(client, spans, variant))

    def median(variant: str, figure: str) -> float:
        return statistics.median(m[figure] for m in measured[variant])

    def ratio(variant: str) -> float:  # per round, then the median: both sides saw the same machine
        return statistics.median(
            m["end_us"] / b["end_us"] for m, b in zip(measured[variant], measured["bsp"], strict=True)
        )

    out: dict[str, Any] = {"spans": spans, "rounds": rounds}
    for variant in VARIANTS:
        out[f"{variant}_end_us"] = median(variant, "end_us")
        out[f"{variant}_spans_per_s"] = 1e6 / out[f"{variant}_end_us"]
        out[f"{variant}_cpu_us"] = median(variant, "cpu_us")
    out["lookup_ratio"], out["ratio"] = ratio("lookup"), ratio("cycles")
    out["commits_per_s"] = spans / median("cycles", "drain_s")
    return out


def report(r: dict[str, Any], command: str) -> str:
    return (
        f"Command: `{command}` (results also in `benchmarks/results/spans.json`).\n\n"
        f"{r['spans']} `call_llm` spans per round, each carrying a real reservation, x {r['rounds']} rounds, the "
        "three variants in a shuffled order every round (median of per-round figures):\n\n"
        "| | BatchSpanProcessor alone | + a processor that only looks the reservation up (floor) "
        "| + CyclesSpanProcessor |\n|---|---|---|---|\n"
        f"| `span.end()` on the ending thread | {r['bsp_end_us']:.1f} us ({r['bsp_spans_per_s']:,.0f} spans/s) "
        f"| {r['lookup_end_us']:.1f} us ({r['lookup_spans_per_s']:,.0f} spans/s) "
        f"| {r['cycles_end_us']:.1f} us ({r['cycles_spans_per_s']:,.0f} spans/s) |\n"
        f"| ratio of end times (target <= 1.15) | 1 | {r['lookup_ratio']:.2f} | **{r['ratio']:.2f}** |\n"
        f"| process CPU per span, background threads included | {r['bsp_cpu_us']:.0f} us "
        f"| {r['lookup_cpu_us']:.0f} us | {r['cycles_cpu_us']:.0f} us (a real commit each) |\n"
        f"| commits sent per second by the settlement worker | | | {r['commits_per_s']:,.0f} |\n\n"
        "One reservation request, sequential, same process and authority, the three clients interleaved: through "
        f"runcycles' httpx client {r['httpx_cpu_us']:.0f} us CPU ({r['httpx_wall_us']:.0f} us wall); through "
        f"`http.client` {r['http_client_cpu_us']:.0f} us CPU ({r['http_client_wall_us']:.0f} us wall); through the "
        f"lean transport (`otel_cycles._lean_client`) {r['lean_cpu_us']:.0f} us CPU ({r['lean_wall_us']:.0f} us "
        "wall).\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--spans", type=int, default=None, help="spans per round (default 2000, quick 500)")
    parser.add_argument("--rounds", type=int, default=None, help="paired rounds (default 6, quick 2)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    spans = args.spans or (500 if args.quick else 2000)
    rounds = args.rounds or (2 if args.quick else 6)
    with tempfile.TemporaryDirectory() as tmp:
        authority, base_url = start_server(os.path.join(tmp, "bench.db"))
        try:
            config = CyclesConfig(base_url=base_url, api_key=setup(base_url), journal_dir=os.path.join(tmp, "j"))
            client = CyclesClient(config)
            result = throughput(client, spans, rounds) | transport(client, 300)
        finally:
            authority.terminate()
            authority.wait(10)
    command = (COMMAND + " " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    body = report(result, command.replace(" --no-write", ""))
    print(body)
    if not args.no_write:
        write_section("Governed-span throughput", body)
        write_json(RESULTS_DIR / "spans.json", {"command": command, **result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
