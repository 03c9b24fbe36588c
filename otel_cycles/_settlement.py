"""Settle reservations off the caller's thread: one bounded queue and one worker thread per Cycles client.

A commit goes out at once and is journaled (runcycles' durable journal) only if it has not landed within `STUCK_S`
or its run stops waiting for it (docs/design.md), so it survives a slow or restarting authority, a full queue and a
killed process without a file write per commit: whatever has not landed replays the next time a Settlement is
created for the same authority and key. The commit itself goes through runcycles' own commit path
(`CyclesLifecycle._handle_commit`): same-key retries with backoff, Retry-After, the `POST /v1/events` fallback when the
reservation expired, and never a release after spend. We reuse it rather than re-implement that classification; a
commit refused for its overage (REJECT, overdraft limit) settles at the reserved estimate (`_overage`). Commits queued
together (a burst of span ends) are written one after the other before the first answer is read (`PIPELINE`), each
answer then handed to that commit path as its first attempt's, so a burst costs about one round trip.

While the authority is known down (its `_breaker` is open) nothing is sent: commits and events stay journaled and
wait, and one background attempt probes after the cool-down. At interpreter exit the wait is bounded once, for
everything (`CYCLES_EXIT_TIMEOUT_S`, none at all for an authority known down), and what is left in the journal is
reported in one log line with its location.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from opentelemetry import context as otel_context
from runcycles import CyclesClient, CyclesResponse
from runcycles._constants import RESERVATIONS_PATH
from runcycles.lifecycle import CyclesLifecycle
from runcycles.retry import CommitRetryEngine

from otel_cycles import environment_variables as env
from otel_cycles import metrics
from otel_cycles._breaker import Breaker, breaker_for, is_down, quiet_attempt
from otel_cycles._lean_client import Exchange, LeanCyclesClient, lean_client
from otel_cycles._overage import OverageAwareClient

__all__ = ["Settlement", "flush_all", "settlement_for"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE = 10_000
STUCK_S = 0.2
"""A commit that has waited this long without landing, queued or in flight (a slow or hung authority, a long burst),
is journaled by the journal guard, which looks this often while the worker is busy."""
_RELEASE_RETRY_DELAYS_S = (0.5, 1.0, 2.0)
_PREPARE_WAIT_S = 1.0
"""Longest `journal_pending` waits for the worker to finish building the bodies of the commit it took."""


PIPELINE = 16
"""Most commits the worker sends before reading the first answer (`_attempt`)."""


CommitBodies = Callable[[], tuple[dict[str, Any], dict[str, Any]]]
"""Returns a commit's request body and its `POST /v1/events` fallback body."""


@dataclass
class _Op:
    ticket: int
    kind: str
    """`commit` or `release`."""
    reservation_id: str
    body: dict[str, Any]
    event_body: dict[str, Any] | None = None
    attempt: int = 0
    build: CommitBodies | None = None
    """Builds `body` and `event_body` of a commit on the worker, off the caller's thread."""
    queued_at: float = field(default_factory=time.monotonic)


