"""Bound the output tokens of a governed LLM call's request (caps `max_tokens`, soft landing).

No hook argument can carry a new `max_tokens` into the request in most frameworks (measured, docs/frameworks.md §8:
tinyagent, smolagents and agno pass the hook a copy of the call's keyword arguments; langchain's `invocation_params`
and llama_index's step arguments are not what the model is called with). What all seven have in common is the
request itself: with any-agent's default model types every model request goes through any-llm's
`AnyLLM.acompletion` (directly, through `any_llm.acompletion`, or through the sync `AnyLLM.completion`, which calls
it on the caller's thread before handing the coroutine to a loop). So:

1. `before_llm_call` registers the bound for the run, keyed by the trace id (`bound`); AnyAgent itself finds a run's
   context by the trace id of the current span, which is the same on the hook's thread and where the request is made.
2. `AnyLLM.acompletion`, patched once (`install`), lowers `max_tokens` (and `max_completion_tokens`, if set) to the
   bound of the current trace, when it is called (not when its coroutine runs, which may be on another loop), and
   counts the clamp.
3. `after_llm_call` takes the bound back (`finish`) and learns whether it was applied. A request that bypassed
   any-llm (a custom `model_type` such as LangChain's `ChatOpenAI`) was not clamped: the callback then refuses every
   later call of the run that needs a clamp.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import get_current_span

__all__ = ["bound", "finish", "install"]


@dataclass
class _Bound:
    tokens: int
    applied: int = 0


_lock = threading.Lock()  # guards _bounds
_bounds: dict[int, _Bound] = {}


def bound(trace_id: int, tokens: int) -> None:
    """Clamp the next model requests of trace `trace_id` to at most `tokens` output tokens, until `finish`."""
    with _lock:
        _bounds[trace_id] = _Bound(tokens)


def finish(trace_id: int) -> bool | None:
    """Stop clamping trace `trace_id`; whether a request was clamped since `bound` (None: nothing was bound)."""
    with _lock:
        found = _bounds.pop(trace_id, None)
    return None if found is None else found.applied > 0


def _clamped(kwargs: dict[str, Any]) -> None:
    trace_id = get_current_span().get_span_context().trace_id
    with _lock:
        found = _bounds.get(trace_id)
        if found is None:
            return
        found.applied += 1
    for key in ("max_tokens", "max_completion_tokens"):
        value = kwargs.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            kwargs[key] = min(value, found.tokens)
    if not kwargs.get("max_completion_tokens"):
        kwargs["max_tokens"] = min(kwargs.get("max_tokens") or found.tokens, found.tokens)


def install() -> None:
    """Patch `any_llm.AnyLLM.acompletion` once so registered bounds reach the request."""
    from any_llm import AnyLLM

    original: Callable[..., Any] = AnyLLM.acompletion
    if getattr(original, "_otel_cycles_clamp", False):
        return

    # A plain function returning the original coroutine: the bound is read on the caller's thread and context.
    def acompletion(self: Any, *args: Any, **kwargs: Any) -> Any:
        _clamped(kwargs)
        return original(self, *args, **kwargs)

    acompletion._otel_cycles_clamp = True  # type: ignore[attr-defined]
    AnyLLM.acompletion = acompletion  # type: ignore[method-assign]
