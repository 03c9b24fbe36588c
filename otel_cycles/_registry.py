"""Open reservations, keyed by the span they guard.

The callback adds an entry when it reserves for a span; whoever sees the span finish first (the span processor's
`on_end`, or the callback's end-of-run sweep) pops it and settles it. Popping is atomic, so a reservation is settled
exactly once even with several processors attached or hooks on LangChain's executor threads.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Span

from otel_cycles._usage import UsageReading
from otel_cycles.pricing import CostBreakdown, ModelId

if TYPE_CHECKING:
    from otel_cycles._lookahead import Lookahead
    from otel_cycles._settlement import Settlement

SpanKey = tuple[int, int]
"""(trace_id, span_id) of a span."""

# The tool span reserved last in this asyncio task or thread: how `after_tool_execution` tells parallel calls apart
# where the framework passes no tool-call id (openai and llama_index run parallel calls as tasks, smolagents on a pool).
_LAST_TOOL_SPAN: contextvars.ContextVar[SpanKey | None] = contextvars.ContextVar("otel_cycles_tool_span", default=None)


def span_key(span: Any) -> SpanKey | None:
    """The registry key of an SDK span or ReadableSpan, or None for non-recording/foreign objects."""
    context = getattr(span, "context", None) or getattr(span, "get_span_context", lambda: None)()
    if context is None:
        return None
    return (context.trace_id, context.span_id)


@dataclass(frozen=True)
class Outcome:
    """How a reservation is settled."""

    commit: bool
    """False: release the reservation."""
    amount: int
    """USD_MICROCENTS to commit (0 when released)."""
    source: str
    """`local` (priced usage), `estimate`, or `released`."""
    usage: UsageReading | None = None
    breakdown: CostBreakdown | None = None
    reason: str | None = None


@dataclass
class OpenToolCall:
    """A tool call that was reserved and has not reached `after_tool_execution` yet."""

    span: Span
    call_id: str | None
    """The provider's tool-call id, where the framework exposes it (see `_frameworks.before_tool_call_id`)."""


@dataclass
class RunState:
    """Per-agent-run state, kept in the AnyAgent `Context.shared` dict (one Context per `run_async`)."""

    run_id: str
    default_provider: str | None = None
    denial: Any = None
    """The BudgetExceeded that stopped a tool call a framework swallowed; the next LLM call re-raises it."""
    keys: set[SpanKey] = field(default_factory=set)
    """Spans of this run with an open reservation."""
    tools: dict[SpanKey, OpenToolCall] = field(default_factory=dict)
    """Tool calls between their before- and after-hook; parallel calls have several (see `_frameworks`)."""
    llm_calls: int = 0
    """LLM calls seen so far; 0 at a tool call means the framework hides its LLM calls (smolagents streaming)."""
    warned_hidden_llm: bool = False
    last_ticket: int = 0
    """Settlement ticket of the run's latest commit or release; the end of the run waits for it."""
    lookahead: Lookahead | None = None
    """The background reservation for the run's next LLM call, if one was made (`_lookahead`)."""
    tool_lookaheads: list[Lookahead] = field(default_factory=list)
    """Background reservations for the tool calls the last LLM answer named (`_lookahead`)."""
    steps: int = 0
    """Governed calls that went ahead so far (caps `max_steps_remaining` count them)."""
    step_limit: int | None = None
    """Governed calls the caps allow this run in all (`_caps.step_limit`); None: no limit."""
    last_start: float | None = None
    """`time.monotonic()` when the run's latest governed call went ahead (caps `cooldown_ms`)."""
    unreserved: bool = False
    """A call of this run went ahead without a reservation (fail-open, shadow denial): its spend is an event."""
    clamp_unsupported: bool = False
    """A clamped request of this run bypassed the clamp (`_clamp`): calls that need one are refused."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Guards every other field (hooks run on executor and pool threads)."""

    def note_ticket(self, ticket: int) -> None:
        """Make the end of the run wait for settlement `ticket` too (0: nothing was queued)."""
        if ticket:
            with self.lock:
                self.last_ticket = max(self.last_ticket, ticket)

    def take_lookahead(self, tool_action: dict[str, Any] | None = None) -> Lookahead | None:
        """Remove and return the run's LLM lookahead, or with `tool_action` a lookahead made for that tool call; one
        caller gets each even when hooks race on executor threads."""
        with self.lock:
            if tool_action is None:
                lookahead, self.lookahead = self.lookahead, None
                return lookahead
            for index, candidate in enumerate(self.tool_lookaheads):
                if candidate.action == tool_action:
                    return self.tool_lookaheads.pop(index)
        return None

    def peek_lookahead(self, tool_action: dict[str, Any] | None = None) -> Lookahead | None:
        """The lookahead `take_lookahead` would return now, left in place."""
        with self.lock:
            if tool_action is None:
                return self.lookahead
            return next((held for held in self.tool_lookaheads if held.action == tool_action), None)

    def holds(self, lookahead: Lookahead) -> bool:
        """Whether `lookahead` is still the run's, unclaimed."""
        with self.lock:
            return lookahead is self.lookahead or any(lookahead is held for held in self.tool_lookaheads)

    def take_lookaheads(self) -> list[Lookahead]:
        """Remove and return every lookahead of the run (the LLM call's and the tools')."""
        with self.lock:
            taken = [self.lookahead] if self.lookahead is not None else []
            taken += self.tool_lookaheads
            self.lookahead, self.tool_lookaheads = None, []
        return taken

    def open_tool(self, span: Span, call_id: str | None) -> None:
        """Remember a reserved tool call until its after-hook (`take_tool`)."""
        key = span_key(span)
        if key is None:
            return
        with self.lock:
            self.tools[key] = OpenToolCall(span, call_id)
        _LAST_TOOL_SPAN.set(key)

    def take_tool(self, call_id: str | None, current: Span) -> Span | None:
        """The span of the tool call an `after_tool_execution` is for, removed from the open tool calls.

        By tool-call id where the framework passes one, else by the task's/thread's last reserved tool span, else the
        current span, else the only open tool call. None if nothing matches (e.g. the call was not reserved).
        """
        with self.lock:
            key: SpanKey | None = None
            if call_id is not None:
                key = next((k for k, call in self.tools.items() if call.call_id == call_id), None)
            if key is None and _LAST_TOOL_SPAN.get() in self.tools:
                key = _LAST_TOOL_SPAN.get()
            if key is None and span_key(current) in self.tools:
                key = span_key(current)
            if key is None and len(self.tools) == 1:
                key = next(iter(self.tools))
            found = self.tools.pop(key, None) if key is not None else None
        return found.span if found is not None else None

    def forget_tool(self, key: SpanKey) -> None:
        """Drop a tool call that will never reach its after-hook (cancelled, or never finished)."""
        with self.lock:
            self.tools.pop(key, None)