class _JournalOnceEngine(CommitRetryEngine):
    """runcycles' retry engine, minus the second journal write of a commit `Settlement.commit` already journaled, and
    paused while the authority is known down.

    `CyclesLifecycle._handle_commit` journals every commit before sending it; ours are journaled earlier, on the
    caller's thread, so writing the same record again would only put a file write between the worker and the wire.
    """

    def __init__(self, config: Any, breaker: Breaker) -> None:
        super().__init__(config)
        self._breaker = breaker
        # Our retries are waited for by `_flush_at_exit`, within the one exit deadline; runcycles' own exit hook must
        # not add a second wait of CYCLES_RETRY_FLUSH_TIMEOUT for them.
        self._flush_timeout = 0.0
        self._journaled: set[str] = set()
        self._deferred: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        """Commits on their way to the authority and not journaled yet: written only if they outlive `STUCK_S`."""
        self._journaled_lock = threading.RLock()  # re-entered: persist_pending writes through _journal_record

    @property
    def journal_dir(self) -> str | None:
        return str(self._journal.directory) if self._journal is not None else None

    def journaled(self) -> int:
        """How many commits and events wait in the journal directory (this run's and earlier ones')."""
        if self._journal is None or not self._journal.directory.is_dir():
            return 0
        return sum(1 for _ in self._journal.directory.glob("*.json"))

    def in_flight(self) -> int:
        """Retry threads still running (what is lost at exit when the journal is off)."""
        with self._threads_lock:
            return sum(1 for thread in self._threads if thread.is_alive())

    def _attempt_once(self, pending: Any) -> bool:
        if not self._breaker.acquire():
            # Known down: no request. The entry stays journaled; if the attempts run out before the authority
            # answers again, the next run replays it (and the exit line says so).
            return False
        try:
            with quiet_attempt():
                return bool(super()._attempt_once(pending))
        except BaseException:
            self._breaker.failure(may_open=False)
            raise

    def _log_exhausted(self, pending: Any) -> None:
        if self._breaker.is_open():
            logger.debug("otel-cycles: %s kept in the journal while the authority is down", pending.reservation_id)
        else:
            super()._log_exhausted(pending)

    def _classify_commit_response(self, pending: Any, response: Any) -> bool:
        self._breaker.record(is_down(response), response.error_message or "", may_open=False)
        return bool(super()._classify_commit_response(pending, response))

    def _classify_event_response(self, pending: Any, response: Any) -> bool:
        self._breaker.record(is_down(response), response.error_message or "", may_open=False)
        return bool(super()._classify_event_response(pending, response))

    def journal(self, reservation_id: str, commit_body: dict[str, Any], event_body: dict[str, Any]) -> None:
        """Journal a commit now; the next `persist_pending` of the same reservation is then a no-op."""
        super().persist_pending(reservation_id, commit_body, event_body)
        with self._journaled_lock:
            self._journaled.add(reservation_id)

    def forget(self, reservation_id: str) -> None:
        """Drop the mark of a journaled commit that will not go through `_handle_commit`."""
        with self._journaled_lock:
            self._journaled.discard(reservation_id)

    def defer(self, reservation_id: str, commit_body: dict[str, Any], event_body: dict[str, Any]) -> None:
        """Let the commit about to be sent skip its journal write (`_handle_commit`'s `persist_pending`) unless
        `journal_deferred` runs before it lands: a commit answered within `STUCK_S` never touches the disk."""
        with self._journaled_lock:
            if reservation_id not in self._journaled:
                self._deferred[reservation_id] = (commit_body, event_body)

    def journal_deferred(self) -> None:
        """Journal every deferred commit that has not landed yet (a slow request, the end of a run, exit)."""
        with self._journaled_lock:  # held while writing, so a commit landing meanwhile deletes the file after it
            deferred, self._deferred = self._deferred, {}
            for reservation_id, (commit_body, event_body) in deferred.items():
                super().persist_pending(reservation_id, commit_body, event_body)

    def persist_pending(
        self, reservation_id: str, commit_body: dict[str, Any], event_fallback_body: dict[str, Any] | None = None
    ) -> None:
        with self._journaled_lock:
            if reservation_id in self._journaled:
                self._journaled.discard(reservation_id)
                return
            if reservation_id in self._deferred:
                return
        super().persist_pending(reservation_id, commit_body, event_fallback_body)

    def _journal_record(self, pending: Any) -> None:
        # A retry or an event fallback of a deferred commit: journaled now, as runcycles does.
        with self._journaled_lock:
            self._deferred.pop(pending.reservation_id, None)
        super()._journal_record(pending)

    def _journal_discard(self, reservation_id: str) -> None:
        with self._journaled_lock:
            if self._deferred.pop(reservation_id, None) is not None:
                return  # landed before anyone journaled it: there is no file
            super()._journal_discard(reservation_id)


class _PrefetchedAnswers:
    """`client`, except that a commit whose answer the worker already read (`_attempt`) gets that answer
    instead of a second request: the first attempt of runcycles' commit path. Retries find none and send."""

    def __init__(self, client: CyclesClient) -> None:
        self._client = client
        self._answers: dict[str, CyclesResponse] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def put(self, reservation_id: str, response: CyclesResponse) -> None:
        self._answers[reservation_id] = response

    def forget(self, reservation_id: str) -> None:
        self._answers.pop(reservation_id, None)

    def commit_reservation(self, reservation_id: str, body: dict[str, Any]) -> CyclesResponse:
        answer = self._answers.pop(reservation_id, None)
        return answer if answer is not None else self._client.commit_reservation(reservation_id, body)


