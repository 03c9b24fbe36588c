"""The lookahead of each run (`_lookahead`): queue it behind an answer's commit, adopt it, or release it unused.

At most one lookahead per run exists at a time (`RunState.lookahead`). It is released when it does not fit the call
that claims it, when a call of the run is denied (so a denial never depends on speculation), when it grows too old to
adopt (the reaper), and at the end of the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from otel_cycles import metrics
from otel_cycles._lookahead import Lookahead
from otel_cycles._reaper import REAPER
from otel_cycles._registry import PendingReservation, RunState
from otel_cycles._reserve import Allowed
from otel_cycles._settlement import Settlement, release_body

__all__ = ["LOOKAHEAD_WAIT_S", "RunLookaheads"]

LOOKAHEAD_WAIT_S = 5.0
"""How long a hook waits for a lookahead request already on the wire before reserving (or ending) without it."""


class RunLookaheads:
    """Makes, adopts and drops the lookaheads of one callback's runs. Thread-safe (state lives in `RunState`)."""

    def __init__(self, settlement: Settlement, ttl_ms: int, body: Callable[[dict[str, Any], int], dict[str, Any]]):
        self._settlement = settlement
        self._ttl_ms = ttl_ms
        self._body = body
        """Builds the reservation request of an action and amount."""

    def make(self, pending: PendingReservation, amount: int) -> None:
        """Make the reservation of the run's next LLM call (queued by `settle`, behind this call's commit)."""
        run = pending.run
        lookahead = Lookahead(self._body(dict(pending.action), amount), amount)
        with run.lock:
            if run.lookahead is not None or run.denial is not None:
                return
            run.lookahead = lookahead
        pending.lookahead = lookahead
        # A cancelled run reaches neither its next LLM call nor after_agent_invocation; a long tool call makes the
        # lookahead too old to adopt. Either way, release it rather than hold budget for nothing.
        REAPER.watch_call(
            lookahead,
            lambda: run.lookahead is lookahead,
            lambda: self.drop(run, "lookahead not used", wait_s=LOOKAHEAD_WAIT_S) > 0,
            deadline=time.monotonic() + self._ttl_ms / 2000,
        )

    def claim(self, run: RunState, action: dict[str, Any], estimate: int) -> tuple[Lookahead, Allowed] | None:
        """The run's lookahead reservation if it fits this call; else None (an unfit one is released)."""
        lookahead = run.take_lookahead()
        if lookahead is None:
            return None
        allowed, outcome = lookahead.claim(LOOKAHEAD_WAIT_S)
        if allowed is not None:
            fits = lookahead.action == action and lookahead.amount >= estimate
            if fits and lookahead.lease_left_ms(allowed, self._ttl_ms) >= self._ttl_ms / 2:
                metrics.lookahead.add(1, {"outcome": "adopted"})
                return lookahead, allowed
            self._release(run, lookahead, allowed, "lookahead did not fit the call")
            outcome = "unfit"
        metrics.lookahead.add(1, {"outcome": outcome})
        return None  # the call reserves for itself

    def drop(self, run: RunState, reason: str, *, wait_s: float) -> int:
        """Release the run's unused lookahead, waiting up to `wait_s` for one on the wire; the release's ticket or 0."""
        lookahead = run.take_lookahead()
        if lookahead is None:
            return 0
        allowed, outcome = lookahead.claim(wait_s)
        metrics.lookahead.add(1, {"outcome": "unused" if allowed is not None else outcome})
        return self._release(run, lookahead, allowed, reason) if allowed is not None else 0

    def _release(self, run: RunState, lookahead: Lookahead, allowed: Allowed, reason: str) -> int:
        reservation_id = allowed.response.reservation_id
        if reservation_id is None:
            return 0
        ticket = self._settlement.release(reservation_id, release_body(lookahead.key, reason))
        run.note_ticket(ticket)
        return ticket
