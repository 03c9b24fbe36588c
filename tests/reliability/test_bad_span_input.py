"""Bad usage attributes and model ids on governed spans: nothing escapes the processor, every span is settled by the
documented rule (`_usage` / `_accounting`: unusable usage commits the estimate, an error releases), and
`cycles.usage.rejected` counts it by `error.type`."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Status, StatusCode

from otel_cycles import CyclesSpanProcessor
from otel_cycles._registry import REGISTRY, PendingReservation, RunState, span_key
from otel_cycles._settlement import settlement_for
from otel_cycles._usage import read_usage
from otel_cycles.authority import LocalAuthority
from otel_cycles.pricing import normalize_model_id
from tests.conftest import Tenant
from tests.reliability.helpers import metric_sum

ESTIMATE = 1_234_000
GOOD = {"gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 20}

BAD_USAGE: dict[str, tuple[dict[str, Any], str]] = {
    "missing": ({}, "missing"),
    "zero": ({"gen_ai.usage.input_tokens": 0, "gen_ai.usage.output_tokens": 0}, "missing"),
    "negative": ({"gen_ai.usage.input_tokens": -5, "gen_ai.usage.output_tokens": 20}, "invalid"),
    "float": ({"gen_ai.usage.input_tokens": 10.5, "gen_ai.usage.output_tokens": 20}, "invalid"),
    "nan": ({"gen_ai.usage.input_tokens": float("nan"), "gen_ai.usage.output_tokens": 20}, "invalid"),
    "string": ({"gen_ai.usage.input_tokens": "100", "gen_ai.usage.output_tokens": 20}, "invalid"),
    "bool": ({"gen_ai.usage.input_tokens": True, "gen_ai.usage.output_tokens": 20}, "invalid"),
    "huge": ({"gen_ai.usage.input_tokens": 10**30, "gen_ai.usage.output_tokens": 20}, "invalid"),
    "list": ({"gen_ai.usage.input_tokens": [1, 2], "gen_ai.usage.output_tokens": 20}, "invalid"),
    "cache_exceeds_input": ({**GOOD, "gen_ai.usage.cache_read.input_tokens": 500}, "invalid"),
    "unknown_model": (GOOD, "unknown_price"),
}

MALFORMED_MODELS = ["", "   ", ":", "openai:", ":gpt-4o", "a b", "x" * 10_000, "openai :gpt-4o", "🙂:🙂", "gpt\x00-4o"]


@pytest.fixture
def provider() -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(CyclesSpanProcessor())
    return provider


def _governed_span(provider: TracerProvider, tenant: Tenant, model: str | None, attributes: dict[str, Any],
                   errored: bool = False) -> str:  # fmt: skip
    """Reserve for real, end a span carrying `attributes`, let the processor settle it; return the reservation id."""
    body: dict[str, Any] = {
        "idempotency_key": str(uuid.uuid4()),
        "subject": {"tenant": tenant.id},
        "action": {"kind": "llm.completion", "name": "bad-input"},
        "estimate": {"unit": "USD_MICROCENTS", "amount": ESTIMATE},
    }
    response = tenant.client.create_reservation(body)
    assert response.is_success, response
    assert response.body is not None
    reservation_id = response.body["reservation_id"]
    span = provider.get_tracer("any_agent").start_span("call_llm bad-input")
    key = span_key(span)
    assert key is not None
    REGISTRY.add(
        key,
        PendingReservation(
            span=span,
            run=RunState(run_id="bad-input"),
            settlement=settlement_for(tenant.client),
            kind="llm.completion",
            action=body["action"],
            subject=body["subject"],
            estimate=ESTIMATE,
            idempotency_key=body["idempotency_key"],
            reservation_id=reservation_id,
            model=normalize_model_id(model),
        ),
    )
    span.set_attributes(attributes)
    if errored:
        span.set_status(Status(StatusCode.ERROR, "model failed"))
    span.end()  # an exception escaping on_end would fail the test; one it swallowed fails it too (conftest)
    return str(reservation_id)


@pytest.mark.parametrize("case", sorted(BAD_USAGE))
def test_bad_usage_commits_the_estimate_and_is_counted(
    tenant: Tenant, provider: TracerProvider, metric_reader, case: str
) -> None:
    tenant.budget("", 100_000_000)
    attributes, error_type = BAD_USAGE[case]
    before = metric_sum(metric_reader, "cycles.usage.rejected", **{"error.type": error_type})
    model = "openai:house-model-7" if case == "unknown_model" else "openai:gpt-4o"
    _governed_span(provider, tenant, model, attributes)
    assert provider.force_flush(5000)
    assert tenant.spent() == ESTIMATE  # unknown is never free
    assert metric_sum(metric_reader, "cycles.usage.rejected", **{"error.type": error_type}) - before == 1
    assert tenant.active() == []


def test_bad_usage_on_an_errored_span_releases(tenant: Tenant, provider: TracerProvider) -> None:
    tenant.budget("", 100_000_000)
    for case in ("missing", "negative", "string", "huge"):
        _governed_span(provider, tenant, "openai:gpt-4o", BAD_USAGE[case][0], errored=True)
    assert provider.force_flush(5000)
    assert tenant.spent() == 0
    assert tenant.active() == []


def test_malformed_model_ids_commit_the_estimate(tenant: Tenant, provider: TracerProvider, metric_reader) -> None:
    tenant.budget("", 100_000_000)
    before = metric_sum(metric_reader, "cycles.usage.rejected", **{"error.type": "unknown_price"})
    for raw in MALFORMED_MODELS:
        _governed_span(provider, tenant, raw, GOOD)
    _governed_span(provider, tenant, None, GOOD)
    assert provider.force_flush(5000)
    assert tenant.spent() == ESTIMATE * (len(MALFORMED_MODELS) + 1)
    after = metric_sum(metric_reader, "cycles.usage.rejected", **{"error.type": "unknown_price"})
    assert after - before == len(MALFORMED_MODELS) + 1
    assert tenant.active() == []


def test_concurrent_bad_spans_settle_exactly_once(tenant: Tenant, provider: TracerProvider) -> None:
    tenant.budget("", 1_000_000_000)
    cases = [BAD_USAGE[c][0] for c in sorted(BAD_USAGE)] * 3
    threads = [
        threading.Thread(target=_governed_span, args=(provider, tenant, "openai:house-model-7", attrs))
        for attrs in cases
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert provider.force_flush(10_000)
    assert tenant.spent() == ESTIMATE * len(cases)
    assert tenant.active() == []


class _ExplodingSpan:
    """A finished span whose status cannot be read: the processor fails inside `on_end` while settling it."""

    name = "call_llm exploding"

    def __init__(self, context: Any) -> None:
        self.context = context

    @property
    def status(self) -> Any:
        raise RuntimeError("this span's status cannot be read")


@pytest.mark.internal_errors_expected
def test_an_internal_failure_in_on_end_is_logged_and_counted_never_raised(
    tenant: Tenant, metric_reader, caplog: pytest.LogCaptureFixture
) -> None:
    """The production path (there is no test-only branch): no exception escapes `on_end`, the failure is logged with
    its traceback and counted in `cycles.settlement.errors{error.type=internal,cycles.operation=on_end}`, and the
    reservation is not lost: the authority returns it at expiry."""
    tenant.budget("", 100_000_000)
    body: dict[str, Any] = {
        "idempotency_key": str(uuid.uuid4()),
        "subject": {"tenant": tenant.id},
        "action": {"kind": "llm.completion", "name": "exploding"},
        "estimate": {"unit": "USD_MICROCENTS", "amount": ESTIMATE},
        "ttl_ms": 1000,
        "grace_period_ms": 0,
    }
    response = tenant.client.create_reservation(body)
    assert response.is_success and response.body is not None, response
    span = TracerProvider().get_tracer("any_agent").start_span("call_llm exploding")
    key = span_key(span)
    assert key is not None
    REGISTRY.add(
        key,
        PendingReservation(
            span=span, run=RunState(run_id="exploding"), settlement=settlement_for(tenant.client),
            kind="llm.completion", action=body["action"], subject=body["subject"], estimate=ESTIMATE,
            idempotency_key=body["idempotency_key"], reservation_id=response.body["reservation_id"],
            model=normalize_model_id("openai:gpt-4o"),
        ),
    )  # fmt: skip
    match = {"error.type": "internal", "cycles.operation": "on_end"}
    before = metric_sum(metric_reader, "cycles.settlement.errors", **match)
    with caplog.at_level("ERROR", logger="otel_cycles.processor"):
        CyclesSpanProcessor().on_end(_ExplodingSpan(span.get_span_context()))  # type: ignore[arg-type]
    assert metric_sum(metric_reader, "cycles.settlement.errors", **match) - before == 1
    (record,) = [r for r in caplog.records if r.name == "otel_cycles.processor"]
    assert "failed to settle span call_llm exploding" in record.getMessage()
    assert record.exc_info is not None and "cannot be read" in str(record.exc_info[1])
    assert REGISTRY.get(key) is None  # taken once: a later end of the same span cannot settle it twice
    # Not lost: the authority expires the reservation at its TTL, and nothing was spent.
    deadline = time.monotonic() + 15
    while tenant.active() and time.monotonic() < deadline:
        if isinstance(tenant.authority, LocalAuthority):  # an external server's own sweeper does it
            tenant.authority.sweep()
        time.sleep(0.1)
    assert [r["status"] for r in tenant.authority.reservations(tenant.id)] == ["EXPIRED"]
    assert tenant.spent() == 0


_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20),
    st.lists(st.integers(), max_size=3), st.binary(max_size=5),
)  # fmt: skip
_keys = st.sampled_from(
    ["gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.prompt_tokens",
     "llm.token_count.completion", "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.reasoning.output_tokens"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=6), st.one_of(st.none(), st.text(max_size=300), st.integers()))
def test_usage_and_model_parsing_never_raise(attributes: dict[str, Any], model: Any) -> None:
    reading = read_usage(attributes)
    assert reading.status.value in ("ok", "missing", "invalid")
    parsed = normalize_model_id(model)
    assert parsed is None or (parsed.name and len(parsed.name) <= 256)
