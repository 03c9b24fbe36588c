"""Everything framework-specific about AnyAgent 1.18's seven backends, in one place.

The callback and the processor are framework-agnostic; what differs between tinyagent, openai, langchain,
llama_index, google, agno and smolagents (measured in docs/frameworks.md) is handled here, by duck typing on the
objects AnyAgent passes to the hooks rather than by `if framework == ...`:

- **Tool-call identity.** With parallel tool calls (openai, agno, llama_index: concurrent asyncio tasks; langchain:
  executor threads; smolagents: a thread pool) AnyAgent's single `Context.current_span` is overwritten by the second
  `before_tool_execution` before the first call finishes, so `after_tool_execution` cannot trust it.
  `before_tool_call_id` / `after_tool_call_id` find the provider's tool-call id where the framework exposes it;
  the callback falls back to a context variable (asyncio tasks, pool threads) and then to the current span.
- **Tool output.** When the callback re-targets `current_span` to the right tool span, `tool_output_attributes` rebuilds
  the `gen_ai.output` attributes AnyAgent's span generation would have put on it (it wrote them to the wrong span).
- **Starting on the right span.** For the same reason `before_tool_execution` cannot trust `current_span` either:
  between AnyAgent's span generation setting it and our hook reading it, a parallel call's thread may set it again.
  `track_current_span()` records, per thread, the last `current_span` this thread assigned; `started_span(context)`
  returns it. A hook chain runs synchronously on one thread, so that is the span opened for this very call.
- **Ending the right tool span.** Re-targeting `current_span` is not enough under threads: another call's hook can
  move it again between our hook and AnyAgent's `SpanEndCallback` (seen with langchain under load). So the callback
  also hands the span to end to `SpanEndCallback` through a thread-local (`end_here`); a whole after-hook chain runs
  on one thread, so the hand-over cannot cross calls. `install_span_end_handover()` patches `SpanEndCallback`
  once, at import of the callback module.
- **agno's second run.** any-agent 1.18 restores agno's tool hook under the wrong name (`arun_function_calls`)
  when a run ends, so the second `run` of the same agent fails with a `TypeError`. `fix_agno_unwrap()` replaces
  that one method with the intended restore.
- **llama_index usage.** any-agent's llama_index LLM always streams and drops the usage chunk, so its `call_llm`
  spans report 0/0 and calls are committed at their estimate. `llama_index_model_type()` is an opt-in model type that
  keeps the usage (pinned to any-agent 1.18's `AnyLLMWrapper`).

Everything here reads private shapes of pinned versions (any-agent 1.18, see pyproject) and must never raise.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator, Mapping
from typing import Any

from any_agent.callbacks import Context
from any_agent.callbacks.span_end import SpanEndCallback
from opentelemetry.trace import Span, Status, StatusCode

__all__ = [
    "adopt_started",
    "after_tool_call_id",
    "end_here",
    "fix_agno_unwrap",
    "started_span",
    "track_current_span",
    "install_span_end_handover",
    "before_tool_call_id",
    "llama_index_model_type",
    "tool_output_attributes",
]

_TOOL_CALL_ID = "gen_ai.tool.call.id"
_OUTPUT = "gen_ai.output"
_OUTPUT_TYPE = "gen_ai.output.type"
_ERROR_MARKER = "Error calling tool:"  # any-agent's rule for a failed tool (span_generation/base.py)


def _text_id(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def before_tool_call_id(
    span_attributes: Mapping[str, Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> str | None:
    """The provider's id of the tool call `before_tool_execution` was called for, if the framework exposes it.

    google and agno put it on the span; openai passes an `agents.ToolContext` (`.tool_call_id`); langchain passes
    `tool_call_id` in kwargs; agno passes a `FunctionCall` (`.call_id`). tinyagent, llama_index and smolagents: none.
    """
    found = _text_id(span_attributes.get(_TOOL_CALL_ID)) or _text_id(kwargs.get("tool_call_id"))
    if found or not args:
        return found
    return _text_id(getattr(args[0], "tool_call_id", None)) or _text_id(getattr(args[0], "call_id", None))


def after_tool_call_id(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str | None:
    """The tool-call id in the arguments of `after_tool_execution`, if any.

    langchain's output is a `ToolMessage` (`.tool_call_id`); agno passes `(result, FunctionCall)`; google's
    `tool_context` has `.function_call_id`. openai, llama_index, smolagents and tinyagent pass only the output.
    """
    context = kwargs.get("tool_context")
    if context is not None:
        return _text_id(getattr(context, "function_call_id", None))
    if len(args) >= 2 and hasattr(args[1], "call_id"):
        return _text_id(args[1].call_id)
    if args:
        return _text_id(getattr(args[0], "tool_call_id", None))
    return None


def _tool_output(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    # Mirrors the output extraction of any-agent 1.18's per-framework span generation (after_tool_execution).
    if "tool_response" in kwargs:  # google
        return kwargs["tool_response"]
    if len(args) >= 2 and hasattr(args[1], "call_id") and hasattr(args[1], "result"):  # agno
        return args[1].result
    if not args:
        return None
    output = args[0]
    raw = getattr(output, "raw_output", None)  # llama_index ToolOutput
    if raw is not None:
        content = getattr(raw, "content", None)
        if isinstance(content, list) and content and hasattr(content[0], "text"):
            return content[0].text
        return raw
    content = getattr(output, "content", None)  # langchain ToolMessage
    if content:
        return content
    return output


def tool_output_attributes(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], Status]:
    """The `gen_ai.output*` attributes and status any-agent would set for the output in these hook arguments."""
    output = _tool_output(args, kwargs)
    if output is None:
        output = "{}"
    if isinstance(output, str):
        text = output
        try:
            json.loads(output)
            kind = "json"
        except ValueError:
            kind = "text"
    else:
        kind = "json"
        try:
            text = json.dumps(output, default=str, ensure_ascii=False)
        except (TypeError, ValueError):
            text = str(output)
    failed = kind == "text" and _ERROR_MARKER in text
    status = Status(StatusCode.ERROR, text) if failed else Status(StatusCode.OK)
    return {_OUTPUT: text, _OUTPUT_TYPE: kind}, status


_handover = threading.local()


def track_current_span() -> None:
    """Record, per thread, the span each `Context.current_span` assignment made (see `started_span`)."""
    if getattr(Context.__setattr__, "_otel_cycles_tracking", False):
        return

    def __setattr__(self: Context, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name == "current_span":
            _handover.started = (self, value)

    __setattr__._otel_cycles_tracking = True  # type: ignore[attr-defined]
    Context.__setattr__ = __setattr__  # type: ignore[method-assign,assignment]


def started_span(context: Context) -> Any:
    """The span this thread last made current on `context`: the one AnyAgent just opened for this hook's call."""
    started = getattr(_handover, "started", None)
    if started is not None and started[0] is context:
        return started[1]
    return context.current_span


