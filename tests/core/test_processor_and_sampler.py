"""The span processor never raises or double-counts; the sampler keeps GenAI spans recorded."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Decision

from otel_cycles import CyclesSpanProcessor, GenAIRecordingSampler
from otel_cycles._request_size import size_request


def test_processor_ignores_spans_without_reservation() -> None:
    provider = TracerProvider()
    processor = CyclesSpanProcessor()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("any_agent")
    attribute_sets: tuple[dict[str, Any], ...] = (
        {},
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens": 10},
        {"gen_ai.usage.input_tokens": "garbage", "cycles.reservation.id": "not-ours"},
    )
    for attributes in attribute_sets:
        with tracer.start_as_current_span("x", attributes=attributes):
            pass
    assert processor.force_flush(1000)


def test_sampler_records_genai_spans_it_would_drop() -> None:
    sampler = GenAIRecordingSampler(ALWAYS_OFF)
    assert sampler.should_sample(None, 1, "call_llm gpt-4o").decision is Decision.RECORD_ONLY
    assert sampler.should_sample(None, 1, "execute_tool search").decision is Decision.RECORD_ONLY
    assert (
        sampler.should_sample(None, 1, "whatever", attributes={"gen_ai.operation.name": "chat"}).decision
        is Decision.RECORD_ONLY
    )
    assert sampler.should_sample(None, 1, "invoke_agent [a]").decision is Decision.DROP
    provider = TracerProvider(sampler=sampler)
    span = provider.get_tracer("any_agent").start_span("call_llm gpt-4o")
    assert span.is_recording() and not span.get_span_context().trace_flags.sampled
    span.end()


def test_request_sizing_walks_framework_objects() -> None:
    class Message:
        def __init__(self, content: str) -> None:
            self.content = content

    size = size_request(
        ([Message("a" * 400), {"role": "user", "content": "b" * 400}],),
        {"model_settings": {"max_tokens": 256}, "loop": object()},
    )
    assert size.input_tokens >= 200
    assert size.max_output_tokens == 256
    assert size_request((), {}).input_tokens == 0
