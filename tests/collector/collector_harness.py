"""Processes for the Collector end-to-end tests: the ocb-built Collector, Debian's Prometheus, and their plumbing.

Missing tools skip the tests locally and fail them under CI (`CI` set), so CI never passes by skipping.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

__all__ = [
    "COLLECTOR_DIR",
    "CollectorProcess",
    "PrometheusProcess",
    "build_collector",
    "free_port",
    "prometheus_binary",
    "require",
    "run_collector",
    "run_prometheus",
    "span_attributes",
    "wait_for",
]

COLLECTOR_DIR = Path(__file__).resolve().parents[2] / "collector"
_BUILD_TIMEOUT_S = 45 * 60


def require(reason: str) -> NoReturn:
    """Fail under CI, skip otherwise: a missing tool must never turn CI green."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


def build_collector() -> Path:
    """Build (or reuse the cached) Collector via collector/build.sh and return the binary's path.

    A cached binary needs no Go; a build needs Go and the Go module proxy, and build.sh says which is missing.
    """
    proc = subprocess.run(
        [str(COLLECTOR_DIR / "build.sh")], capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S, check=False
    )
    if proc.returncode != 0:
        require(f"collector/build.sh failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    binary = Path(proc.stdout.strip().splitlines()[-1])
    if not os.access(binary, os.X_OK):
        require(f"collector/build.sh printed {binary}, which is not an executable")
    return binary


def prometheus_binary() -> Path:
    """Debian's `prometheus` (apt-get install prometheus), or skip/fail."""
    found = shutil.which("prometheus")
    if found is None:
        require("prometheus is not installed (apt-get install prometheus)")
    return Path(found)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.2, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class CollectorProcess:
    """A running Collector with every listener on its own loopback port."""

    process: subprocess.Popen[bytes]
    log: Path
    traces_file: Path
    grpc_endpoint: str
    """`127.0.0.1:port` of the OTLP gRPC receiver."""
    http_endpoint: str
    """`http://127.0.0.1:port` of the OTLP HTTP receiver."""
    metrics_address: str
    """`127.0.0.1:port` of the prometheus exporter."""

    def exported_spans(self) -> list[dict[str, Any]]:
        """Spans the file exporter wrote, each with `_resource` and `_scope` added (OTLP/JSON shapes)."""
        spans: list[dict[str, Any]] = []
        if not self.traces_file.exists():
            return spans
        for line in self.traces_file.read_text().splitlines():
            if not line.strip():
                continue
            for resource_spans in json.loads(line).get("resourceSpans", []):
                resource = _attributes(resource_spans.get("resource", {}).get("attributes", []))
                for scope_spans in resource_spans.get("scopeSpans", []):
                    scope = scope_spans.get("scope", {}).get("name", "")
                    for span in scope_spans.get("spans", []):
                        spans.append({**span, "_resource": resource, "_scope": scope})
        return spans

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def span_attributes(span: Mapping[str, Any]) -> dict[str, Any]:
    """A span's OTLP/JSON attribute list as a plain dict (ints decoded from their JSON strings)."""
    return _attributes(span.get("attributes", []))


def _attributes(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        value = item.get("value", {})
        if "intValue" in value:
            out[item["key"]] = int(value["intValue"])
        elif "doubleValue" in value:
            out[item["key"]] = float(value["doubleValue"])
        elif "boolValue" in value:
            out[item["key"]] = bool(value["boolValue"])
        else:
            out[item["key"]] = value.get("stringValue")
    return out


@contextmanager
def run_collector(
    binary: Path, workdir: Path, *, env: Mapping[str, str], configs: Sequence[Path]
) -> Iterator[CollectorProcess]:
    """Start the Collector with `configs` (merged in order) on free loopback ports; stop it on exit."""
    ports = {name: free_port() for name in ("grpc", "http", "prom", "health", "self")}
    traces_file = workdir / "traces.jsonl"
    full_env = {
        **os.environ,
        "CYCLES_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{ports['grpc']}",
        "CYCLES_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{ports['http']}",
        "CYCLES_PROMETHEUS_ENDPOINT": f"127.0.0.1:{ports['prom']}",
        "CYCLES_HEALTH_ENDPOINT": f"127.0.0.1:{ports['health']}",
        "CYCLES_SELF_METRICS_HOST": "127.0.0.1",
        "CYCLES_SELF_METRICS_PORT": str(ports["self"]),
        "CYCLES_TRACES_FILE": str(traces_file),
        # Nothing listens there: the file-export overlay takes Jaeger and Tempo out of the pipeline.
        "CYCLES_JAEGER_OTLP_ENDPOINT": "127.0.0.1:9",
        "CYCLES_TEMPO_OTLP_ENDPOINT": "http://127.0.0.1:9",
        **env,
    }
    args = [str(binary)] + [f"--config={config}" for config in configs]
    log = workdir / "collector.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(args, env=full_env, stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir)
    collector = CollectorProcess(
        process=process,
        log=log,
        traces_file=traces_file,
        grpc_endpoint=f"127.0.0.1:{ports['grpc']}",
        http_endpoint=f"http://127.0.0.1:{ports['http']}",
        metrics_address=f"127.0.0.1:{ports['prom']}",
    )
    try:
        try:
            wait_for(
                lambda: process.poll() is not None or _http_ok(f"http://127.0.0.1:{ports['health']}/"),
                timeout=30,
                what="the Collector's health check",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{collector.log_tail()}") from None
        if process.poll() is not None:
            raise AssertionError(f"the Collector exited with {process.returncode}:\n{collector.log_tail()}")
        yield collector
    finally:
        _stop(process)


@dataclass
class PrometheusProcess:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Evaluate an instant PromQL query; raise on an API error (e.g. a syntax error)."""
        params = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{params}", timeout=10) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus rejected {expr!r}: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def series(self, match: str) -> list[dict[str, str]]:
        params = urllib.parse.urlencode({"match[]": match})
        with urllib.request.urlopen(f"{self.url}/api/v1/series?{params}", timeout=10) as response:
            body = json.load(response)
        series: list[dict[str, str]] = body["data"]
        return series

    def scalar(self, expr: str) -> float:
        """The value of a query that returns one sample (e.g. `sum(...)`); NaN when it returns none."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else float("nan")


@contextmanager
def run_prometheus(binary: Path, workdir: Path, *, targets: Sequence[str]) -> Iterator[PrometheusProcess]:
    """Start Prometheus scraping `targets` every second, with storage in `workdir`; stop it on exit."""
    port = free_port()
    config = workdir / "prometheus.yml"
    # JSON is valid YAML, so the generated config needs no YAML writer.
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [{"job_name": "otelcol-cycles", "static_configs": [{"targets": list(targets)}]}],
            }
        )
    )
    log = workdir / "prometheus.log"
    args = [
        str(binary),
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with log.open("wb") as log_file:
        process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir)
    prometheus = PrometheusProcess(process=process, url=f"http://127.0.0.1:{port}", log=log)
    try:
        wait_for(
            lambda: process.poll() is not None or _http_ok(f"{prometheus.url}/-/ready"),
            timeout=30,
            what="Prometheus to become ready",
        )
        if process.poll() is not None:
            raise AssertionError(f"Prometheus exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        yield prometheus
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