def adopt_started(context: Context, span: Any) -> None:
    """Make `started_span(context)` on this thread return `span`: for a hook run on a thread other than the one that
    opened its span (`_async_hooks` runs tinyagent's before-hooks on a pool thread)."""
    _handover.started = (context, span)


def end_here(context: Context, span: Span) -> None:
    """Tell this thread's `SpanEndCallback.after_tool_execution` (which runs right after us) to end `span`."""
    _handover.pending = (context, span)


_end_lock = threading.Lock()  # makes "still open? then end it and record it" one step across threads


def install_span_end_handover() -> None:
    """Make AnyAgent's `SpanEndCallback` end the tool span our after-hook identified, not whatever `current_span` is.

    It does what any-agent's `_span_end` does (end the span, add it to the AgentTrace) on that span directly, never
    through the shared `current_span`, which a parallel call's thread may move at any moment, and never twice.
    """
    if getattr(SpanEndCallback.after_tool_execution, "_otel_cycles_handover", False):
        return

    def after_tool_execution(self: SpanEndCallback, context: Context, *args: Any, **kwargs: Any) -> Context:
        pending = getattr(_handover, "pending", None)
        _handover.pending = None
        span = pending[1] if pending is not None and pending[0] is context else context.current_span
        with _end_lock:
            if not span.is_recording():  # a parallel call's chain already ended and recorded it
                return context
            span.end()
        context.trace.add_span(span)
        return context

    after_tool_execution._otel_cycles_handover = True  # type: ignore[attr-defined]
    SpanEndCallback.after_tool_execution = after_tool_execution  # type: ignore[method-assign]


