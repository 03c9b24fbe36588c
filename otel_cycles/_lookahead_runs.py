"""The lookaheads of each run (`_lookahead`): make them when an answer is in, adopt them, or release them unused.

A run holds at most one lookahead for its next LLM call (`RunState.lookahead`) and one per tool the last answer named
(`RunState.tool_lookaheads`). They are released when they do not fit the call that claims them, when a call of the
run is denied (so a denial never depends on speculation), when they grow too old to adopt (the reaper), and at the
end of the run.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from otel_cycles import metrics
from otel_cycles._accounting import TOOL_KIND
from otel_cycles._lookahead import Lookahead
from otel_cycles._reaper import REAPER
from otel_cycles._registry import PendingReservation, RunState
from otel_cycles._reserve import Allowed, ReserveResult, SentReservation
from otel_cycles._settlement import Settlement, release_body

__all__ = ["RunLookaheads"]


class RunLookaheads:
    """Makes, adopts and drops the lookaheads of one callback's runs. Thread-safe (state lives in `RunState`)."""

    def __init__(
        self,
        settlement: Settlement,
        ttl_ms: int,
        body: Callable[[dict[str, Any], int], dict[str, Any]],
        start: Callable[[dict[str, Any]], SentReservation | None],
    ):
        self._settlement = settlement
        self._start = start
        """Sends a reservation request now, returning it to be read later (`_reserve.start_reserve`)."""
        self._ttl_ms = ttl_ms
        self._body = body
        """Builds the reservation request of an action and amount."""

    def make(self, pending: PendingReservation, tools: list[tuple[str, int]], next_llm: int | None) -> None:
        """Reserve the tool calls an answer names, `(tool, estimate)`, while together they are no bigger than what the
        run may hold ahead for its next LLM call, and then that next LLM call (`next_llm`: its amount; None: the answer
        ends the run). They are sent now, in that order: the tool calls come first, right after this hook, while the
        next LLM call comes only after them, and a single-threaded authority answers in arrival order."""
        run = pending.run
        batch: list[Lookahead] = []
        room = pending.lookahead_amount or 0
        for tool, estimate in tools:
            room -= estimate
            if room < 0:
                break
            batch.append(Lookahead(self._body({"kind": TOOL_KIND, "name": tool[:256]}, estimate), estimate))
        llm = Lookahead(self._body(dict(pending.action), next_llm), next_llm) if next_llm is not None else None
        with run.lock:
            if run.denial is not None:
                return
            run.tool_lookaheads.extend(batch)
            if llm is not None and run.lookahead is None:  # at most one per run at a time
                run.lookahead = llm
                batch.append(llm)
        if batch:
            self._send(run, batch)

    def claim(
        self,
        run: RunState,
        action: dict[str, Any],
        estimate: int,
        send_here: Callable[[dict[str, Any]], ReserveResult],
    ) -> tuple[Lookahead, Allowed] | None:
        """The run's lookahead reservation if it fits this call; else None (an unfit one is released). One the lane
        has not sent yet is sent now with `send_here` if it fits, else never."""
        lookahead = run.take_lookahead(action if action["kind"] == TOOL_KIND else None)
        if lookahead is None:
            return None
        fits = lookahead.action == action and lookahead.amount >= estimate
        allowed, outcome = lookahead.claim(send_here if fits else None)
        if allowed is not None:
            if fits and lookahead.lease_left_ms(allowed, self._ttl_ms) >= self._ttl_ms / 2:
                metrics.lookahead.add(1, {"outcome": "adopted"})
                return lookahead, allowed
            self._release(run, lookahead, allowed, "lookahead did not fit the call")
            outcome = "unfit"
        metrics.lookahead.add(1, {"outcome": outcome})
        return None  # the call reserves for itself

    def unread_fileno(self, run: RunState, tool_action: dict[str, Any] | None) -> int | None:
        """The socket on which the answer of the lookahead a call would claim is arriving (the run's LLM lookahead,
        or with `tool_action` that tool call's), if it was sent and is unread; else None."""
        lookahead = run.peek_lookahead(tool_action)
        return lookahead.unread_fileno() if lookahead is not None else None

    def drop(self, run: RunState, reason: str) -> int:
        """Release the run's unused lookaheads (reading the answers of those sent); the last release's ticket or 0."""
        ticket = 0
        for lookahead in run.take_lookaheads():
            allowed, outcome = lookahead.claim()
            metrics.lookahead.add(1, {"outcome": "unused" if allowed is not None else outcome})
            if allowed is not None:
                ticket = max(ticket, self._release(run, lookahead, allowed, reason))
        return ticket

    def _send(self, run: RunState, batch: list[Lookahead]) -> None:
        for lookahead in batch:
            lookahead.start(self._start)
        # A cancelled run reaches neither its next call nor after_agent_invocation; a long tool call makes the
        # lookahead too old to adopt. Either way, release it rather than hold budget for nothing.
        deadline = time.monotonic() + self._ttl_ms / 2000
        for lookahead in batch:
            REAPER.watch_call(
                lookahead,
                functools.partial(run.holds, lookahead),
                lambda: self.drop(run, "lookahead not used") > 0,
                deadline=deadline,
            )

    def _release(self, run: RunState, lookahead: Lookahead, allowed: Allowed, reason: str) -> int:
        reservation_id = allowed.response.reservation_id
        if reservation_id is None:
            return 0
        ticket = self._settlement.release(reservation_id, release_body(lookahead.key, reason))
        run.note_ticket(ticket)
        return ticket
