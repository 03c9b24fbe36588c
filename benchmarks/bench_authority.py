"""Benchmark the embedded authority over loopback HTTP and write the "Embedded authority" section of BENCHMARKS.md.

The authority runs in a subprocess (`python -m otel_cycles authority serve --db <tmp file>`, WAL SQLite); this
process is the client. Single-client latencies use a keep-alive `httpx.Client` (full HTTP round trips, JSON built
per request). The 32-client load uses a minimal raw asyncio HTTP/1.1 client (keep-alive sockets, one per client)
because httpx's own per-request CPU cost on this 2-core host would otherwise dominate the measurement.

Run: `.venv/bin/python benchmarks/bench_authority.py [--no-write] [--seconds 5]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
UNIT = "USD_MICROCENTS"
ADMIN_KEY = "bench-admin-key-0123456789"
SECTION = "## Embedded authority"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_server(db: str) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "otel_cycles", "authority", "serve", "--db", db, "--port", "0"]
    proc = subprocess.Popen(
        [*cmd, "--admin-key", ADMIN_KEY], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"authority did not start: {line!r}")
    return proc, match.group(1)


def setup(base_url: str) -> str:
    admin = {"X-Admin-API-Key": ADMIN_KEY}
    with httpx.Client(base_url=base_url, headers=admin) as c:
        c.post("/v1/admin/tenants", json={"tenant_id": "bench", "name": "bench"}).raise_for_status()
        key = c.post("/v1/admin/api-keys", json={"tenant_id": "bench", "name": "bench"}).json()["key_secret"]
        for scope in ("tenant:bench", "tenant:bench/workspace:prod"):
            body = {"scope": scope, "unit": UNIT, "allocated": {"unit": UNIT, "amount": 10**15}, "tenant_id": "bench"}
            c.post("/v1/admin/budgets", json=body).raise_for_status()
    return str(key)


def _reserve_body() -> dict[str, object]:
    return {
        "idempotency_key": uuid.uuid4().hex,
        "subject": {"tenant": "bench", "workspace": "prod", "agent": "a1"},
        "action": {"kind": "llm.completion", "name": "openai:gpt-4o-mini"},
        "estimate": {"unit": UNIT, "amount": 1000},
        "ttl_ms": 60000,
    }


def single_client(base_url: str, key: str, n: int) -> dict[str, float]:
    """Sequential round trips on one keep-alive connection; returns p50/p99 in ms per operation."""
    timings: dict[str, list[float]] = {k: [] for k in ("reserve", "commit", "release", "extend", "decide", "event",
                                                       "balances", "lifecycle")}  # fmt: skip
    with httpx.Client(base_url=base_url, headers={"X-Cycles-API-Key": key}) as c:

        def timed(name: str, method: str, path: str, **kwargs: object) -> httpx.Response:
            t0 = time.perf_counter()
            resp = c.request(method, path, **kwargs)  # type: ignore[arg-type]
            timings[name].append((time.perf_counter() - t0) * 1000)
            assert resp.status_code in (200, 201), resp.text
            return resp

        for i in range(n + 200):
            if i == 200:
                for v in timings.values():
                    v.clear()
            t0 = time.perf_counter()
            rid = timed("reserve", "POST", "/v1/reservations", json=_reserve_body()).json()["reservation_id"]
            body = {"idempotency_key": uuid.uuid4().hex, "actual": {"unit": UNIT, "amount": 900}}
            timed("commit", "POST", f"/v1/reservations/{rid}/commit", json=body)
            timings["lifecycle"].append((time.perf_counter() - t0) * 1000)
            if i % 4 == 0:
                rid2 = c.post("/v1/reservations", json=_reserve_body()).json()["reservation_id"]
                ext = {"idempotency_key": uuid.uuid4().hex, "extend_by_ms": 1000}
                timed("extend", "POST", f"/v1/reservations/{rid2}/extend", json=ext)
                rel = {"idempotency_key": uuid.uuid4().hex}
                timed("release", "POST", f"/v1/reservations/{rid2}/release", json=rel)
                dec = _reserve_body()
                del dec["ttl_ms"]
                timed("decide", "POST", "/v1/decide", json=dec)
                ev = {
                    "idempotency_key": uuid.uuid4().hex,
                    "subject": {"tenant": "bench", "workspace": "prod"},
                    "action": {"kind": "tool.search", "name": "web"},
                    "actual": {"unit": UNIT, "amount": 10},
                }
                timed("event", "POST", "/v1/events", json=ev)
                timed("balances", "GET", "/v1/balances", params={"tenant": "bench"})
    out: dict[str, float] = {}
    for name, values in timings.items():
        out[f"{name}_p50"] = statistics.median(values)
        out[f"{name}_p99"] = _pct(values, 0.99)
    return out


async def _raw_worker(host: str, port: int, key: str, deadline: float, lat: list[float], errors: list[str]) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    done = 0

    async def call(path: str, body: dict[str, object]) -> dict[str, object]:
        payload = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"X-Cycles-API-Key: {key}\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        writer.write(head.encode() + payload)
        raw = await reader.readuntil(b"\r\n\r\n")
        status = int(raw[9:12])
        length = int(re.search(rb"(?i)content-length: (\d+)", raw).group(1))  # type: ignore[union-attr]
        data = await reader.readexactly(length)
        if status != 200:
            errors.append(data.decode())
        result: dict[str, object] = json.loads(data)
        return result

    try:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            res = await call("/v1/reservations", _reserve_body())
            rid = res.get("reservation_id")
            commit: dict[str, object] = {"idempotency_key": uuid.uuid4().hex, "actual": {"unit": UNIT, "amount": 900}}
            await call(f"/v1/reservations/{rid}/commit", commit)
            lat.append((time.perf_counter() - t0) * 1000)
            done += 1
    finally:
        writer.close()
    return done


async def _concurrent(base_url: str, key: str, clients: int, seconds: float) -> dict[str, float]:
    host, port = base_url.removeprefix("http://").split(":")
    lat: list[float] = []
    errors: list[str] = []
    warm = time.perf_counter() + 1.0
    await asyncio.gather(*(_raw_worker(host, int(port), key, warm, [], errors) for _ in range(clients)))
    start = time.perf_counter()
    deadline = start + seconds
    counts = await asyncio.gather(*(_raw_worker(host, int(port), key, deadline, lat, errors) for _ in range(clients)))
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} errors, first: {errors[0]}")
    return {
        "lifecycles_per_s": sum(counts) / elapsed,
        "lifecycle_p50": statistics.median(lat),
        "lifecycle_p99": _pct(lat, 0.99),
        "lifecycles": float(sum(counts)),
    }


def write_section(text: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    start = current.find(SECTION)
    if start < 0:
        new = current.rstrip("\n") + "\n\n" + text
    else:
        nxt = current.find("\n## ", start + len(SECTION))
        new = current[:start] + text + (current[nxt + 1 :] if nxt >= 0 else "")
    path.write_text(new.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=2000, help="single-client reserve+commit iterations")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of the concurrent run")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        proc, base_url = start_server(os.path.join(tmp, "bench.db"))
        try:
            key = setup(base_url)
            single = single_client(base_url, key, args.iterations)
            conc = asyncio.run(_concurrent(base_url, key, args.clients, args.seconds))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    rows = [
        ("Reserve", single["reserve_p50"], single["reserve_p99"], "5.3–14.0 / 7.3–18.6"),
        ("Commit", single["commit_p50"], single["commit_p99"], "4.6–12.6 / 5.8–20.3"),
        ("Release", single["release_p50"], single["release_p99"], "4.8–14.0 p50"),
        ("Extend", single["extend_p50"], single["extend_p99"], "7.5–10.5 p50"),
        ("Decide", single["decide_p50"], single["decide_p99"], "4.7–10.4 p50"),
        ("Event", single["event_p50"], single["event_p99"], "4.3–13.6 p50"),
        ("GET balances", single["balances_p50"], single["balances_p99"], "4.1–6.3 p50"),
        ("Reserve+commit", single["lifecycle_p50"], single["lifecycle_p99"], "14.0–22.5 p50"),
    ]
    command = "`.venv/bin/python benchmarks/bench_authority.py`"
    host = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    lines = [
        SECTION,
        "",
        f"Produced by {command} on {time.strftime('%Y-%m-%d')} ({host}). The authority runs in a subprocess",
        "(`otel-cycles authority serve --db <tmp file>`: asyncio HTTP/1.1, SQLite WAL, `synchronous=NORMAL`); the",
        "benchmark process is the client, over loopback. Single-client figures: one keep-alive `httpx.Client`,",
        f"{args.iterations} reserve+commit iterations after 200 warm-ups (other operations on every 4th iteration).",
        f"Concurrent figure: {args.clients} clients on a minimal raw asyncio HTTP/1.1 client (httpx's per-request CPU",
        "would dominate on 2 cores), one keep-alive socket each, reserve then commit in a loop for"
        f" {args.seconds:g} s after a 1 s warm-up.",
        "Reference: `cycles-server` BENCHMARKS.md (Spring + Redis, AMD Threadripper 3990X 64 cores).",
        "",
        "| Operation | p50 ms | p99 ms | Reference server p50 / p99 ms |",
        "|---|---|---|---|",
        *(f"| {name} | {p50:.2f} | {p99:.2f} | {ref} |" for name, p50, p99, ref in rows),
        "",
        "| Load | This authority | Reference server |",
        "|---|---|---|",
        f"| {args.clients} concurrent clients, reserve+commit lifecycles/s | **{conc['lifecycles_per_s']:,.0f}** "
        f"(lifecycle p50 {conc['lifecycle_p50']:.1f} ms, p99 {conc['lifecycle_p99']:.1f} ms) "
        "| 794–2,632 (32 threads, 64-core host) |",
        "",
        "Targets: reserve p50 <= 2 ms with 1 client; >= 1,500 lifecycles/s with 32 clients.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    print("client: httpx (single client), raw asyncio sockets (32 clients)")
    if not args.no_write:
        write_section(text)
        print(f"updated {ROOT / 'BENCHMARKS.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
