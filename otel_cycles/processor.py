"""`CyclesSpanProcessor`: commit the actual cost of every governed span when it ends.

`on_end` runs on whatever thread ends the span (the event loop, a LangChain executor thread), so it only looks the
span up in the registry of open reservations, decides the outcome from the span's `gen_ai.usage.*` attributes (or
takes the one the callback already stamped), and hands it to the background Settlement. It never blocks on the
network and never raises. Spans without a reservation (agent spans, other instrumentations, denied calls) are
ignored, so nothing is counted twice.
"""

from __future__ import annotations

import logging
import threading
import weakref

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import StatusCode

from otel_cycles import metrics
from otel_cycles._accounting import decide, settle
from otel_cycles._registry import REGISTRY
from otel_cycles._settlement import flush_all

__all__ = ["CyclesSpanProcessor", "ensure_processor"]

logger = logging.getLogger(__name__)


class CyclesSpanProcessor(SpanProcessor):
    """Commits (or releases) the Cycles reservation of each governed span when the span ends.

    Register it on the SDK `TracerProvider` AnyAgent uses (the global one); `otel_cycles.attach()` does that, and
    `CyclesBudgetCallback` does it by itself when no processor is attached. Its position relative to exporter
    processors does not matter: the cost attributes are already on the span before it ends.
    """

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None:
            return
        pending = REGISTRY.pop((context.trace_id, context.span_id))
        if pending is None:
            return
        try:
            errored = span.status.status_code is StatusCode.ERROR
            outcome = pending.outcome or decide(pending, span.attributes, errored)
            latency_ms = None
            if span.start_time is not None and span.end_time is not None:
                latency_ms = max(0, (span.end_time - span.start_time) // 1_000_000)
            settle(pending, outcome, latency_ms=latency_ms)
        except Exception:
            # Never break the instrumented application: log and count (the test suite fails any test in which this
            # counter grows unexpectedly). The reservation is not lost: the authority returns it at expiry.
            metrics.settlement_errors.add(1, {"error.type": "internal", "cycles.operation": "on_end"})
            logger.exception("otel-cycles failed to settle span %s; your agent is fine, the budget may lag", span.name)

    def shutdown(self) -> None:
        flush_all(timeout=30.0)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Send every queued commit and release; False if the timeout elapsed first."""
        return flush_all(timeout=timeout_millis / 1000)


_attached: weakref.WeakKeyDictionary[TracerProvider, CyclesSpanProcessor] = weakref.WeakKeyDictionary()
_attach_lock = threading.Lock()


def ensure_processor(provider: trace.TracerProvider | None = None) -> CyclesSpanProcessor | None:
    """The CyclesSpanProcessor of `provider` (default: the global one), attaching one if it has none.

    Returns None when the provider is not an SDK TracerProvider: then nothing can see spans end, and the callback's
    end-of-run sweep releases the reservations instead of committing them.
    """
    provider = provider or trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        logger.warning(
            "otel-cycles: the tracer provider %r is not an OpenTelemetry SDK TracerProvider; spans cannot be "
            "observed, so reservations will be released instead of committed",
            type(provider).__name__,
        )
        return None
    with _attach_lock:
        processor = _attached.get(provider) or _added_by_hand(provider)
        if processor is None:
            processor = CyclesSpanProcessor()
            provider.add_span_processor(processor)
        _attached[provider] = processor
        return processor


def _added_by_hand(provider: TracerProvider) -> CyclesSpanProcessor | None:
    # The SDK keeps processors in a private tuple; read it defensively to avoid attaching a second one.
    active = getattr(provider, "_active_span_processor", None)
    for candidate in getattr(active, "_span_processors", ()):
        if isinstance(candidate, CyclesSpanProcessor):
            return candidate
    return None
