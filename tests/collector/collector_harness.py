"""Processes for the Collector end-to-end tests: the ocb-built Collector, Jaeger v2, Debian's Prometheus, and their
plumbing.

Missing tools skip the tests locally and fail them under CI (`CI` set to anything but false/0/no), so CI never passes
by skipping.
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

from tests.collector.telemetry import MARKER_SERVICE

__all__ = [
    "COLLECTOR_DIR",
    "CollectorProcess",
    "JaegerApi",
    "JaegerProcess",
    "PrometheusApi",
    "PrometheusProcess",
    "build_collector",
    "build_jaeger",
    "free_port",
    "in_ci",
    "listening",
    "prometheus_binary",
    "require",
    "run_collector",
    "run_jaeger",
    "run_prometheus",
    "span_attributes",
    "wait_for",
]

COLLECTOR_DIR = Path(__file__).resolve().parents[2] / "collector"
_BUILD_TIMEOUT_S = 45 * 60


def in_ci() -> bool:
    """`CI` is set to something other than an explicit no (`CI=false` is how some runners say "not CI")."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(reason: str) -> NoReturn:
    """Fail under CI, skip otherwise: a missing tool must never turn CI green."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


def _build(script: str) -> Path:
    """Run a collector/ build script (it prints the cached binary's path last) and return the binary.

    A cached binary needs no Go. Without Go (and nothing cached) the tests skip locally and fail under CI; any other
    build failure fails them.
    """
    proc = subprocess.run(
        [str(COLLECTOR_DIR / script)], capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S, check=False
    )
    if proc.returncode != 0:
        failure = f"collector/{script} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        if "Go is not installed" in proc.stderr:
            require(failure)  # the one reason to skip, and only outside CI
        pytest.fail(failure, pytrace=False)
    binary = Path(proc.stdout.strip().splitlines()[-1])
    if not os.access(binary, os.X_OK):
        pytest.fail(f"collector/{script} printed {binary}, which is not an executable", pytrace=False)
    return binary


def build_collector() -> Path:
    """Build (or reuse the cached) Collector via collector/build.sh and return the binary's path."""
    return _build("build.sh")


def build_jaeger() -> Path:
    """Build (or reuse the cached) Jaeger v2 via collector/build-jaeger.sh and return the binary's path."""
    return _build("build-jaeger.sh")


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


def _get_json(url: str) -> Any:
    """GET `url` and decode its JSON body; None for 404 (Jaeger's answer for "no such trace")."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise AssertionError(f"GET {url}: {exc.code} {exc.read()[:2000]!r}") from None


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

    def exported_spans(self, *, markers: bool = False) -> list[dict[str, Any]]:
        """Spans the file exporter wrote, each with `_resource` and `_scope` added (OTLP/JSON shapes); without the
        marker traces (`MARKER_SERVICE`) unless `markers`."""
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
                        if markers or resource.get("service.name") != MARKER_SERVICE:
                            spans.append({**span, "_resource": resource, "_scope": scope})
        return spans

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        """Stop the Collector now (a Collector outage); stopping again on exit is harmless."""
        _stop(self.process)


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


@dataclass
class JaegerApi:
    """Jaeger's query API, as the tests read it."""

    query_url: str
    """`http://127.0.0.1:port` of the query API."""

    def get(self, path: str, **params: str) -> Any:
        """GET a query API path with `params`; the decoded JSON, or None for 404 (nothing found)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return _get_json(f"{self.query_url}{path}{query}")

    def services(self) -> set[str]:
        """`/api/v3/services`: the service names Jaeger holds traces of."""
        body = self.get("/api/v3/services")
        return set(body.get("services", []))

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        """`/api/traces/{id}` (Jaeger's own JSON): the trace's spans, each with its tags as a plain `attributes`
        dict and its process's `service`; empty when Jaeger has no such trace."""
        body = self.get(f"/api/traces/{trace_id}")
        return [span for trace in (body or {}).get("data") or [] for span in _jaeger_spans(trace)]

    def search(self, service: str, tags: Mapping[str, str]) -> set[str]:
        """Tag search (`/api/traces?service=...&tags={...}`, what the UI's search does): the matching trace ids."""
        body = self.get("/api/traces", service=service, tags=json.dumps(dict(tags)), limit="1000")
        return {_trace_id(trace["traceID"]) for trace in (body or {}).get("data") or []}

    def find(self, service: str) -> dict[str, list[dict[str, Any]]]:
        """`/api/v3/traces` (OTLP JSON) for `service` over the last hour: spans by trace id, with `attributes` and
        `_resource` decoded as in `CollectorProcess.exported_spans`."""
        now = time.time()
        window = {
            "query.service_name": service,
            "query.start_time_min": _rfc3339(now - 3600),
            "query.start_time_max": _rfc3339(now + 60),
            "query.num_traces": "1000",
        }
        body = self.get("/api/v3/traces", **window)
        traces: dict[str, list[dict[str, Any]]] = {}
        for resource_spans in (body or {}).get("result", {}).get("resourceSpans", []):
            resource = _attributes(resource_spans.get("resource", {}).get("attributes", []))
            for scope_spans in resource_spans.get("scopeSpans", []):
                for span in scope_spans.get("spans", []):
                    span = {**span, "_resource": resource}
                    traces.setdefault(_trace_id(span["traceId"]), []).append(span)
        return traces


@dataclass
class JaegerProcess(JaegerApi):
    """A running Jaeger v2 (collector/jaeger.yaml, in-memory storage) on free loopback ports."""

    process: subprocess.Popen[bytes]
    log: Path
    otlp_grpc_endpoint: str
    """`127.0.0.1:port` of Jaeger's OTLP gRPC intake: what the Collector's `otlp_grpc/jaeger` exporter sends to."""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def _rfc3339(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def _trace_id(value: str) -> str:
    """A trace id as 32 lowercase hex digits (Jaeger's own API drops leading zeros of a short id)."""
    return f"{int(value, 16):032x}"


def _jaeger_spans(trace: Mapping[str, Any]) -> list[dict[str, Any]]:
    processes = trace.get("processes", {})
    return [
        {
            "traceId": _trace_id(span["traceID"]),
            "spanId": f"{int(span['spanID'], 16):016x}",
            "name": span["operationName"],
            "service": processes.get(span.get("processID"), {}).get("serviceName"),
            "attributes": {tag["key"]: tag["value"] for tag in span.get("tags", [])},
        }
        for span in trace.get("spans", [])
    ]


@contextmanager
def _started(
    process: subprocess.Popen[bytes],
    name: str,
    *,
    ready: Callable[[], bool],
    what: str,
    log_tail: Callable[[], str],
) -> Iterator[None]:
    """Wait up to 30 s until `process` is `ready`, then hand it over; stop it on exit (ready or not).

    Shared by Jaeger and the Collector, so both fail the same way: a timeout or an early exit (`name` exited with
    ...) raises with the tail of the process's log, which is where the reason is.
    """
    try:
        try:
            wait_for(lambda: process.poll() is not None or ready(), timeout=30, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log_tail()}") from None
        if process.poll() is not None:
            raise AssertionError(f"{name} exited with {process.returncode}:\n{log_tail()}")
        yield
    finally:
        _stop(process)


@contextmanager
def run_jaeger(binary: Path, workdir: Path) -> Iterator[JaegerProcess]:
    """Start Jaeger with collector/jaeger.yaml, every listener on a free loopback port; stop it on exit."""
    ports = {name: free_port() for name in ("otlp", "http", "grpc")}
    env = {
        **os.environ,
        "JAEGER_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{ports['otlp']}",
        "JAEGER_QUERY_HTTP_ENDPOINT": f"127.0.0.1:{ports['http']}",
        "JAEGER_QUERY_GRPC_ENDPOINT": f"127.0.0.1:{ports['grpc']}",
    }
    log = workdir / "jaeger.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [str(binary), f"--config={COLLECTOR_DIR / 'jaeger.yaml'}"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    jaeger = JaegerProcess(
        process=process,
        log=log,
        otlp_grpc_endpoint=f"127.0.0.1:{ports['otlp']}",
        query_url=f"http://127.0.0.1:{ports['http']}",
    )
    with _started(
        process,
        "Jaeger",
        ready=lambda: _http_ok(f"{jaeger.query_url}/api/v3/services") and listening(jaeger.otlp_grpc_endpoint),
        what="Jaeger's query API and OTLP intake",
        log_tail=jaeger.log_tail,
    ):
        yield jaeger


def listening(endpoint: str) -> bool:
    """Whether something accepts TCP connections at `host:port`."""
    host, port = endpoint.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, int(port))) == 0


@contextmanager
def run_collector(
    binary: Path,
    workdir: Path,
    *,
    env: Mapping[str, str],
    configs: Sequence[Path],
    jaeger: JaegerProcess | None = None,
) -> Iterator[CollectorProcess]:
    """Start the Collector with `configs` (merged in order) on free loopback ports; stop it on exit.

    Its `otlp_grpc/jaeger` exporter sends to `jaeger`; without one it points at a port where nothing listens (the
    file-export overlay takes Jaeger and Tempo out of the pipeline anyway).
    """
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
        # Nothing listens on port 9: no Tempo in these tests, and no Jaeger unless one was given.
        "CYCLES_JAEGER_OTLP_ENDPOINT": jaeger.otlp_grpc_endpoint if jaeger else "127.0.0.1:9",
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
    with _started(
        process,
        "the Collector",
        ready=lambda: _http_ok(f"http://127.0.0.1:{ports['health']}/"),
        what="the Collector's health check",
        log_tail=collector.log_tail,
    ):
        yield collector


@dataclass
class PrometheusApi:
    """Prometheus' HTTP API, as the tests read it."""

    url: str

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


@dataclass
class PrometheusProcess(PrometheusApi):
    process: subprocess.Popen[bytes]
    log: Path


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
