"""Keep per-span reservations alive while their call runs: one heartbeat thread per Cycles client.

runcycles' own heartbeat (`CyclesLifecycle._start_heartbeat`) is not reused: it starts a thread per reservation (a
measurable cost on every LLM call) and, by the spec's retry-reserve rule, beats only when the TTL exceeds about
25 s with default timeouts. Here one thread serves every open reservation of a client from a heap of due times. A
reservation is extended (`POST /v1/reservations/{id}/extend`, `extend_by_ms = ttl_ms`) once half of its remaining
lease has elapsed; a transient failure is retried with the same idempotency key while the lease lasts; a permanent
one (404, 410, `RESERVATION_EXPIRED`, `RESERVATION_FINALIZED`, `MAX_EXTENSIONS_EXCEEDED`, ...) stops the beat. A
reservation stops being watched as soon as its span is settled (it left the registry). If the lease is lost anyway,
nothing is lost: the commit falls back to `POST /v1/events` (see `_settlement`).
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any

from runcycles import CyclesClient
from runcycles.lifecycle import _PERMANENT_EXTEND_CODES, _schema_valid_extend
from runcycles.retry import _extract_error_code

from otel_cycles._registry import REGISTRY, PendingReservation, SpanKey
from otel_cycles._settlement import suppressed_instrumentation

__all__ = ["Heartbeat", "heartbeat_for"]

logger = logging.getLogger(__name__)

_LEAD_FRACTION = 0.5
"""Extend once this fraction of the remaining lease has elapsed."""
_MAX_RETRY_DELAY_S = 1.0


_MIN_PRUNE = 64


@dataclass(order=True)
class _Beat:
    due: float
    seq: int
    key: SpanKey = field(compare=False)
    pending: PendingReservation = field(compare=False)
    ttl_ms: int = field(compare=False)
    expires_mono: float = field(compare=False)
    """Local monotonic estimate of the lease end."""
    body: dict[str, Any] | None = field(default=None, compare=False)
    """The extend body awaiting a definite answer (its key is reused on retry)."""


class Heartbeat:
    """Extends the open reservations of one client until their spans are settled. Thread-safe."""

    def __init__(self, client: CyclesClient) -> None:
        self._client = client
        # _cond guards _heap, _seq and _thread.
        self._cond = threading.Condition()
        self._heap: list[_Beat] = []
        self._prune_at = _MIN_PRUNE
        self._seq = 0
        self._thread: threading.Thread | None = None
        self.extensions = 0
        """Successful extensions so far (for tests and diagnostics)."""

    def watch(self, key: SpanKey, pending: PendingReservation, ttl_ms: int, remaining_ttl_ms: int | None) -> None:
        """Keep `pending`'s reservation alive while it is in the registry under `key`. Never raises or blocks."""
        if pending.reservation_id is None or ttl_ms <= 0:
            return
        now = time.monotonic()
        lease_s = (remaining_ttl_ms if remaining_ttl_ms is not None else ttl_ms) / 1000
        with self._cond:
            self._seq += 1
            beat = _Beat(now + lease_s * _LEAD_FRACTION, self._seq, key, pending, ttl_ms, now + lease_s)
            heapq.heappush(self._heap, beat)
            if len(self._heap) >= self._prune_at:
                # The thread sleeps until the earliest beat is due, so settled calls pile up meanwhile; prune them
                # here, amortised O(1) per call, so the heap stays proportional to the calls actually open.
                self._drop_settled()
                self._prune_at = max(_MIN_PRUNE, 2 * len(self._heap))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="otel-cycles-heartbeat", daemon=True)
                self._thread.start()
            elif self._heap[0] is beat:
                # Wake the thread only if this beat is due before the one it sleeps for: waking it for every
                # reservation would make it compete with the agent's thread on each call.
                self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._heap)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    self._drop_settled()
                    if not self._heap:
                        self._thread = None  # the next watch() starts a fresh thread
                        return
                    wait = self._heap[0].due - time.monotonic()
                    if wait <= 0:
                        beat = heapq.heappop(self._heap)
                        break
                    self._cond.wait(timeout=wait)
            try:
                again = self._beat(beat)
            except Exception:
                logger.exception("otel-cycles heartbeat failed for reservation %s", beat.pending.reservation_id)
                again = None
            if again is not None:
                with self._cond:
                    heapq.heappush(self._heap, again)

    def _drop_settled(self) -> None:
        # Called with _cond held. A settled span left the registry; its reservation needs no more beats.
        alive = [b for b in self._heap if REGISTRY.get(b.key) is b.pending]
        if len(alive) != len(self._heap):
            self._heap = alive
            heapq.heapify(self._heap)

    def _beat(self, beat: _Beat) -> _Beat | None:
        if REGISTRY.get(beat.key) is not beat.pending:
            return None
        reservation_id = beat.pending.reservation_id
        assert reservation_id is not None
        body = beat.body or {"idempotency_key": str(uuid.uuid4()), "extend_by_ms": beat.ttl_ms}
        with suppressed_instrumentation():
            response = self._client.extend_reservation(reservation_id, body)
        now = time.monotonic()
        parsed = _schema_valid_extend(response)
        if parsed is not None:
            self.extensions += 1
            remaining_s = (parsed.remaining_ttl_ms if parsed.remaining_ttl_ms is not None else beat.ttl_ms) / 1000
            beat.body = None
            beat.expires_mono = now + remaining_s
            beat.due = now + remaining_s * _LEAD_FRACTION
            return beat
        code = _extract_error_code(response)
        transient = response.is_transport_error or response.is_server_error or response.status == 429
        transient = transient or response.is_success  # an ambiguous 2xx: retry the same key
        if not transient or response.status in (404, 410) or code in _PERMANENT_EXTEND_CODES:
            logger.info("otel-cycles heartbeat stops for %s (status %s, %s)", reservation_id, response.status, code)
            return None
        left = beat.expires_mono - now
        if left <= 0:
            return None  # the lease is gone; the commit falls back to an event
        beat.body = body
        retry_after = (response.retry_after_ms_header or 0) / 1000
        beat.due = now + min(max(retry_after, left / 4), _MAX_RETRY_DELAY_S, left)
        return beat

    def _after_fork(self) -> None:
        self._cond = threading.Condition()
        self._heap = []
        self._thread = None


_heartbeats: weakref.WeakKeyDictionary[CyclesClient, Heartbeat] = weakref.WeakKeyDictionary()
_heartbeats_lock = threading.Lock()


def heartbeat_for(client: CyclesClient) -> Heartbeat:
    """The Heartbeat of `client`, created on first use."""
    with _heartbeats_lock:
        heartbeat = _heartbeats.get(client)
        if heartbeat is None:
            heartbeat = _heartbeats[client] = Heartbeat(client)
        return heartbeat


def _reinit_after_fork() -> None:
    for heartbeat in list(_heartbeats.values()):
        heartbeat._after_fork()


os.register_at_fork(after_in_child=_reinit_after_fork)
