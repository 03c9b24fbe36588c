"""`GET /v1/reservations`: filters, sort and keyset pagination, built from whitelisted SQL fragments only."""

from __future__ import annotations

import hashlib
from typing import Any

from otel_cycles.authority._errors import invalid
from otel_cycles.authority._sql import Queries
from otel_cycles.authority._validation import SUBJECT_LEVELS, parse_iso_ms
from otel_cycles.authority._views import decode_cursor, encode_cursor, reservation_view
from otel_cycles.authority.ledger import SQLiteLedger

__all__ = ["list_reservations"]

# sort_by value -> (column, row index). Column names come only from this table, never from the request.
_SORT_COLUMNS = {
    "reservation_id": ("reservation_id", 0),
    "tenant": ("tenant_id", 1),
    "scope_path": ("scope_path", 7),
    "status": ("state", 2),
    "reserved": ("estimate", 6),
    "created_at_ms": ("created_at_ms", 10),
    "expires_at_ms": ("expires_at_ms", 11),
}
_WINDOWS = (
    ("from", "to", "created_at_ms"),
    ("expires_from", "expires_to", "expires_at_ms"),
    ("finalized_from", "finalized_to", "finalized_at_ms"),
)
_STATUSES = frozenset({"ACTIVE", "COMMITTED", "RELEASED", "EXPIRED"})
_SELECT = f"SELECT {Queries.RESERVATION_COLUMNS} FROM reservations WHERE tenant_id = ?"


def _limit(params: dict[str, str]) -> int:
    raw = params.get("limit", "50")
    try:
        limit = int(raw)
    except ValueError:
        raise invalid("limit must be an integer between 1 and 200") from None
    if not 1 <= limit <= 200:
        raise invalid("limit must be an integer between 1 and 200")
    return limit


def _sort_value(value: Any) -> bool:
    """Whether a cursor's sort value can be bound as a parameter (a string or a 64-bit integer)."""
    if isinstance(value, str):
        return True
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def list_reservations(ledger: SQLiteLedger, tenant: str, params: dict[str, str]) -> dict[str, Any]:
    """Return a `ReservationListResponse` page for `tenant` from query `params` (already single-valued)."""
    limit = _limit(params)
    sort_by = params.get("sort_by") or "created_at_ms"
    if sort_by not in _SORT_COLUMNS:
        raise invalid(f"sort_by must be one of {', '.join(_SORT_COLUMNS)}")
    sort_dir = params.get("sort_dir") or "desc"
    if sort_dir not in ("asc", "desc"):
        raise invalid("sort_dir must be asc or desc")
    column, index = _SORT_COLUMNS[sort_by]
    where = [_SELECT]
    args: list[Any] = [tenant]
    binding: list[str] = [sort_by, sort_dir]
    status = params.get("status")
    if status:
        if status not in _STATUSES:
            raise invalid(f"status must be one of {', '.join(sorted(_STATUSES))}")
        where.append("AND state = ?")
        args.append(status)
    key = params.get("idempotency_key")
    if key:
        where.append("AND idempotency_key = ?")
        args.append(key)
    for level in SUBJECT_LEVELS[1:]:
        value = params.get(level)
        if value:
            # Match the exact segment anywhere in the canonical path ("/" delimiters on both sides).
            where.append("AND instr('/' || scope_path || '/', ?) > 0")
            args.append(f"/{level}:{value.lower()}/")
    for lo_name, hi_name, field in _WINDOWS:
        lo = parse_iso_ms(params.get(lo_name, ""), lo_name)
        hi = parse_iso_ms(params.get(hi_name, ""), hi_name)
        if lo is not None and hi is not None and lo > hi:
            raise invalid(f"{lo_name} must not be after {hi_name}")
        if lo is not None:
            where.append(f"AND {field} >= ?")
            args.append(lo)
        if hi is not None:
            where.append(f"AND {field} <= ?")
            args.append(hi)
    binding.extend(f"{k}={params.get(k, '')}" for k in ("status", "idempotency_key", *SUBJECT_LEVELS[1:]))
    binding.extend(f"{k}={params.get(k, '')}" for pair in _WINDOWS for k in pair[:2])
    filter_hash = hashlib.sha256("\x1f".join(binding).encode()).hexdigest()[:16]
    op = "<" if sort_dir == "desc" else ">"
    cursor = params.get("cursor")
    if cursor:
        decoded = decode_cursor(cursor)
        valid = _sort_value(decoded.get("v")) and isinstance(decoded.get("id"), str)
        if decoded.get("f") != filter_hash or not valid:
            raise invalid("cursor does not match this query's filters or sort")
        where.append(f"AND ({column} {op} ? OR ({column} = ? AND reservation_id {op} ?))")
        args.extend([decoded["v"], decoded["v"], decoded["id"]])
    direction = "DESC" if sort_dir == "desc" else "ASC"
    where.append(f"ORDER BY {column} {direction}, reservation_id {direction} LIMIT ?")
    args.append(limit + 1)
    rows = ledger.reservation_rows(" ".join(where), args)
    include = {token.strip() for token in params.get("include", "").split(",")}
    page = rows[:limit]
    out: dict[str, Any] = {
        "reservations": [
            reservation_view(r, metadata="metadata" in include, committed_metadata="committed_metadata" in include)
            for r in page
        ],
        "has_more": len(rows) > limit,
    }
    if len(rows) > limit:
        last = page[-1]
        out["next_cursor"] = encode_cursor({"f": filter_hash, "v": last[index], "id": last[0]})
    return out
