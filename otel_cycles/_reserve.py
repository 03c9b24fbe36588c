"""One reservation request to the authority, classified into allowed / denied / rejected / unavailable.

runcycles' strict response check (`_schema_valid_create`) and error classification (`_build_protocol_exception`) are
reused as they are. We do not reuse `_create_reservation_with_recovery` itself because it starts a thread per attempt
to enforce a whole-request deadline; on our critical path the client's own connect/read timeouts bound the wait, and
a thread start per LLM call is measurable overhead. Like runcycles, we retry once with the same idempotency key when
the outcome is ambiguous (transport error, 5xx, malformed 2xx).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runcycles import CyclesClient, ReservationCreateResponse
from runcycles.lifecycle import _build_protocol_exception, _create_is_recoverable, _schema_valid_create
from runcycles.response import CyclesResponse

from otel_cycles import metrics
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


ReserveResult = Allowed | Denied | Rejected | Unavailable


def _is_unavailable(response: CyclesResponse) -> bool:
    return response.is_transport_error or response.is_server_error or response.status == 429


def reserve(client: CyclesClient, body: dict[str, Any]) -> ReserveResult:
    """POST /v1/reservations with at most one same-key retry on an ambiguous outcome. Never raises."""
    response: CyclesResponse | None = None
    for _attempt in range(2):
        try:
            with suppressed_instrumentation():
                response = client.create_reservation(body)
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


def record_decision(result: ReserveResult, kind: str, elapsed_s: float) -> None:
    """Count the outcome of a reservation request and record how long the decision took."""
    decision = "DENY" if isinstance(result, Denied) else "ALLOW" if isinstance(result, Allowed) else "ERROR"
    if isinstance(result, Allowed):
        decision = result.response.decision.value
    metrics.reserve_duration.record(elapsed_s, {"cycles.action.kind": kind, "cycles.decision": decision})
    reason = getattr(result, "reason_code", None) or getattr(result, "error_code", None) or ""
    metrics.decisions.add(1, {"cycles.decision": decision, "cycles.reason_code": reason, "cycles.action.kind": kind})