@contextmanager
def suppressed_instrumentation() -> Iterator[None]:
    """Set the OTel suppression flag so the Cycles client's own HTTP spans never reach our processor."""
    token = otel_context.attach(otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        yield
    finally:
        otel_context.detach(token)


class Settlement:
    """Commits and releases the reservations of one `CyclesClient`, in order, on a background thread.

    Thread-safe. `commit()` and `release()` return a ticket; `wait(ticket)` blocks until that operation (and every
    earlier one) has been attempted.
    """

    def __init__(self, client: CyclesClient, *, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        self._client = lean_client(client)  # the worker's CPU per request decides how fast commits drain
        self._base_url = client._config.base_url
        self._breaker = breaker_for(client._config)
        self._engine = _JournalOnceEngine(client._config, self._breaker)
        # Building the lifecycle hands the client to the retry engine, which replays any journaled commits a previous
        # process left behind for this authority and key.
        # The commit path (first attempts and retries) sees the client through OverageAwareClient, so a commit
        # refused for its overage still settles the reservation (see `_overage`).
        self._answers = _PrefetchedAnswers(self._client)
        with suppressed_instrumentation():
            answers = cast(CyclesClient, self._answers)
            self._lifecycle = CyclesLifecycle(cast(CyclesClient, OverageAwareClient(answers)), self._engine, {})
        self._max_queue = max_queue
        # _cond guards _queue, _issued, _attempted, _request_started, _idle, _preparing and _worker.
        self._cond = threading.Condition()
        self._queue: deque[_Op] = deque()
        self._issued = 0
        self._attempted = 0
        self._request_started: float | None = None
        """`time.monotonic()` when the worker sent its current request; None between requests."""
        self._worker: threading.Thread | None = None
        self._idle = False
        """The worker waits for work: the next submit wakes it (and only then, since every span end submits)."""
        self._preparing = False
        """The worker is building the bodies of the commit it took from the queue (neither queued nor deferred)."""
        self._guard: threading.Thread | None = None
        self._busy = threading.Event()
        """Set while the worker has work: wakes the journal guard."""
        self._closed = False

    @property
    def base_url(self) -> str:
        return self._base_url

    def commit(self, reservation_id: str, bodies: CommitBodies) -> int:
        """Queue the commit. Never raises, never does network I/O, never writes a file: the worker builds its bodies,
        and the journal guard journals it if it waits unlanded for `STUCK_S` (see the module docstring)."""
        return self._submit("commit", reservation_id, {}, build=bodies)

    def release(self, reservation_id: str, body: dict[str, Any]) -> int:
        """Queue a release. Never raises, never does network I/O."""
        return self._submit("release", reservation_id, body)

    def record_event(self, reference: str, event_body: dict[str, Any]) -> None:
        """Record spend that had no reservation (fail-open) via `POST /v1/events`, journaled and retried."""
        self._engine.schedule_event(reference, event_body)

    def wait(self, ticket: int, timeout: float) -> bool:
        """Block until operation `ticket` has been attempted; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._attempted >= ticket, timeout=timeout)

    def settle(self, ticket: int, timeout: float) -> bool:
        """`wait(ticket, timeout)`, sending on this thread whatever is queued up to `ticket` while the worker is not
        sending anything (the end of a run, whose thread would otherwise only wait: its last commit then goes out at
        once, without the hand-off to the worker and back). Each request is bounded by what is left of `timeout`."""
        if not isinstance(self._client, LeanCyclesClient):
            return self.wait(ticket, timeout)  # only the lean transport bounds a request by our deadline
        deadline = time.monotonic() + timeout

        def ours_to_send() -> bool:
            return self._free() and self._queue[0].ticket <= ticket and not self._closed

        while True:
            with self._cond:
                if not self._cond.wait_for(
                    lambda: self._attempted >= ticket or ours_to_send(), timeout=deadline - time.monotonic()
                ):
                    return False
                if self._attempted >= ticket:
                    return True
                op = self._take()
            with self._client.bounded(max(0.001, deadline - time.monotonic())):
                self._attempt([op])

    def outstanding(self) -> int:
        """The ticket of the newest queued operation if any is not attempted yet, else 0 (nothing in flight)."""
        with self._cond:
            return self._issued if self._attempted < self._issued else 0

    def flush(self, timeout: float) -> bool:
        """Wait for everything queued so far, then for runcycles' background retries; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            ticket = self._issued
        done = self.wait(ticket, timeout)
        self._engine.flush(max(0.0, deadline - time.monotonic()))
        return done

    def close(self, timeout: float) -> bool:
        """Flush (not at all if the authority is known down), stop accepting work, and say in one log line what is
        left in the journal for the next run. False if anything is left."""
        done = self.flush(0.0 if self._breaker.is_open() else timeout)
        self.journal_pending()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            self._busy.set()  # lets the journal guard see it
            queued = self._issued - self._attempted
        left = self._engine.journaled() if self._engine.journal_dir else self._engine.in_flight() + queued
        if left:
            where = (
                f"kept in {self._engine.journal_dir} and sent by the next run against this authority"
                if self._engine.journal_dir
                else "lost: the journal is disabled (CYCLES_JOURNAL_ENABLED=false)"
            )
            logger.warning("otel-cycles: %d commit(s)/event(s) not yet recorded at %s: %s", left, self._base_url, where)
        return done and not left

    def _submit(
        self,
        kind: str,
        reservation_id: str,
        body: dict[str, Any],
        event_body: dict[str, Any] | None = None,
        build: CommitBodies | None = None,
    ) -> int:
        with self._cond:
            if self._closed or len(self._queue) >= self._max_queue:
                overflow = True
            else:
                overflow = False
                self._issued += 1
                ticket = self._issued
                self._queue.append(_Op(ticket, kind, reservation_id, body, event_body, build=build))
                if self._worker is None:
                    self._ensure_worker()
                elif self._idle:
                    self._cond.notify_all()
        if overflow:
            if build is not None:
                body, event_body = build()
            return self._overflow(kind, reservation_id, body, event_body)
        return ticket

    def _overflow(self, kind: str, reservation_id: str, body: dict[str, Any], event_body: dict[str, Any] | None) -> int:
        metrics.settlement_errors.add(1, {"error.type": "queue_full", "cycles.operation": kind})
        if kind == "commit":
            # Already journaled; the retry engine delivers it on its own thread, so nothing is lost.
            self._engine.forget(reservation_id)
            self._engine.schedule(reservation_id, body, event_body)
        else:
            logger.warning(
                "otel-cycles settlement queue full; reservation %s will be returned by the authority at expiry",
                reservation_id,
            )
        with self._cond:
            return self._issued

    def _ensure_worker(self) -> None:
        # Called with _cond held, when there is no worker yet (or, after a fork, no more); it exits only once closed.
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._run, name="otel-cycles-settlement", daemon=True)
            self._worker.start()
        if self._guard is None or not self._guard.is_alive():
            self._guard = threading.Thread(target=self._guard_journal, name="otel-cycles-journal-guard", daemon=True)
            self._guard.start()

    def journal_pending(self) -> None:
        """Journal every commit not landed and not journaled yet, queued or in flight, now, on the caller's thread
        (the end of a run that stopped waiting for its commits: they are then durable when it returns, even if the
        authority never answers and the process is killed)."""
        with self._cond:  # held while writing, so the worker cannot pick up a commit half journaled
            # The commit the worker is preparing is neither queued nor deferred yet; building takes microseconds.
            self._cond.wait_for(lambda: not self._preparing, timeout=_PREPARE_WAIT_S)
            for op in self._take_unjournaled():
                self._journal(op)
            self._engine.journal_deferred()

    def _guard_journal(self) -> None:
        """Journal the commits queued behind a request that has outlived `STUCK_S` (a slow or hung authority), and the
        one in flight, when no later caller comes to do it, e.g. the last commits of a run: a killed process must still
        replay them. Sleeps while the worker is idle; while it is busy, looks every `STUCK_S` (waking on every queue
        event instead cost more CPU than a run's commits), so nothing waits unjournaled for much over `2 * STUCK_S`."""
        handled: tuple[float, int] | None = None  # a state already dealt with (a commit whose bodies failed to build)
        while True:
            self._busy.wait()
            time.sleep(STUCK_S)
            with self._cond:
                if self._closed:
                    return
                started = self._request_started
                if started is None and not self._queue:
                    self._busy.clear()  # the worker sets it again with its next request, under _cond
                    continue
                # The oldest commit waiting: the one in flight, or the head of the queue (a long burst).
                oldest = min(t for t in (started, self._queue[0].queued_at if self._queue else None) if t is not None)
                state = (oldest, self._issued)
                if time.monotonic() - oldest < STUCK_S or state == handled:
                    continue
                handled = state
                for op in self._take_unjournaled():  # under _cond, as in `journal_pending`
                    self._journal(op)
                self._engine.journal_deferred()  # the request in flight

    def _take_unjournaled(self) -> list[tuple[_Op, CommitBodies]]:
        """Queued commits nobody journaled yet, each with its body builder, now owned by the caller. With _cond held."""
        taken = []
        for op in self._queue:
            if op.build is not None:
                taken.append((op, op.build))
                op.build = None
        return taken

    def _journal(self, taken: tuple[_Op, CommitBodies]) -> None:
        op, build = taken
        try:
            op.body, op.event_body = build()
        except Exception:  # left to `_execute`, which reports it
            op.build = build
            return
        self._engine.journal(op.reservation_id, op.body, op.event_body)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._idle = True
                self._cond.wait_for(lambda: self._free() or self._closed)
                self._idle = False
                if not self._queue:
                    return
                batch = [self._take()]
                if batch[0].kind == "commit" and isinstance(self._client, LeanCyclesClient):
                    while len(batch) < PIPELINE and self._queue and self._queue[0].kind == "commit":
                        batch.append(self._queue.popleft())
            self._attempt(batch)

    def _free(self) -> bool:
        """Something is queued and nobody is sending: the next operation may be taken. With _cond held."""
        return bool(self._queue) and not self._preparing and self._request_started is None

    def _take(self) -> _Op:
        """The next operation, now owned by the caller, who must `_attempt` it. With _cond held and `_free()`.

        One operation, or the worker's batch, is attempted at a time (the worker's or a `settle` caller's), so tickets
        are attempted in order.
        """
        self._preparing = True  # `journal_pending` waits for it to be deferred in the engine
        return self._queue.popleft()

    def _attempt(self, batch: list[_Op]) -> None:
        """Send the operations of `batch` on this thread and mark each attempted as soon as it is handled.

        `batch` is one operation taken with `_take`, or, from the worker, consecutive commits taken with it. Several
        commits are pipelined: all are written one after the other without waiting, then their answers are read in
        order, each handed to runcycles' commit path as the answer of its first attempt (`_PrefetchedAnswers`), which
        classifies it, retries and journals as for a commit sent on its own. A burst of span ends (16 runs answered
        at once) then costs about one round trip instead of one each.
        """
        ready: list[bool] = []
        try:
            for op in batch:  # without _cond: a span ending meanwhile must not wait for a body build
                ready.append(self._prepare(op))
        finally:
            ready += [False] * (len(batch) - len(ready))
            with self._cond:
                self._preparing = False
                self._request_started = time.monotonic()
                self._busy.set()
                self._cond.notify_all()
        sent = self._send_ahead(batch, ready) if len(batch) > 1 else [None]
        for op, ok, exchange in zip(batch, ready, sent, strict=True):
            try:
                if exchange is not None:
                    with quiet_attempt():
                        self._answers.put(op.reservation_id, exchange.response())
                if ok:
                    self._execute(op)
            except Exception:
                metrics.settlement_errors.add(1, {"error.type": "internal", "cycles.operation": op.kind})
                logger.exception("otel-cycles failed to settle reservation %s", op.reservation_id)
            finally:
                self._answers.forget(op.reservation_id)
            with self._cond:
                self._attempted = max(self._attempted, op.ticket)
                self._cond.notify_all()
        with self._cond:
            self._request_started = None
            self._cond.notify_all()

    def _send_ahead(self, batch: list[_Op], ready: list[bool]) -> list[Exchange | None]:
        """Write the commit of each ready operation of `batch` on its own pooled connection (none while the authority
        is known down: `_execute` then journals them); their answers are read later, in order."""
        if self._breaker.is_open():
            return [None] * len(batch)
        assert isinstance(self._client, LeanCyclesClient)
        timeout = max(self._client._config.connect_timeout, self._client._config.read_timeout)
        with suppressed_instrumentation():
            return [
                self._client.start_post(f"{RESERVATIONS_PATH}/{op.reservation_id}/commit", op.body, timeout)
                if ok
                else None
                for op, ok in zip(batch, ready, strict=True)
            ]

    def _prepare(self, op: _Op) -> bool:
        """Build a commit's bodies and defer its journal write: the journal guard writes it if the request outlives
        `STUCK_S`, the end of its run if the run stops waiting for it first, so a commit that lands at once never
        touches the disk. False (and reported) if the bodies cannot be built."""
        if op.kind != "commit":
            return True
        try:
            if op.build is not None:
                op.body, op.event_body = op.build()
                op.build = None
        except Exception:
            metrics.settlement_errors.add(1, {"error.type": "internal", "cycles.operation": op.kind})
            logger.exception("otel-cycles failed to settle reservation %s", op.reservation_id)
            return False
        assert op.event_body is not None
        self._engine.defer(op.reservation_id, op.body, op.event_body)
        return True

    def _execute(self, op: _Op) -> None:
        with suppressed_instrumentation():
            if op.kind == "commit":
                assert op.event_body is not None
                if self._breaker.is_open():
                    # Known down: journal it and let the retry engine deliver it once the authority answers again.
                    self._engine.schedule(op.reservation_id, op.body, op.event_body)
                    return
                with quiet_attempt():
                    self._lifecycle._handle_commit(op.reservation_id, op.body, op.event_body)
            else:
                self._release_once(op)

    def _release_once(self, op: _Op) -> None:
        if self._breaker.is_open():
            logger.debug("otel-cycles: authority down; reservation %s is returned at expiry", op.reservation_id)
            return
        with quiet_attempt():
            response = self._client.release_reservation(op.reservation_id, op.body)
        self._breaker.record(is_down(response), response.error_message or "", may_open=False)
        if response.is_success or response.status in (404, 409, 410):
            # 409/410: already finalized or expired; either way nothing is held any more.
            return
        retryable = response.is_transport_error or response.is_server_error or response.status == 429
        if retryable and op.attempt < len(_RELEASE_RETRY_DELAYS_S):
            delay = _RELEASE_RETRY_DELAYS_S[op.attempt]
            op.attempt += 1
            timer = threading.Timer(delay, self._retry_release, args=(op,))
            timer.daemon = True
            timer.start()
            return
        metrics.settlement_errors.add(1, {"error.type": "release_failed", "cycles.operation": "release"})
        logger.warning(
            "otel-cycles could not release reservation %s (status %s); the authority returns it at expiry",
            op.reservation_id,
            response.status,
        )

    def _retry_release(self, op: _Op) -> None:
        try:
            self._execute(op)
        except Exception:
            logger.exception("otel-cycles failed to release reservation %s", op.reservation_id)

    def _after_fork(self) -> None:
        # The parent still owns its queued work (and the journal holds the commits); the child starts empty.
        self._cond = threading.Condition()
        self._queue = deque()
        self._issued = self._attempted = 0
        self._worker = self._guard = None
        self._idle = self._preparing = False
        self._busy = threading.Event()


def release_body(reservation_key: str, reason: str) -> dict[str, Any]:
    """The release request of the reservation made with idempotency key `reservation_key`."""
    return {"idempotency_key": f"release-{reservation_key}", "reason": reason[:256]}


_settlements: weakref.WeakKeyDictionary[CyclesClient, Settlement] = weakref.WeakKeyDictionary()
_settlements_lock = threading.Lock()


def settlement_for(client: CyclesClient) -> Settlement:
    """The Settlement of `client`, created on first use."""
    with _settlements_lock:
        settlement = _settlements.get(client)
        if settlement is None:
            settlement = Settlement(client)
            _settlements[client] = settlement
        return settlement


_exited = False
"""Set by `_flush_at_exit`: later flushes (the tracer provider's own shutdown at exit) return at once."""


def flush_all(timeout: float) -> bool:
    """Flush every Settlement within one overall `timeout`; False if anything was still pending."""
    deadline = time.monotonic() + (0.0 if _exited else timeout)
    with _settlements_lock:
        pending = list(_settlements.values())
    ok = True
    for settlement in pending:
        ok = settlement.flush(max(0.0, deadline - time.monotonic())) and ok
    return ok


def _reinit_after_fork() -> None:
    for settlement in list(_settlements.values()):
        settlement._after_fork()


def _flush_at_exit() -> None:
    """One bounded wait for the whole process (`CYCLES_EXIT_TIMEOUT_S`), then one line per authority about the rest."""
    global _exited
    deadline = time.monotonic() + env.env_number(env.CYCLES_EXIT_TIMEOUT_S, 3.0)
    _exited = True
    with _settlements_lock:
        pending = list(_settlements.values())
    for settlement in pending:
        settlement.close(max(0.0, deadline - time.monotonic()))


os.register_at_fork(after_in_child=_reinit_after_fork)
atexit.register(_flush_at_exit)
