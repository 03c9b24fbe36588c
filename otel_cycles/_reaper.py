"""Release the reservations of cancelled runs: the asyncio task that reserved is done but its span never ended.

A run cancelled from outside (`asyncio.wait_for` timing out, a cancelled task, a client disconnect) never reaches
`after_agent_invocation`, so its open calls were neither committed nor released: their budget stayed held until the
authority expired them at the TTL. The reaper remembers the asyncio task each reservation was made on; once that task
is done and the span has still not ended after `grace_s`, it ends the span with ERROR (`cycles.released=true`) and the
span processor releases the reservation, as for any call that never finished. Reservations made outside a task
(sync frameworks, executor threads) are not watched: their run's end-of-run sweep settles them.

Exactly once: the registry pop is atomic, so a span that ends concurrently is settled by whichever side pops first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass

from otel_cycles._registry import REGISTRY, PendingReservation, SpanKey

__all__ = ["OrphanReaper", "REAPER"]

logger = logging.getLogger(__name__)


@dataclass
class _Watched:
    pending: PendingReservation
    task: weakref.ref[asyncio.Task[object]]
    done_since: float | None = None


class OrphanReaper:
    """Watches reservations made inside asyncio tasks; thread-safe; one daemon thread, alive while it has work."""

    def __init__(self, interval_s: float = 0.5, grace_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.grace_s = grace_s
        self.reaped = 0
        """Reservations released because their task was cancelled (for tests and diagnostics)."""
        self._lock = threading.Lock()  # guards _watched and _thread
        self._watched: dict[SpanKey, _Watched] = {}
        self._thread: threading.Thread | None = None

    def watch(self, key: SpanKey, pending: PendingReservation) -> None:
        """Remember the current asyncio task (if any) as the owner of `pending`. Never raises."""
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no running loop: a sync framework or an executor thread
            return
        if task is None:
            return
        with self._lock:
            self._watched[key] = _Watched(pending, weakref.ref(task))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="otel-cycles-reaper", daemon=True)
                self._thread.start()

    def __len__(self) -> int:
        with self._lock:
            return len(self._watched)

    def _run(self) -> None:
        while True:
            time.sleep(self.interval_s)
            try:
                self.sweep()
            except Exception:
                logger.exception("otel-cycles reaper sweep failed")
            with self._lock:
                if not self._watched:
                    self._thread = None
                    return

    def sweep(self, now: float | None = None) -> int:
        """One pass; returns how many reservations it released."""
        now = time.monotonic() if now is None else now
        orphans: list[tuple[SpanKey, PendingReservation]] = []
        with self._lock:
            for key, watched in list(self._watched.items()):
                if REGISTRY.get(key) is not watched.pending:
                    del self._watched[key]  # settled normally
                    continue
                task = watched.task()
                if task is not None and not task.done():
                    continue
                if watched.done_since is None:
                    watched.done_since = now
                if now - watched.done_since >= self.grace_s:
                    del self._watched[key]
                    orphans.append((key, watched.pending))
        reaped = 0
        for key, pending in orphans:
            reaped += self._release(key, pending)
        self.reaped += reaped
        return reaped

    @staticmethod
    def _release(key: SpanKey, pending: PendingReservation) -> int:
        from otel_cycles._accounting import finish_unended

        if REGISTRY.get(key) is not pending:
            return 0
        finish_unended(key, pending, "run cancelled")
        return 1

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._watched = {}
        self._thread = None


REAPER = OrphanReaper()
"""The process-wide reaper."""

os.register_at_fork(after_in_child=REAPER._after_fork)
