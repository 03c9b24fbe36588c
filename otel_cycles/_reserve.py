"""One reservation request to the authority, classified into allowed / denied / rejected / unavailable.

runcycles' strict response check (`_schema_valid_create`) and error classification (`_build_protocol_exception`) are
reused as they are. We do not reuse `_create_reservation_with_recovery` itself because it starts a thread per attempt
to enforce a whole-request deadline; on our critical path the client's own connect/read timeouts bound the wait, and
a thread start per LLM call is measurable overhead. Like runcycles, we retry once with the same idempotency key when
the outcome is ambiguous (transport error, 5xx, malformed 2xx).

On the critical path the whole exchange, retry included, is bounded by `timeout_s` (`CYCLES_RESERVE_TIMEOUT_S`): the
client's read timeout (5 s by default) applied twice made a hung authority cost ~10 s per call. With a `Breaker`
(`_breaker`), outcomes are reported to it, and with `gate=True` (fail-open) a call does not even ask an authority that
is known down.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
from runcycles import CyclesClient, ReservationCreateResponse
from runcycles._constants import IDEMPOTENCY_KEY_HEADER, RESERVATIONS_PATH
from runcycles.lifecycle import _build_protocol_exception, _create_is_recoverable, _schema_valid_create
from runcycles.response import CyclesResponse

from otel_cycles import metrics
from otel_cycles._breaker import Breaker, quiet_attempt
from otel_cycles._lean_client import Exchange, LeanCyclesClient
from otel_cycles._settlement import suppressed_instrumentation
from otel_cycles.errors import DENIAL_REASONS


@dataclass(frozen=True)
class Allowed:
    response: ReservationCreateResponse


@dataclass(frozen=True)
class Denied:
    reason_code: str
    message: str


@dataclass(frozen=True)
class Rejected:
    status: int
    error_code: str | None
    message: str


@dataclass(frozen=True)
class Unavailable:
    status: int
    message: str
    breaker: str = "closed"
    """`closed`: this request found the authority down; `open`/`half_open`: not asked, it is known down."""


ReserveResult = Allowed | Denied | Rejected | Unavailable


def _is_unavailable(response: CyclesResponse) -> bool:
    return response.is_transport_error or response.is_server_error or response.status == 429


def reserve(
    client: CyclesClient,
    body: dict[str, Any],
    *,
    timeout_s: float | None = None,
    breaker: Breaker | None = None,
    gate: bool = False,
) -> ReserveResult:
    """POST /v1/reservations with at most one same-key retry on an ambiguous outcome. Never raises.

    Args:
        timeout_s: Bound on the whole exchange; None: the client's own timeouts per attempt.
        breaker: Told whether the authority answered.
        gate: Ask `breaker` first; if the authority is known down, return `Unavailable` without a request.
    """
    if breaker is not None and gate and not breaker.acquire():
        return Unavailable(-1, "authority known down, not asked", breaker.state)
    result = _reserve(client, body, timeout_s)
    if breaker is not None:
        if isinstance(result, Unavailable) and (result.status < 0 or result.status >= 500):
            breaker.failure(result.message)
        else:
            breaker.success()
    return result


def start_reserve(
    client: CyclesClient, body: dict[str, Any], *, timeout_s: float, breaker: Breaker | None = None
) -> SentReservation | None:
    """Send POST /v1/reservations now and return it as a `SentReservation`, whose `read()` reads and classifies its
    answer on whichever thread needs it first. None when it cannot go out that way (a client that is not lean, an
    authority known down, a failed send): nothing was sent, and the call reserves the usual way."""
    if not isinstance(client, LeanCyclesClient) or (breaker is not None and breaker.is_open()):
        return None
    per_operation = min(max(client._config.connect_timeout, client._config.read_timeout), timeout_s)
    with suppressed_instrumentation():
        exchange = client.start_post(RESERVATIONS_PATH, body, per_operation)
    if exchange is None:
        if breaker is not None:  # unreachable: open the breaker, so the answer's other lookaheads are not tried
            breaker.failure("could not send a lookahead reservation")
        return None
    return SentReservation(client, body, exchange, timeout_s, breaker)


class SentReservation:
    """A reservation request already on the wire (`start_reserve`), its answer not read yet.

    An answer that is not a valid reservation (a transport error, 5xx, malformed) is retried by `reserve` with the
    same idempotency key, so the outcome is classified as for a request made the usual way; reading it and the retry
    together take at most `timeout_s` from when the answer is read.
    """

    def __init__(
        self, client: CyclesClient, body: dict[str, Any], exchange: Exchange, timeout_s: float, breaker: Breaker | None
    ) -> None:
        self._client = client
        self._body = body
        self._exchange = exchange
        self._timeout_s = timeout_s
        self._breaker = breaker

    def fileno(self) -> int:
        """The socket the answer arrives on: readable once it is in (`_async_hooks` awaits that)."""
        return self._exchange.fileno()

    def read(self) -> ReserveResult:
        """Read and classify the answer (once)."""
        breaker = self._breaker
        deadline = time.monotonic() + self._timeout_s
        with quiet_attempt():
            response = self._exchange.response()
        parsed = _schema_valid_create(response)
        if parsed is None:
            left = deadline - time.monotonic()
            if left > 0.01:
                return reserve(self._client, self._body, timeout_s=left, breaker=breaker)
            if breaker is not None:
                breaker.failure(response.error_message or f"HTTP {response.status}")
            return Unavailable(response.status, response.error_message or f"HTTP {response.status}")
        if breaker is not None:
            breaker.success()
        if parsed.is_allowed():
            return Allowed(parsed)
        return Denied(parsed.reason_code or "BUDGET_EXCEEDED", "reservation denied")


def _reserve(client: CyclesClient, body: dict[str, Any], timeout_s: float | None) -> ReserveResult:
    response: CyclesResponse | None = None
    deadline = time.monotonic() + timeout_s if timeout_s is not None else None
    for _attempt in range(2):
        left = deadline - time.monotonic() if deadline is not None else None
        if left is not None and left <= 0.01 and response is not None:
            break  # no time left for the retry: the first outcome stands
        try:
            with suppressed_instrumentation():
                response = _create(client, body, left)
        except Exception as exc:  # the client converts httpx errors itself; anything else is unexpected
            response = CyclesResponse.transport_error(exc)
        parsed = _schema_valid_create(response)
        if parsed is not None:
            if parsed.is_allowed():
                return Allowed(parsed)
            return Denied(parsed.reason_code or "BUDGET_EXCEEDED", "reservation denied")
        if not _create_is_recoverable(response):
            break
    assert response is not None
    if _is_unavailable(response) or response.is_success:
        detail = response.error_message or f"HTTP {response.status}"
        return Unavailable(response.status, detail)
    error = _build_protocol_exception("Reservation failed", response)
    code = error.error_code or error.reason_code
    if code in DENIAL_REASONS:
        return Denied(code, str(error))
    return Rejected(response.status, code, str(error))


def _create(client: CyclesClient, body: dict[str, Any], timeout_s: float | None) -> CyclesResponse:
    """`client.create_reservation(body)`, with every httpx timeout capped at `timeout_s` (None: the client's own)."""
    if timeout_s is None:
        return client.create_reservation(body)
    if isinstance(client, LeanCyclesClient):
        with quiet_attempt():  # the breaker reports an unreachable authority, once
            per_operation = max(client._config.connect_timeout, client._config.read_timeout)
            return client.post_bounded(RESERVATIONS_PATH, body, min(per_operation, timeout_s))
    config = client._config
    timeout = httpx.Timeout(
        connect=min(config.connect_timeout, timeout_s),
        read=min(config.read_timeout, timeout_s),
        write=timeout_s,
        pool=timeout_s,
    )
    headers = {IDEMPOTENCY_KEY_HEADER: str(body["idempotency_key"])}
    try:
        response = client._http.post(RESERVATIONS_PATH, json=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:  # runcycles' client converts these the same way (minus its error log line)
        return CyclesResponse.transport_error(exc)
    return client._handle_response(response)


def record_decision(result: ReserveResult, kind: str, elapsed_s: float) -> None:
    """Count the outcome of a reservation request and record how long the decision took."""
    decision = "DENY" if isinstance(result, Denied) else "ALLOW" if isinstance(result, Allowed) else "ERROR"
    if isinstance(result, Allowed):
        decision = result.response.decision.value
    metrics.reserve_duration.record(elapsed_s, {"cycles.action.kind": kind, "cycles.decision": decision})
    reason = getattr(result, "reason_code", None) or getattr(result, "error_code", None) or ""
    metrics.decisions.add(1, {"cycles.decision": decision, "cycles.reason_code": reason, "cycles.action.kind": kind})