@dataclass
class PendingReservation:
    """A reservation (or a fail-open call) waiting for its span to finish."""

    span: Span
    run: RunState
    settlement: Settlement
    kind: str
    """`llm.completion` or `tool.execution`."""
    action: dict[str, Any]
    subject: dict[str, Any]
    estimate: int
    idempotency_key: str
    reservation_id: str | None
    """None when the call went ahead unreserved (settled as an event, see `unreserved`)."""
    unreserved: str = "fail_open_authority_unavailable"
    """Why a call without a reservation went ahead (recorded on its event): fail-open or a shadow-mode denial."""
    scope_path: str | None = None
    model: ModelId | None = None
    tool_cost: int | None = None
    """Flat cost of a tool call, committed when the tool finishes."""
    outcome: Outcome | None = None
    """Set by the callback's after-hook, so the processor commits exactly what the span says."""
    lookahead_amount: int | None = None
    """What to reserve ahead for the run's next LLM call if this one answers with tool calls; None: nothing."""


class PendingRegistry:
    """Thread-safe map from span key to its open reservation.

    Lock-free on purpose: every span end looks its span up here, on whatever thread ends it, and each operation below
    is a single dict operation, atomic in CPython (the GIL, or the dict's own lock in free-threaded builds). Only a
    run's key set is guarded, by that run's lock.
    """

    def __init__(self) -> None:
        self._entries: dict[SpanKey, PendingReservation] = {}

    def add(self, key: SpanKey, pending: PendingReservation) -> None:
        self._entries[key] = pending
        with pending.run.lock:
            pending.run.keys.add(key)

    def get(self, key: SpanKey) -> PendingReservation | None:
        return self._entries.get(key)

    def pop(self, key: SpanKey) -> PendingReservation | None:
        pending = self._entries.pop(key, None)
        if pending is not None:
            with pending.run.lock:
                pending.run.keys.discard(key)
        return pending

    def open_for_run(self, run: RunState) -> Iterator[tuple[SpanKey, PendingReservation]]:
        """The run's reservations whose spans have not finished yet (a snapshot)."""
        with run.lock:
            keys = list(run.keys)
        found = [(key, pending) for key in keys if (pending := self._entries.get(key)) is not None]
        return iter(found)

    def __len__(self) -> int:
        return len(self._entries)


REGISTRY = PendingRegistry()
"""The process-wide registry shared by every callback and processor."""
