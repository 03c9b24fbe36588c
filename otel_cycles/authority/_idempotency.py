"""Idempotent replay: the canonical payload digest, and storing and replaying a key's first response.

Every mutating operation looks its `(tenant, endpoint, idempotency_key)` up first: the same payload gets the stored
response back, a different payload gets 409 `IDEMPOTENCY_MISMATCH`. Replayed reservation bodies report the
reservation's remaining TTL as of now, not as of the first response.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from otel_cycles.authority._errors import CyclesProtocolError
from otel_cycles.authority._model import DUMPS
from otel_cycles.authority._sql import Queries

__all__ = ["payload_hash", "refresh_remaining_ttl", "remember", "replay"]

_CANONICAL = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode


def payload_hash(body: Any) -> str:
    """Canonical form of a request payload used for idempotency comparison (sorted keys, compact)."""
    return _CANONICAL(body)


def replay(conn: sqlite3.Connection, tenant: str, endpoint: str, key: str, digest: str) -> dict[str, Any] | None:
    """Return the stored response for this key, None if the key is new; 409 if it was used with another payload."""
    row = conn.execute(Queries.SELECT_IDEMPOTENCY, (tenant, endpoint, key)).fetchone()
    if row is None:
        return None
    if row[0] != digest:
        raise CyclesProtocolError(
            409, "IDEMPOTENCY_MISMATCH", "Idempotency key was already used with a different payload"
        )
    body: dict[str, Any] = json.loads(row[1])
    return body


def remember(conn: sqlite3.Connection, tenant: str, endpoint: str, key: str, digest: str, body: Any, now: int) -> None:
    """Store `body` as the response to replay for this key."""
    conn.execute(Queries.INSERT_IDEMPOTENCY, (tenant, endpoint, key, digest, DUMPS(body), now))


def refresh_remaining_ttl(conn: sqlite3.Connection, body: dict[str, Any], rid: str, now: int) -> None:
    """Set a replayed body's `remaining_ttl_ms` from its `expires_at_ms` (0 once the reservation is not ACTIVE)."""
    state = conn.execute(Queries.SELECT_RESERVATION_STATE, (rid,)).fetchone()
    active = state is not None and state[0] == "ACTIVE"
    body["remaining_ttl_ms"] = max(0, body["expires_at_ms"] - now) if active else 0
