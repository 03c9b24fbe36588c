"""Stored rows rendered as the API's shapes: timestamps, pagination cursors, `Tenant`, `BudgetLedger`, reservations."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timezone
from typing import Any

from otel_cycles.authority._errors import invalid
from otel_cycles.authority._model import DUMPS, Budget

__all__ = ["decode_cursor", "encode_cursor", "iso", "ledger_view", "reservation_view", "tenant_view"]


def iso(ms: int) -> str:
    """Format epoch milliseconds as an RFC 3339 UTC timestamp."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_cursor(payload: dict[str, Any]) -> str:
    """Encode an opaque pagination cursor."""
    return base64.urlsafe_b64encode(DUMPS(payload).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    """Decode a cursor made by `encode_cursor`; 400 INVALID_REQUEST when it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise invalid("cursor is not valid") from None
    if not isinstance(value, dict):
        raise invalid("cursor is not valid")
    return value


def tenant_view(row: tuple[Any, ...]) -> dict[str, Any]:
    """Render a tenant row as the admin `Tenant` shape (unset limits show their defaults)."""
    out: dict[str, Any] = {"tenant_id": row[0], "name": row[1], "status": row[2]}
    if row[3]:
        out["parent_tenant_id"] = row[3]
    out["default_commit_overage_policy"] = row[4] or "ALLOW_IF_AVAILABLE"
    out["default_reservation_ttl_ms"] = row[5] or 60_000
    out["max_reservation_ttl_ms"] = row[6] or 3_600_000
    out["max_reservation_extensions"] = row[7] or 10
    if row[8]:
        out["metadata"] = json.loads(row[8])
    out["created_at"] = iso(row[9])
    out["updated_at"] = iso(row[10])
    return out


def ledger_view(b: Budget) -> dict[str, Any]:
    """Render a budget as the admin `BudgetLedger` shape."""
    unit = b.unit
    out: dict[str, Any] = {
        "ledger_id": b.ledger_id,
        "tenant_id": b.tenant_id,
        "scope": b.scope,
        "scope_path": b.scope,
        "unit": unit,
        "allocated": {"unit": unit, "amount": b.allocated},
        "remaining": {"unit": unit, "amount": b.remaining},
        "reserved": {"unit": unit, "amount": b.reserved},
        "spent": {"unit": unit, "amount": b.spent},
        "debt": {"unit": unit, "amount": b.debt},
        "overdraft_limit": {"unit": unit, "amount": b.overdraft_limit},
        "is_over_limit": b.is_over_limit,
        "status": b.status,
        "created_at": iso(b.created_at_ms),
        "updated_at": iso(b.updated_at_ms),
    }
    if b.commit_overage_policy:
        out["commit_overage_policy"] = b.commit_overage_policy
    return out


def reservation_view(row: tuple[Any, ...], *, metadata: bool, committed_metadata: bool) -> dict[str, Any]:
    """Render a reservation row as `ReservationDetail` / `ReservationSummary` (absent fields omitted)."""
    unit = row[5]
    out: dict[str, Any] = {
        "reservation_id": row[0],
        "status": row[2],
        "idempotency_key": row[13],
        "subject": json.loads(row[3]),
        "action": json.loads(row[4]),
        "reserved": {"unit": unit, "amount": row[6]},
        "created_at_ms": row[10],
        "expires_at_ms": row[11],
        "scope_path": row[7],
        "affected_scopes": json.loads(row[8]),
    }
    if row[2] == "COMMITTED":
        out["committed"] = {"unit": unit, "amount": row[18]}
    if row[20] is not None:
        out["finalized_at_ms"] = row[20]
    if metadata and row[15] is not None:
        out["metadata"] = json.loads(row[15])
    if committed_metadata and row[19] is not None:
        out["committed_metadata"] = json.loads(row[19])
    return out
