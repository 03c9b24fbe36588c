"""Release the reservations of cancelled runs: the asyncio task that reserved is done but its span never ended.

A run cancelled from outside (`asyncio.wait_for` timing out, a cancelled task, a client disconnect) never reaches
`after_agent_invocation`, so its open calls were neither committed nor released: their budget stayed held until the
authority expired them at the TTL. The reaper remembers the asyncio task each reservation was made on; once that task
is done and the span has still not ended after `grace_s`, it ends the span with ERROR (`cycles.released=true`) and the
span processor releases the reservation, as for any call that never finished. Reservations made outside a task
(sync frameworks, executor threads) are not watched: their run's end-of-run sweep settles them.

A run's lookahead reservation (`_lookahead`) is watched the same way, and also released once it is too old to be
adopted (a long tool call), with or without a task: speculation never holds budget for long.

Exactly once: the registry pop is atomic, so a span that ends concurrently is settled by whichever side pops first.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from otel_cycles._registry import REGISTRY, PendingReservation, SpanKey

__all__ = ["HOOK_TASK", "OrphanReaper", "REAPER"]

logger = logging.getLogger(__name__)

HOOK_TASK: contextvars.ContextVar[asyncio.Task[object] | None] = contextvars.ContextVar(
    "otel_cycles_hook_task", default=None
)
"""The asyncio task a hook runs for when it runs on a thread on that task's behalf (`_async_hooks`)."""


@dataclass
class _Watched:
    task: weakref.ref[asyncio.Task[object]] | None
    is_open: Callable[[], bool]
    """False once the reservation was settled the normal way."""
    reap: Callable[[], bool]
    """Settle it; False if it turned out to be settled already."""
    deadline: float | None = None
    """`time.monotonic()` after which it is settled even if its task is still running."""
    done_since: float | None = None


class OrphanReaper:
    """Watches reservations made inside asyncio tasks; thread-safe; one daemon thread, alive while it has work."""

    def __init__(self, interval_s: float = 0.5, grace_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.grace_s = grace_s
        self.reaped = 0
        """Reservations released because their task was cancelled (for tests and diagnostics)."""
        self._lock = threading.Lock()  # guards _watched and _thread
        self._watched: dict[Hashable, _Watched] = {}
        self._thread: threading.Thread | None = None

    def watch(self, key: SpanKey, pending: PendingReservation) -> None:
        """Remember the current asyncio task (if any) as the owner of `pending`. Never raises."""
        self.watch_call(key, lambda: REGISTRY.get(key) is pending, lambda: self._release(key, pending))

    def watch_call(
        self, key: Hashable, is_open: Callable[[], bool], reap: Callable[[], bool], *, deadline: float | None = None
    ) -> None:
        """Call `reap()` once the current asyncio task (if any) is done, or `deadline` passed, and `is_open()` still
        holds. Never raises."""
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no running loop: a sync framework, an executor thread, or a task's hook thread
            task = HOOK_TASK.get()
        if task is None and deadline is None:
            return
        with self._lock:
            self._watched[key] = _Watched(weakref.ref(task) if task else None, is_open, reap, deadline)
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
        orphans: list[_Watched] = []
        with self._lock:
            for key, watched in list(self._watched.items()):
                if not watched.is_open():
                    del self._watched[key]  # settled normally
                    continue
                if watched.deadline is not None and now >= watched.deadline:
                    del self._watched[key]
                    orphans.append(watched)
                    continue
                task = watched.task() if watched.task is not None else None
                if watched.task is None or (task is not None and not task.done()):
                    continue
                if watched.done_since is None:
                    watched.done_since = now
                if now - watched.done_since >= self.grace_s:
                    del self._watched[key]
                    orphans.append(watched)
        reaped = 0
        for orphan in orphans:
            try:
                reaped += orphan.reap()
            except Exception:
                logger.exception("otel-cycles reaper could not settle an orphaned reservation")
        self.reaped += reaped
        return reaped

    @staticmethod
    def _release(key: SpanKey, pending: PendingReservation) -> bool:
        from otel_cycles._accounting import finish_unended

        if REGISTRY.get(key) is not pending:
            return False
        finish_unended(key, pending, "run cancelled")
        return True

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._watched = {}
        self._thread = None


REAPER = OrphanReaper()
"""The process-wide reaper."""

os.register_at_fork(after_in_child=REAPER._after_fork)
