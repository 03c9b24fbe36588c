"""Keep tinyagent's event loop free while a hook waits for the Cycles authority.

Every framework but tinyagent requires synchronous hooks, so `CyclesBudgetCallback`'s are synchronous, and a
reservation round trip in `before_llm_call` / `before_tool_execution` (or the end-of-run wait for the run's commits)
blocks the thread that runs the hook. For tinyagent that thread is the event loop: every other run on that loop (how
a service runs many agents) stalls for each round trip. tinyagent awaits hooks that are coroutine functions, so while
a tinyagent agent is wrapped for its runs, its `CyclesBudgetCallback`s are swapped for `AsyncHooks`, whose blocking
hooks run the same synchronous code on a small thread pool and await it; a run alone on its loop (one `agent.run()`)
runs them inline, since it would only wait for the pool thread itself. The after-hooks do no network I/O and stay
on the loop: they must, since they hand the span to end over to AnyAgent's `SpanEndCallback` through a thread-local.

A hook run on a pool thread sees the task's context variables, and its changes to them are copied back to the task
(the tool-call bookkeeping of `_registry` relies on one); the span AnyAgent just opened is read on the loop, before
any other run can move `Context.current_span`, and handed to the thread (`_frameworks.adopt_started`); the run's task
is handed over too, so the orphan reaper still releases a cancelled run's reservations (`_reaper.HOOK_TASK`).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from any_agent.callbacks import Callback, Context

from otel_cycles import _frameworks
from otel_cycles._reaper import HOOK_TASK

__all__ = ["AsyncHooks", "install_for_tinyagent"]

_POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="otel-cycles-hook")
"""Threads for hooks waiting on the authority; a round trip holds one for about a millisecond."""

_MISSING = object()


async def _off_loop(hook: Callable[..., Context], context: Context, args: tuple[Any, ...], kwargs: Any) -> Context:
    loop = asyncio.get_running_loop()
    if len(asyncio.all_tasks(loop)) <= 1:
        # The run is alone on its loop (one `agent.run()`): blocking the loop stalls nobody, and the hop to a pool
        # thread and back would be two thread switches per hook for nobody's benefit (docs/design.md).
        return hook(context, *args, **kwargs)
    span = _frameworks.started_span(context)  # on the loop, before anything can move current_span
    copied = contextvars.copy_context()
    copied.run(HOOK_TASK.set, asyncio.current_task())

    def call() -> Context:
        _frameworks.adopt_started(context, span)
        return hook(context, *args, **kwargs)

    try:
        return await loop.run_in_executor(_POOL, copied.run, call)
    finally:
        for var, value in copied.items():
            if var is not HOOK_TASK and var.get(_MISSING) is not value:
                var.set(value)


class AsyncHooks(Callback):
    """A `CyclesBudgetCallback` seen through coroutine hooks where it would block: see the module docstring."""

    def __init__(self, inner: Callback) -> None:
        self.inner = inner

    def before_agent_invocation(self, context: Context, *args: Any, **kwargs: Any) -> Context:
        return self.inner.before_agent_invocation(context, *args, **kwargs)

    async def before_llm_call(self, context: Context, *args: Any, **kwargs: Any) -> Context:  # type: ignore[override]
        return await _off_loop(self.inner.before_llm_call, context, args, kwargs)

    def after_llm_call(self, context: Context, *args: Any, **kwargs: Any) -> Context:
        return self.inner.after_llm_call(context, *args, **kwargs)

    async def before_tool_execution(  # type: ignore[override]
        self, context: Context, *args: Any, **kwargs: Any
    ) -> Context:
        return await _off_loop(self.inner.before_tool_execution, context, args, kwargs)

    def after_tool_execution(self, context: Context, *args: Any, **kwargs: Any) -> Context:
        return self.inner.after_tool_execution(context, *args, **kwargs)

    async def after_agent_invocation(  # type: ignore[override]
        self, context: Context, *args: Any, **kwargs: Any
    ) -> Context:
        return await _off_loop(self.inner.after_agent_invocation, context, args, kwargs)


def install_for_tinyagent(governed: type[Callback]) -> None:
    """Swap the `governed` callbacks of a tinyagent agent for `AsyncHooks` while AnyAgent has the agent wrapped.

    AnyAgent wraps an agent when its first concurrent run starts and unwraps it when its last one ends; the agent's
    `config.callbacks` list is restored then, so the user's configuration is what it was between runs.
    """
    from any_agent.callbacks.wrappers.tinyagent import _TinyAgentWrapper

    if getattr(_TinyAgentWrapper.wrap, "_otel_cycles_async_hooks", False):
        return
    original_wrap, original_unwrap = _TinyAgentWrapper.wrap, _TinyAgentWrapper.unwrap

    async def wrap(self: Any, agent: Any) -> None:
        callbacks = agent.config.callbacks
        if any(isinstance(callback, governed) for callback in callbacks):
            self._otel_cycles_callbacks = callbacks
            agent.config.callbacks = [AsyncHooks(c) if isinstance(c, governed) else c for c in callbacks]
        await original_wrap(self, agent)

    async def unwrap(self: Any, agent: Any) -> None:
        await original_unwrap(self, agent)
        callbacks = getattr(self, "_otel_cycles_callbacks", None)
        if callbacks is not None:
            agent.config.callbacks = callbacks
            self._otel_cycles_callbacks = None

    wrap._otel_cycles_async_hooks = True  # type: ignore[attr-defined]
    _TinyAgentWrapper.wrap = wrap  # type: ignore[method-assign]
    _TinyAgentWrapper.unwrap = unwrap  # type: ignore[method-assign]
