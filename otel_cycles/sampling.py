"""`GenAIRecordingSampler`: head sampling that never skips a commit.

A span the sampler drops is a `NonRecordingSpan`: no processor sees it end and its usage attributes are lost, so
its reservation could only be released, never committed. This wrapper keeps the wrapped sampler's decision for
export but upgrades DROP to RECORD_ONLY for GenAI spans (AnyAgent's `call_llm ...` and `execute_tool ...`, or any
span created with `gen_ai.operation.name`): they are recorded and committed, just not exported.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes

__all__ = ["GenAIRecordingSampler"]

_GENAI_SPAN_PREFIXES = ("call_llm ", "execute_tool ", "chat ", "text_completion ", "generate_content ")


def is_genai_span(name: str, attributes: Attributes) -> bool:
    """Whether a span, judged at creation time, is an LLM or tool call that may carry a reservation."""
    if attributes and "gen_ai.operation.name" in attributes:
        return True
    return name.startswith(_GENAI_SPAN_PREFIXES)


class GenAIRecordingSampler(Sampler):
    """Wraps `delegate`; spans it drops are still recorded (not exported) when they are GenAI calls.

    Example:
        `TracerProvider(sampler=GenAIRecordingSampler(ParentBased(TraceIdRatioBased(0.1))))`
    """

    def __init__(self, delegate: Sampler) -> None:
        self.delegate = delegate

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        result = self.delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)
        if result.decision is Decision.DROP and is_genai_span(name, attributes):
            return SamplingResult(Decision.RECORD_ONLY, attributes, result.trace_state)
        return result

    def get_description(self) -> str:
        return f"GenAIRecordingSampler{{{self.delegate.get_description()}}}"
