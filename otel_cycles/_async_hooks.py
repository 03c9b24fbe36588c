"""Keep tinyagent's event loop free while a hook waits for the Cycles authority.

Every framework but tinyagent requires synchronous hooks, so `CyclesBudgetCallback`'s are synchronous, and a
reservation round trip in `before_llm_call` / `before_tool_execution` (or the end-of-run wait for the run's commits)
blocks the thread that runs the hook. For tinyagent that thread is the event loop: every other run on that loop (how
a service runs many agents) stalls for each round trip. tinyagent awaits hooks that are coroutine functions, so while
a tinyagent agent is wrapped for its runs, its `CyclesBudgetCallback`s are swapped for `AsyncHooks`, whose blocking
hooks run the same synchronous code on a small thread pool and await it; a run alone on its loop (one `agent.run()`)
runs them inline, since it would only wait for the pool thread itself. A before-hook whose reservation was sent
ahead (a lookahead, `_lookahead`) needs no thread either: it awaits the answer's socket on the loop (`add_reader`)
and, once the answer is in, runs on the loop without blocking it; only if the answer is not in within the reserve
timeout does it take the pool thread, whose read is then bounded by that timeout once more. The end of a run whose
commits are already attempted has nothing to wait for, and runs on the loop too. The after-hooks do no
network I/O and stay on the loop: they must, since they hand the span to end over to AnyAgent's `SpanEndCallback`
through a thread-local.

A hook run on a pool thread sees the task's context variables, and its changes to them are copied back to the task
(the tool-call bookkeeping of `_registry` relies on one); the span AnyAgent just opened is read on the loop, before
any other run can move `Context.current_span`, and handed to the thread (`_frameworks.adopt_started`); the run's task
is handed over too, so the orphan reaper still releases a cancelled run's reservations (`_reaper.HOOK_TASK`).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from any_agent.callbacks import Callback, Context

from otel_cycles import _frameworks
from otel_cycles._reaper import HOOK_TASK

__all__ = ["AsyncHooks", "install_for_tinyagent"]

_POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="otel-cycles-hook")
"""Threads for hooks waiting on the authority; a round trip holds one for about a millisecond."""

_MISSING = object()


async def _off_loop(
    hook: Callable[..., Context],
    context: Context,
    args: tuple[Any, ...],
    kwargs: Any,
    arriving: Callable[[Context, Any], int | None] | None = None,
    wait_s: float = 0.0,
) -> Context:
    loop = asyncio.get_running_loop()
    if len(asyncio.all_tasks(loop)) <= 1:
        # The run is alone on its loop (one `agent.run()`): blocking the loop stalls nobody, and the hop to a pool
        # thread and back would be two thread switches per hook for nobody's benefit (docs/design.md).
        return hook(context, *args, **kwargs)
    span = _frameworks.started_span(context)  # on the loop, before anything can move current_span
    fd = arriving(context, span) if arriving is not None else None
    if fd is not None and await _answer_in(loop, fd, wait_s):
        # The reservation was sent ahead and its answer is in: the hook reads it without blocking the loop, so it
        # runs here, without the two thread switches of the hop.
        _frameworks.adopt_started(context, span)
        return hook(context, *args, **kwargs)
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


_awaited: set[tuple[int, int]] = set()
"""(loop id, socket) pairs a hook awaits: a loop has one reader per socket, so a second waiter takes the hop instead."""


async def _answer_in(loop: asyncio.AbstractEventLoop, fd: int, wait_s: float) -> bool:
    """Wait, without blocking the loop, until socket `fd` is readable (an answer is arriving on it) or `wait_s`
    passes; False on timeout or if the socket cannot be watched (then the hook takes the hop and reads it there)."""
    waiter = (id(loop), fd)
    if waiter in _awaited:
        return False
    readable: asyncio.Future[bool] = loop.create_future()

    def on_readable() -> None:  # called on every loop turn while readable, until removed
        if not readable.done():
            readable.set_result(True)

    try:
        loop.add_reader(fd, on_readable)
    except (OSError, ValueError):  # closed meanwhile (the reaper dropped the lookahead)
        return False
    _awaited.add(waiter)
    try:
        return await asyncio.wait_for(readable, wait_s)
    except TimeoutError:
        return False
    finally:
        _awaited.discard(waiter)
        loop.remove_reader(fd)


class Governed(Protocol):
    """What `AsyncHooks` needs of a `CyclesBudgetCallback` (not imported here: it imports this module)."""

    reserve_timeout_s: float

    def _answer_arriving(self, context: Context, span: Any, *, tool: bool) -> int | None: ...

    def _run_settled(self, context: Context) -> bool: ...

    def before_agent_invocation(self, context: Context, *args: Any, **kwargs: Any) -> Context: ...

    def before_llm_call(self, context: Context, *args: Any, **kwargs: Any) -> Context: ...

    def after_llm_call(self, context: Context, *args: Any, **kwargs: Any) -> Context: ...

    def before_tool_execution(self, context: Context, *args: Any, **kwargs: Any) -> Context: ...

    def after_tool_execution(self, context: Context, *args: Any, **kwargs: Any) -> Context: ...

    def after_agent_invocation(self, context: Context, *args: Any, **kwargs: Any) -> Context: ...


class AsyncHooks(Callback):
    """A `CyclesBudgetCallback` seen through coroutine hooks where it would block: see the module docstring."""

    def __init__(self, inner: Governed) -> None:
        self.inner = inner
        self._wait_s = float(inner.reserve_timeout_s)

    def before_agent_invocation(self, context: Context, *args: Any, **kwargs: Any) -> Context:
        return self.inner.before_agent_invocation(context, *args, **kwargs)

    async def before_llm_call(self, context: Context, *args: Any, **kwargs: Any) -> Context:  # type: ignore[override]
        arriving = functools.partial(self.inner._answer_arriving, tool=False)
        return await _off_loop(self.inner.before_llm_call, context, args, kwargs, arriving, self._wait_s)

    def after_llm_call(self, context: Context, *args: Any, **kwargs: Any) -> Context:
        return self.inner.after_llm_call(context, *args, **kwargs)

    async def before_tool_execution(  # type: ignore[override]
        self, context: Context, *args: Any, **kwargs: Any
    ) -> Context:
        arriving = functools.partial(self.inner._answer_arriving, tool=True)
        return await _off_loop(self.inner.before_tool_execution, context, args, kwargs, arriving, self._wait_s)

    def after_tool_execution(self, context: Context, *args: Any, **kwargs: Any) -> Context:
        return self.inner.after_tool_execution(context, *args, **kwargs)

    async def after_agent_invocation(  # type: ignore[override]
        self, context: Context, *args: Any, **kwargs: Any
    ) -> Context:
        if self.inner._run_settled(context):  # nothing to wait for: no hop
            return self.inner.after_agent_invocation(context, *args, **kwargs)
        return await _off_loop(self.inner.after_agent_invocation, context, args, kwargs)


def install_for_tinyagent(governed: type[Governed]) -> None:
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
