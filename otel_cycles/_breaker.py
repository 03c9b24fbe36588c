"""A circuit breaker per Cycles authority (base URL + API key): once it is known down, stop waiting on it.

Without it, every call of a fail-open run waits for the authority's timeouts again, and every background commit or
event retry hits the dead server and logs it. The breaker is shared by everything that talks to one authority with
one key (the callbacks' reservations, the Settlement worker, runcycles' retry threads):

* **closed** (normal): requests go out. A reservation that finds the authority down (transport error or 5xx, after
  its same-key retry) opens it. A failed background commit or event does not: runcycles' backoff retries it as
  before, since one dropped connection or 503 on the side is weak evidence.
* **open**: the authority is known down. Fail-open reservations let the call through at once without a request;
  background commits and events stay journaled and wait. After a cool-down (`CYCLES_BREAKER_COOLDOWN_S`, doubled after
  each failed probe up to `_MAX_COOLDOWN_S`) the breaker is **half-open**:
* **half-open**: exactly one caller, the probe, is let through (`acquire()`), reservation or background delivery;
  everyone else still fails open or waits. Any answer from the authority closes the breaker; another failure re-opens
  it. A probe that never reports (a crashed thread) is given up after `_PROBE_LEASE_S`.

429 (rate limited) does not count as down: the authority is up and answering. Fail-closed reservations never ask the
breaker for permission (each call tries, and stops the agent if the authority is down), but their outcomes feed it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from runcycles import CyclesConfig
from runcycles.response import CyclesResponse

from otel_cycles import environment_variables as env
from otel_cycles import metrics

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "Breaker", "breaker_for", "is_down", "quiet_attempt"]

logger = logging.getLogger(__name__)

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

_MAX_COOLDOWN_S = 60.0
_PROBE_LEASE_S = 60.0
"""A probe holding the half-open slot longer than this (it crashed without reporting) lets another caller probe."""


def is_down(response: CyclesResponse) -> bool:
    """Whether a response says the authority is unreachable or failing (as opposed to answering, even with 4xx/429)."""
    return bool(response.is_transport_error or response.is_server_error)


class Breaker:
    """The breaker of one authority and key. Thread-safe; never blocks on anything but its own lock."""

    def __init__(self, base_url: str, cooldown_s: float) -> None:
        self.base_url = base_url
        self.cooldown_s = cooldown_s
        """The first cool-down; each failed probe doubles it, up to `_MAX_COOLDOWN_S`."""
        self._lock = threading.Lock()  # guards every field below
        self._state = CLOSED
        self._open_until = 0.0
        self._failures = 0
        """Consecutive failed attempts since the breaker last closed (drives the cool-down)."""
        self._probe_since = 0.0

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    def is_open(self) -> bool:
        """True while the authority is known down (open or half-open): background work should wait."""
        with self._lock:
            return self._state != CLOSED

    def acquire(self) -> bool:
        """May the caller send a request now? True when closed, or when the caller becomes the half-open probe."""
        now = time.monotonic()
        with self._lock:
            if self._state == CLOSED:
                return True
            if self._state == OPEN and now < self._open_until:
                return False
            if self._state == HALF_OPEN and now - self._probe_since < _PROBE_LEASE_S:
                return False
            self._state, self._probe_since = HALF_OPEN, now
        _transition(HALF_OPEN)
        return True

    def record(self, down: bool, detail: str = "", *, may_open: bool = True) -> None:
        """Report the outcome of a request: `down` if the authority was unreachable or failing. With
        `may_open=False` (background requests) a failure only keeps an open breaker open."""
        if down:
            self.failure(detail, may_open=may_open)
        else:
            self.success()

    def success(self) -> None:
        with self._lock:
            if self._state == CLOSED:
                self._failures = 0
                return
            self._state, self._failures = CLOSED, 0
        _transition(CLOSED)
        logger.warning("otel-cycles: authority %s answers again; reservations resume", self.base_url)

    def failure(self, detail: str = "", *, may_open: bool = True) -> None:
        now = time.monotonic()
        with self._lock:
            was = self._state
            if was == CLOSED and not may_open:
                return
            self._failures += 1
            cooldown = min(self.cooldown_s * 2 ** (self._failures - 1), _MAX_COOLDOWN_S)
            self._state, self._open_until = OPEN, now + cooldown
        if was == OPEN:
            return  # a background request that was already in flight when the breaker opened
        _transition(OPEN)
        if was == CLOSED:
            logger.warning(
                "otel-cycles: authority %s unreachable%s; tried again in %.0fs, until then fail-open calls proceed "
                "at once and their spend is kept to be recorded later",
                self.base_url,
                f" ({detail})" if detail else "",
                cooldown,
            )


def _transition(state: str) -> None:
    metrics.breaker_transitions.add(1, {"cycles.breaker.state": state})


_breakers: dict[tuple[str, str], Breaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(config: CyclesConfig) -> Breaker:
    """The breaker of `config`'s authority and API key, created on first use."""
    key = (config.base_url, config.api_key)
    with _breakers_lock:
        breaker = _breakers.get(key)
        if breaker is None:
            cooldown = env.env_number(env.CYCLES_BREAKER_COOLDOWN_S, 2.0, minimum=0.01)
            breaker = _breakers[key] = Breaker(config.base_url, cooldown)
        return breaker


# runcycles logs every failed attempt (a transport error line from its client, a "failed" line from its retry engine):
# dozens of lines while an authority is down. Around our own background attempts those lines are dropped; the breaker
# says it once instead. Records from other threads (the user's own runcycles use) and every other record, a lost or
# rejected commit above all, pass.
_TRANSIENT_PREFIXES = (
    "Transport error on ",
    "Commit failed (retryable)",
    "Commit retry failed",
    "Event fallback failed:",
)
_quiet = threading.local()


class _TransientAttemptFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (getattr(_quiet, "active", False) and str(record.msg).startswith(_TRANSIENT_PREFIXES))


_filter = _TransientAttemptFilter()
for _name in ("runcycles.client", "runcycles.retry", "runcycles.lifecycle", "otel_cycles._lean_client"):
    logging.getLogger(_name).addFilter(_filter)


@contextmanager
def quiet_attempt() -> Iterator[None]:
    """Silence runcycles' per-attempt failure lines on this thread for the block (the breaker reports instead)."""
    _quiet.active = True
    try:
        yield
    finally:
        _quiet.active = False
