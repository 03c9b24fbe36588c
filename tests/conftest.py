"""Shared fixtures: the embedded authority and the scripted model on loopback, and capture of spans and metrics.

AnyAgent binds to the global tracer provider when imported, so spans are captured by one session-wide in-memory
exporter on that provider (registered before any CyclesSpanProcessor, as a user's own exporter would be) and cleared
before each test.
"""

from __future__ import annotations

import ast
import os
import random
import secrets
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

if sys.version_info < (3, 11, 8) and sys.version_info[:2] == (3, 11):
    # CPython 3.11 before 3.11.8 keeps the AST converter's recursion counter in interpreter-wide state (gh-106905):
    # `ast.parse` on two threads at once (smolagents validates tools on worker threads) corrupts it, and a later
    # `ast.parse` (pytest formatting a failure report) raises "SystemError: AST constructor recursion depth
    # mismatch" and crashes the session. Serialise ast.parse for the test run.
    _ast_lock = threading.Lock()
    _ast_parse = ast.parse

    def _serialised_parse(*args: Any, **kwargs: Any) -> Any:
        with _ast_lock:
            return _ast_parse(*args, **kwargs)

    ast.parse = _serialised_parse

os.environ.setdefault("OPENAI_API_KEY", "sk-fake")
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

import any_agent  # noqa: F401  (installs the SDK tracer provider)
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from runcycles import CyclesClient, CyclesConfig

from otel_cycles.testing import ScriptedModel
from otel_cycles.testing._authority import AuthorityUnderTest, open_test_authority

SPANS = InMemorySpanExporter()
METRICS = InMemoryMetricReader()
_provider = trace.get_tracer_provider()
assert isinstance(_provider, TracerProvider)
_provider.add_span_processor(SimpleSpanProcessor(SPANS))
metrics.set_meter_provider(MeterProvider(metric_readers=[METRICS]))


def _internal_errors() -> float:
    """`cycles.settlement.errors{error.type=internal}` so far: bugs the processor and the worker log and swallow."""
    data = METRICS.get_metrics_data()
    total = 0.0
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "cycles.settlement.errors":
                    for point in metric.data.data_points:
                        if (point.attributes or {}).get("error.type") == "internal":
                            total += point.value  # type: ignore[union-attr]
    return total


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "internal_errors_expected: the test provokes an internal error the processor must swallow"
    )


SHUFFLE_VARIABLE = "OTEL_CYCLES_TEST_SHUFFLE"
"""`OTEL_CYCLES_TEST_SHUFFLE=<seed>` (or `random`) runs the suite in a shuffled order, as pytest-randomly would:
modules in random order and the tests of each module in random order (module-scoped fixtures stay set up once). The
seed is printed in the header; rerun with it to reproduce an order."""


def _shuffle_seed() -> int | None:
    value = os.environ.get(SHUFFLE_VARIABLE, "").strip()
    if not value:
        return None
    if value == "random":
        value = os.environ[SHUFFLE_VARIABLE] = str(random.randrange(10**6))  # xdist-free: one process, one seed
    return int(value)


def pytest_report_header(config: pytest.Config) -> str | None:
    seed = _shuffle_seed()
    return None if seed is None else f"test order shuffled: {SHUFFLE_VARIABLE}={seed}"


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    seed = _shuffle_seed()
    if seed is None:
        return
    rng = random.Random(seed)
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    order = list(modules)
    rng.shuffle(order)
    for name in order:
        rng.shuffle(modules[name])
    items[:] = [item for name in order for item in modules[name]]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    seed = _shuffle_seed()
    if seed is not None:
        terminalreporter.write_line(f"test order was shuffled with {SHUFFLE_VARIABLE}={seed}")


@pytest.fixture(autouse=True)
def no_swallowed_bugs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test in which otel-cycles swallowed an internal error (it never raises into the application, by design,
    so a bug would otherwise only show as a log line and a counter)."""
    before = _internal_errors()
    yield
    if request.node.get_closest_marker("internal_errors_expected") is None:
        assert _internal_errors() == before, "otel-cycles swallowed an internal error: see the captured log"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    SPANS.clear()
    yield SPANS


@pytest.fixture
def metric_reader() -> InMemoryMetricReader:
    return METRICS


@pytest.fixture(scope="session")
def authority() -> Iterator[AuthorityUnderTest]:
    """The embedded authority, or the external server named by `CYCLES_TEST_BASE_URL` (see `open_test_authority`)."""
    with open_test_authority() as server:
        yield server


@dataclass
class Tenant:
    """A fresh tenant on the shared authority, with a client bound to its API key."""

    id: str
    client: CyclesClient
    authority: AuthorityUnderTest

    def budget(self, scope: str, amount: int, **kwargs: object) -> None:
        self.authority.create_budget(f"tenant:{self.id}{'/' + scope if scope else ''}", amount, **kwargs)  # type: ignore[arg-type]

    def balance(self, scope: str = "") -> dict[str, object]:
        path = f"tenant:{self.id}{'/' + scope if scope else ''}"
        for item in self.authority.balances(self.id):
            if item["scope_path"] == path:
                return item
        raise KeyError(path)

    def spent(self, scope: str = "") -> int:
        spent = self.balance(scope).get("spent")
        return int(spent["amount"]) if isinstance(spent, dict) else 0

    def active(self) -> list[dict[str, object]]:
        return self.authority.reservations(self.id, status="ACTIVE")

    def reservation(self, reservation_id: str) -> dict[str, Any]:
        """The `ReservationDetail` of one of this tenant's reservations, read over HTTP with its own key."""
        response = self.client.get_reservation(reservation_id)
        assert response.status == 200, response.body
        return dict(response.body or {})


_counter = 0
_RUN = secrets.token_hex(3)  # tenant ids stay unique on an external server that outlives this run


@pytest.fixture
def tenant(authority: AuthorityUnderTest, tmp_path) -> Iterator[Tenant]:
    global _counter
    _counter += 1
    tenant_id = f"t{_counter}-{os.getpid()}-{_RUN}"
    authority.create_tenant(tenant_id)
    key = authority.create_api_key(tenant_id)
    config = CyclesConfig(base_url=authority.base_url, api_key=key, journal_dir=str(tmp_path / "journal"))
    client = CyclesClient(config)
    yield Tenant(tenant_id, client, authority)
    assert authority.check_invariants() == []


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel(tool_rounds=2) as server:
        yield server