def fix_agno_unwrap() -> None:
    """Restore agno's `arun_function_call` under its own name when a run ends (any-agent 1.18 `_AgnoWrapper.unwrap`
    assigns it to `arun_function_calls`, which breaks every later run of the same agent)."""
    from any_agent.callbacks.wrappers.agno import _AgnoWrapper

    if getattr(_AgnoWrapper.unwrap, "_otel_cycles_fixed", False):
        return

    async def unwrap(self: Any, agent: Any) -> None:
        model = agent._agent.model
        if self._original_aprocess_model is not None:
            model._aprocess_model_response = self._original_aprocess_model
        if self._original_arun_function_call is not None:
            model.arun_function_call = self._original_arun_function_call

    unwrap._otel_cycles_fixed = True  # type: ignore[attr-defined]
    _AgnoWrapper.unwrap = unwrap  # type: ignore[method-assign]


class _GovernanceStopEcho(logging.Filter):
    """Drops LangChain's "Error in _LangChainTracingCallback.<hook> callback: BudgetExceeded(...)" warning.

    any-agent's handler sets `raise_error`, so the stop propagates and the run reports it; the line only repeats it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg != "Error in %s.%s callback: %s" or len(args) != 3 or args[0] != "_LangChainTracingCallback":
            return True
        return not str(args[2]).startswith(_stop_names())


def _stop_names() -> tuple[str, ...]:
    from otel_cycles.errors import GovernanceStop

    found, todo = [], [GovernanceStop]
    while todo:
        cls = todo.pop()
        found.append(f"{cls.__name__}(")
        todo.extend(cls.__subclasses__())
    return tuple(found)


def quiet_langchain_stop_echo() -> None:
    """Install `_GovernanceStopEcho` on LangChain's callback-manager logger (idempotent)."""
    target = logging.getLogger("langchain_core.callbacks.manager")
    if not any(isinstance(f, _GovernanceStopEcho) for f in target.filters):
        target.addFilter(_GovernanceStopEcho())


def llama_index_model_type() -> type[Any]:
    """An any-agent llama_index `model_type` whose `call_llm` spans carry the real token usage.

    any-agent 1.18's llama_index LLM (`AnyLLMWrapper`) always streams, and its `_astream_chat` skips chunks without
    `choices`, which is where OpenAI-compatible APIs put the usage (`stream_options.include_usage`); its spans then
    report 0/0 tokens and otel-cycles commits the reservation estimate (`gen_ai.usage.cost.source=estimate`). This
    subclass asks streaming requests for usage and gives the usage-only chunk an empty-delta choice, so the usage
    reaches `AgentOutput.raw` and any-agent's span generation. Opt-in, since it changes the requests the agent sends:

    ```python
    AgentConfig(model_id="openai:gpt-4o", model_type=otel_cycles.llama_index_model_type(), callbacks=[callback])
    ```

    Like every non-default `model_type`, it does not receive `AgentConfig.any_llm_args`. Requires the llama_index extra.
    """
    global _llama_model_type
    if _llama_model_type is None:
        _llama_model_type = _build_llama_model_type()
    return _llama_model_type


_llama_model_type: type[Any] | None = None


def _build_llama_model_type() -> type[Any]:
    from any_agent.frameworks.llama_index import DEFAULT_MODEL_TYPE

    async def with_usage_choice(stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for chunk in stream:
            if not chunk.choices and chunk.usage is not None:
                empty = [{"index": 0, "delta": {}, "finish_reason": None}]
                chunk = chunk.model_validate({**chunk.model_dump(), "choices": empty})
            yield chunk

    class _UsageClient:
        """The any-llm client, with usage requested on streaming calls and kept in a chunk that has a choice."""

        def __init__(self, client: Any) -> None:
            self._client = client

        def __getattr__(self, name: str) -> Any:
            return getattr(self._client, name)

        async def acompletion(self, **kwargs: Any) -> Any:
            if not kwargs.get("stream"):
                return await self._client.acompletion(**kwargs)
            options = dict(kwargs.get("stream_options") or {})
            options.setdefault("include_usage", True)
            kwargs["stream_options"] = options
            return with_usage_choice(await self._client.acompletion(**kwargs))

    class UsageReportingAnyLLM(DEFAULT_MODEL_TYPE):
        """any-agent's llama_index `AnyLLMWrapper`, keeping the streamed token usage (see `llama_index_model_type`)."""

        async def _astream_chat(self, messages: Any, **kwargs: Any) -> Any:
            if self._client is not None and not isinstance(self._client, _UsageClient):
                self._client = _UsageClient(self._client)  # type: ignore[assignment]
            return await super()._astream_chat(messages, **kwargs)

    return UsageReportingAnyLLM
