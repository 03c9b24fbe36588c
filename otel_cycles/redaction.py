"""`ContentFilterSpanProcessor`: keep prompt and completion content out of exported spans.

AnyAgent records the conversation on its spans (`gen_ai.input.messages`, `gen_ai.output`, `gen_ai.tool.args`, ...).
Wrap the exporting processor to drop those attributes before export:

    provider.add_span_processor(ContentFilterSpanProcessor(BatchSpanProcessor(exporter)))

The span seen by other processors (and by `CyclesSpanProcessor`, which reads only usage and cost attributes) is
unchanged: a filtered copy is built for the inner processor only, so nothing is mutated after the span ended.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor

from otel_cycles import environment_variables as env

__all__ = ["CONTENT_ATTRIBUTES", "ContentFilterSpanProcessor"]

CONTENT_ATTRIBUTES = frozenset(
    {
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.output",
        "gen_ai.system_instructions",
        "gen_ai.tool.args",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "gen_ai.tool.output",
        "gen_ai.prompt",
        "gen_ai.completion",
    }
)
"""Attribute keys that carry prompt, completion or tool content (AnyAgent's and the GenAI semconv's)."""


class ContentFilterSpanProcessor(SpanProcessor):
    """Passes spans to `inner` with the content attributes removed (from the span and its events).

    Args:
        inner: The processor that exports (e.g. a `BatchSpanProcessor`).
        capture_content: Keep the content after all; None reads `CYCLES_CAPTURE_CONTENT` (default `true`, so
            filtering is opt-in: `CYCLES_CAPTURE_CONTENT=false`).
        keys: The attribute keys to remove (default `CONTENT_ATTRIBUTES`).
    """

    def __init__(
        self, inner: SpanProcessor, *, capture_content: bool | None = None, keys: Iterable[str] = CONTENT_ATTRIBUTES
    ) -> None:
        self.inner = inner
        self.capture_content = (
            capture_content if capture_content is not None else env.env_bool(env.CYCLES_CAPTURE_CONTENT, True)
        )
        self.keys = frozenset(keys)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self.inner.on_end(span if self.capture_content else self._filtered(span))

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def _strip(self, attributes: Mapping[str, Any] | None) -> dict[str, Any]:
        return {k: v for k, v in (attributes or {}).items() if k not in self.keys}

    def _filtered(self, span: ReadableSpan) -> ReadableSpan:
        events = [Event(e.name, self._strip(e.attributes), e.timestamp) for e in span.events]
        return ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=self._strip(span.attributes),
            events=events,
            links=span.links,
            kind=span.kind,
            status=span.status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )
