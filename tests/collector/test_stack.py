"""The documented local setup: `collector/otelcol.sh` refuses a Collector that would export to its own receivers, and
`collector/stack.sh` (Collector + Jaeger + Prometheus, no Docker) starts, receives `otel-cycles demo --otlp ...` so
that its traces are queryable in Jaeger and its metrics in Prometheus, and stops leaving nothing running.

Every port is moved to a free one and the state directory to a temporary one, so the test never meets a stack the
user runs. Without Go or Prometheus the stack tests skip locally and fail under CI.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.collector.collector_harness import (
    COLLECTOR_DIR,
    JaegerApi,
    PrometheusApi,
    build_collector,
    build_jaeger,
    free_port,
    listening,
    prometheus_binary,
    wait_for,
)

# Covers a first, uncached build of the Collector or Jaeger in whichever test triggers it.
pytestmark = pytest.mark.timeout(50 * 60)

STACK = COLLECTOR_DIR / "stack.sh"
OTELCOL = COLLECTOR_DIR / "otelcol.sh"
REPO = COLLECTOR_DIR.parent
COMPONENTS = ("jaeger", "collector", "prometheus")
DEMO_SERVICE = "otel-cycles-demo"
MICROCENTS_PER_USD = 100_000_000


def _clean_environment() -> dict[str, str]:
    """The test process's environment without any setting of the stack, the Collector or OpenTelemetry."""
    prefixes = ("CYCLES_", "JAEGER_", "STACK_", "OTEL_", "PYTEST_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


# --- otelcol.sh: no exporter may point at the Collector's own receivers ----------------------------------------


@pytest.mark.parametrize(
    ("env", "refused"),
    [
        pytest.param({"CYCLES_JAEGER_OTLP_ENDPOINT": "localhost:4317"}, True, id="jaeger-at-own-grpc-receiver"),
        pytest.param({"CYCLES_JAEGER_OTLP_ENDPOINT": "127.0.0.1:4318"}, True, id="jaeger-at-own-http-receiver"),
        pytest.param({"CYCLES_TEMPO_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True, id="tempo-at-own-http-receiver"),
        pytest.param(
            {"CYCLES_OTLP_GRPC_ENDPOINT": "127.0.0.1:5317", "CYCLES_JAEGER_OTLP_ENDPOINT": "localhost:5317"},
            True,
            id="moved-receiver",
        ),
        pytest.param({"CYCLES_JAEGER_OTLP_ENDPOINT": "127.0.0.1:14317"}, False, id="local-stack-jaeger"),
        pytest.param(
            {"CYCLES_OTLP_GRPC_ENDPOINT": "127.0.0.1:5317", "CYCLES_JAEGER_OTLP_ENDPOINT": "localhost:4317"},
            False,
            id="receiver-moved-away",
        ),
        pytest.param({}, False, id="defaults"),
    ],
)
def test_otelcol_refuses_an_exporter_pointing_at_its_own_receiver(env: dict[str, str], refused: bool) -> None:
    done = subprocess.run(
        [str(OTELCOL), "check"], env={**_clean_environment(), **env}, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == (2 if refused else 0), done.stderr
    assert ("refusing to start" in done.stderr) is refused


def test_otelcol_does_not_start_a_looping_collector() -> None:
    """The former README recipe, through the launcher: it exits at once instead of starting the Collector."""
    env = {**_clean_environment(), "CYCLES_JAEGER_OTLP_ENDPOINT": "localhost:4317"}
    done = subprocess.run([str(OTELCOL)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "CYCLES_JAEGER_OTLP_ENDPOINT=localhost:4317 is the Collector's own receiver" in done.stderr


# --- stack.sh: up, demo, query, down ---------------------------------------------------------------------------


@dataclass
class Stack:
    env: dict[str, str]
    state: Path
    jaeger: JaegerApi
    prometheus: PrometheusApi
    otlp_http: str

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(STACK), *command], env=self.env, capture_output=True, text=True, timeout=120, check=False
        )

    def pids(self) -> dict[str, int]:
        return {name: int((self.state / f"{name}.pid").read_text()) for name in COMPONENTS}

    def addresses(self) -> list[str]:
        """Every address the stack listens on."""
        endpoints = [
            v for k, v in self.env.items() if k.startswith(("CYCLES_", "JAEGER_", "STACK_")) and k.endswith("_ENDPOINT")
        ]
        return endpoints + [f"127.0.0.1:{self.env['CYCLES_SELF_METRICS_PORT']}"]


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child nobody reaped yet)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """collector/stack.sh up on free loopback ports with its state in tmp_path; down (again) on exit."""
    build_collector()
    build_jaeger()
    prometheus_binary()
    names = (
        "CYCLES_OTLP_GRPC_ENDPOINT",
        "CYCLES_OTLP_HTTP_ENDPOINT",
        "CYCLES_PROMETHEUS_ENDPOINT",
        "CYCLES_HEALTH_ENDPOINT",
        "JAEGER_OTLP_GRPC_ENDPOINT",
        "JAEGER_QUERY_HTTP_ENDPOINT",
        "JAEGER_QUERY_GRPC_ENDPOINT",
        "STACK_PROMETHEUS_ENDPOINT",
    )
    env = _clean_environment() | {name: f"127.0.0.1:{free_port()}" for name in names}
    env |= {
        "CYCLES_SELF_METRICS_PORT": str(free_port()),
        "OTEL_CYCLES_STACK_DIR": str(tmp_path / "state"),
        # Tail sampling decides 1 s after a trace's first span instead of 10 s: the test waits less.
        "CYCLES_DECISION_WAIT": "1s",
    }
    jaeger = JaegerApi(query_url=f"http://{env['JAEGER_QUERY_HTTP_ENDPOINT']}")
    prometheus = PrometheusApi(url=f"http://{env['STACK_PROMETHEUS_ENDPOINT']}")
    running = Stack(env, tmp_path / "state", jaeger, prometheus, f"http://{env['CYCLES_OTLP_HTTP_ENDPOINT']}")
    try:
        yield running
    finally:
        running.run("down")


def _demo(stack: Stack) -> dict[str, Any]:
    """`otel-cycles demo --otlp <the stack's OTLP/HTTP>`, as a user runs it; its JSON summary."""
    env = _clean_environment() | {"PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "otel_cycles", "demo", "--otlp", stack.otlp_http, "--json"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


def test_stack_up_receives_the_demo_and_down_leaves_nothing_running(stack: Stack) -> None:
    up = stack.run("up")
    assert up.returncode == 0, up.stdout + up.stderr
    pids = stack.pids()
    assert all(_alive(pid) for pid in pids.values()), pids
    status = stack.run("status")
    assert [line.split(":")[0] for line in status.stdout.splitlines() if "running (pid" in line] == list(COMPONENTS)

    summary = _demo(stack)
    assert summary["stopped"] and summary["reason_code"] == "BUDGET_EXCEEDED"
    # The authority's figure: the tenant scope (the shortest path) holds everything the run spent.
    tenant = min(summary["balances"], key=lambda b: len(b["scope_path"]))
    spent = int(tenant["spent"])
    assert spent > 0

    # Jaeger: the demo's service, and its trace (stopped by the budget, so tail sampling keeps it) by tag search.
    wait_for(lambda: DEMO_SERVICE in stack.jaeger.services(), timeout=30, what=f"{DEMO_SERVICE} in Jaeger")
    wait_for(
        lambda: bool(stack.jaeger.search(DEMO_SERVICE, {"cycles.decision": "DENY"})),
        timeout=30,
        what="the demo's denied trace in Jaeger",
    )
    (trace_id,) = stack.jaeger.search(DEMO_SERVICE, {"cycles.decision": "DENY"})
    spans = stack.jaeger.trace(trace_id)
    assert sum(int(s["attributes"].get("cycles.actual.amount", 0)) for s in spans) == spent

    # Prometheus: the demo's metrics, named after its service (not unknown_service:python), equal to what it spent.
    cost = f'sum(cycles_cost_committed_USD_total{{service_name="{DEMO_SERVICE}"}})'
    wait_for(
        lambda: math.isclose(stack.prometheus.scalar(cost) * MICROCENTS_PER_USD, spent, rel_tol=1e-9),
        timeout=60,
        what=f"Prometheus to scrape the demo's {spent} USD_MICROCENTS",
    )
    assert {s.get("exported_job") for s in stack.prometheus.series("cycles_cost_committed_USD_total")} == {DEMO_SERVICE}

    down = stack.run("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not any(_alive(pid) for pid in pids.values())
    assert not [address for address in stack.addresses() if listening(address)]
    assert not list(stack.state.glob("*.pid"))
    assert "running" not in stack.run("status").stdout


def test_stack_up_refuses_a_taken_port_and_leaves_nothing_running(stack: Stack) -> None:
    """Prometheus starts last: its address taken, `up` fails after Jaeger and the Collector started, and stops them."""
    host, port = stack.env["STACK_PROMETHEUS_ENDPOINT"].rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind((host, int(port)))
        squatter.listen()
        up = stack.run("up")
    assert up.returncode == 1
    assert f"prometheus cannot start: something else listens on {host}:{port}" in up.stderr
    assert not list(stack.state.glob("*.pid"))
    assert not [address for address in stack.addresses() if listening(address)]
