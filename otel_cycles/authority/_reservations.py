"""The reservation lifecycle as ledger operations: reserve (or evaluate), commit, release, extend, expire, read.

A reservation holds its estimate on every budget of its unit along the subject's scope path (`reserved` up,
`remaining` down) until it is committed (charging the actual amount, overage per its policy), released, or expired
by the sweeper after `expires_at_ms + grace`. Each operation is one `BEGIN IMMEDIATE` transaction.
"""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

from otel_cycles.authority._budgets import (
    DENY_MESSAGES,
    charge_overage,
    deny_body,
    deny_reason,
    derive_scopes,
    load_budgets,
    load_held_budgets,
    reject_commit_overage,
    release_holds,
    save_budgets,
    select_budgeted,
    unit_or_none,
)
from otel_cycles.authority._errors import CyclesProtocolError
from otel_cycles.authority._idempotency import refresh_remaining_ttl, remember, replay
from otel_cycles.authority._model import DUMPS, dumps_or_none
from otel_cycles.authority._policy_store import decision_effects
from otel_cycles.authority._sql import Queries
from otel_cycles.authority._store import LedgerStore
from otel_cycles.authority._tenants import require_open_tenant, tenant_closed
from otel_cycles.authority._views import reservation_view

__all__ = ["DEFAULT_GRACE_MS", "DEFAULT_MAX_EXTENSIONS", "DEFAULT_TTL_MS", "MAX_TTL_MS", "ReservationsMixin"]

DEFAULT_TTL_MS = 60_000
MAX_TTL_MS = 3_600_000
DEFAULT_GRACE_MS = 5_000
DEFAULT_MAX_EXTENSIONS = 10


class ReservationsMixin(LedgerStore):
    """Reservation operations of `SQLiteLedger`."""

    def reserve(self, tenant: str, req: dict[str, Any], digest: str) -> dict[str, Any]:
        """Create a reservation (or evaluate a dry run) for `req`, a validated `ReservationCreateRequest`.

        Args:
            tenant: The effective tenant (from the API key).
            req: Output of `parse_reserve`.
            digest: `payload_hash` of the raw request body, for idempotency.

        Returns:
            The `ReservationCreateResponse` body.

        Raises:
            CyclesProtocolError: 409 for budget denials (non-dry-run), 404/400 for missing budgets or unit mismatch.
        """
        key = req["idempotency_key"]
        estimate = req["estimate"]
        unit = estimate["unit"]
        amount = estimate["amount"]
        scopes = derive_scopes(req["subject"])
        dry_run = req["dry_run"]
        with self._tx() as conn:
            now = self.clock()
            stored = replay(conn, tenant, "reserve", key, digest)
            if stored is not None:
                if "remaining_ttl_ms" in stored:
                    refresh_remaining_ttl(conn, stored, stored["reservation_id"], now)
                return stored
            policy_row = conn.execute(Queries.SELECT_TENANT_POLICY, (tenant,)).fetchone()
            scope_path = scopes[-1]
            if policy_row is not None and policy_row[0] == "CLOSED":
                if dry_run:
                    return deny_body(scopes, "TENANT_CLOSED")
                raise CyclesProtocolError(409, "TENANT_CLOSED", f"Tenant {tenant} is closed")
            budgets = load_budgets(conn, scopes)
            if dry_run:
                budgeted = unit_or_none(budgets, unit, scopes)
                if not budgeted:
                    return deny_body(scopes, "BUDGET_NOT_FOUND")
            else:
                budgeted = select_budgeted(budgets, unit, scopes, True)
            for b in budgeted:
                reason = deny_reason(b, amount)
                if reason is not None:
                    if dry_run:
                        return deny_body(scopes, reason)
                    raise CyclesProtocolError(409, reason, f"{DENY_MESSAGES[reason]} at scope {b.scope}")
            # Caps only ever accompany an allow: every DENY and 409 above returned before this point.
            effects = decision_effects(conn, tenant, scope_path, now)
            caps, ttl_override = effects.caps, effects.ttl_override
            if dry_run:
                return _with_caps(
                    {
                        "decision": "ALLOW",
                        "affected_scopes": scopes,
                        "scope_path": scope_path,
                        "reserved": {"unit": unit, "amount": amount},
                        "balances": [b.balance() for b in budgeted],
                    },
                    caps,
                )
            # A matching policy's overrides come before the tenant's defaults; the request's own values win.
            ttl = (
                req["ttl_ms"] or ttl_override.get("default_ttl_ms") or (policy_row and policy_row[2]) or DEFAULT_TTL_MS
            )
            ttl = min(ttl, ttl_override.get("max_ttl_ms") or (policy_row and policy_row[3]) or MAX_TTL_MS)
            grace = req["grace_period_ms"]
            if grace is None:
                grace = DEFAULT_GRACE_MS
            policy = (
                req["overage_policy"]
                or effects.commit_overage_policy
                or (policy_row and policy_row[1])
                or budgeted[-1].commit_overage_policy
                or "ALLOW_IF_AVAILABLE"
            )
            max_ext = ttl_override.get("max_extensions", (policy_row and policy_row[4]) or DEFAULT_MAX_EXTENSIONS)
            for b in budgeted:
                b.reserved += amount
                b.remaining -= amount
            save_budgets(conn, budgeted, now)
            rid = str(uuid.uuid4())
            expires = now + ttl
            conn.execute(
                Queries.INSERT_RESERVATION,
                (
                    rid,
                    tenant,
                    DUMPS(req["subject"]),
                    DUMPS(req["action"]),
                    unit,
                    amount,
                    scope_path,
                    DUMPS(scopes),
                    DUMPS([b.scope for b in budgeted]),
                    now,
                    expires,
                    grace,
                    key,
                    policy,
                    dumps_or_none(req["metadata"]),
                    max_ext,
                ),
            )
            body = _with_caps(
                {
                    "decision": "ALLOW",
                    "reservation_id": rid,
                    "affected_scopes": scopes,
                    "expires_at_ms": expires,
                    "remaining_ttl_ms": ttl,
                    "scope_path": scope_path,
                    "reserved": {"unit": unit, "amount": amount},
                    "balances": [b.balance() for b in budgeted],
                },
                caps,
            )
            remember(conn, tenant, "reserve", key, digest, body, self.clock())
            return body

    def decide(self, tenant: str, req: dict[str, Any], digest: str) -> dict[str, Any]:
        """Evaluate `req` (a validated `DecisionRequest`) without reserving; DENY carries a `reason_code`."""
        key = req["idempotency_key"]
        estimate = req["estimate"]
        scopes = derive_scopes(req["subject"])
        with self._tx() as conn:
            stored = replay(conn, tenant, "decide", key, digest)
            if stored is not None:
                return stored
            body: dict[str, Any] = {"decision": "ALLOW", "affected_scopes": scopes}
            if tenant_closed(conn, tenant):
                body = deny_body(scopes, "TENANT_CLOSED", decide=True)
            else:
                budgeted = unit_or_none(load_budgets(conn, scopes), estimate["unit"], scopes)
                if not budgeted:
                    body = deny_body(scopes, "BUDGET_NOT_FOUND", decide=True)
                for b in budgeted:
                    reason = deny_reason(b, estimate["amount"])
                    if reason is not None:
                        body = deny_body(scopes, reason, decide=True)
                        break
            if body["decision"] == "ALLOW":
                body = _with_caps(body, decision_effects(conn, tenant, scopes[-1], self.clock()).caps)
            remember(conn, tenant, "decide", key, digest, body, self.clock())
            return body

    def commit(self, tenant: str | None, rid: str, req: dict[str, Any], digest: str) -> dict[str, Any]:
        """Commit reservation `rid` with `req` (a validated `CommitRequest`); returns the `CommitResponse` body."""
        key = req["idempotency_key"]
        actual = req["actual"]
        with self._tx() as conn:
            now = self.clock()
            row = _load_reservation(conn, rid, tenant)
            owner = row[1]
            stored = replay(conn, owner, f"commit:{rid}", key, digest)
            if stored is not None:
                return stored
            require_open_tenant(conn, owner)
            if row[2] == "ACTIVE" and actual["unit"] != row[5]:
                raise CyclesProtocolError(
                    400,
                    "UNIT_MISMATCH",
                    "actual.unit differs from the reserved unit",
                    {"scope": row[7], "requested_unit": actual["unit"], "expected_units": [row[5]]},
                )
            _check_mutable(row, now, grace=True)
            unit, estimate = row[5], row[6]
            budgets = load_held_budgets(conn, row[9], unit)
            delta = actual["amount"] - estimate
            reject_commit_overage(row[14], delta)
            charged = actual["amount"]
            if delta > 0:
                charged = estimate + charge_overage(budgets, delta, row[14], now)
            for b in budgets:
                b.reserved -= estimate
                if delta < 0:
                    b.remaining -= delta
                    b.spent += actual["amount"]
                else:
                    b.spent += estimate
            save_budgets(conn, budgets, now)
            conn.execute(Queries.FINALIZE_RESERVATION, ("COMMITTED", charged, dumps_or_none(req["metadata"]), now, rid))
            body: dict[str, Any] = {"status": "COMMITTED", "charged": {"unit": unit, "amount": charged}}
            if delta < 0:
                body["released"] = {"unit": unit, "amount": -delta}
            body["balances"] = [b.balance() for b in budgets]
            remember(conn, owner, f"commit:{rid}", key, digest, body, self.clock())
            return body

    def release(self, tenant: str | None, rid: str, req: dict[str, Any], digest: str) -> dict[str, Any]:
        """Release reservation `rid`; `tenant` None means an admin-key caller. Returns the `ReleaseResponse` body."""
        key = req["idempotency_key"]
        with self._tx() as conn:
            now = self.clock()
            row = _load_reservation(conn, rid, tenant)
            owner = row[1]
            stored = replay(conn, owner, f"release:{rid}", key, digest)
            if stored is not None:
                return stored
            require_open_tenant(conn, owner)
            _check_mutable(row, now, grace=True)
            unit, estimate = row[5], row[6]
            budgets = load_held_budgets(conn, row[9], unit)
            release_holds(budgets, estimate)
            save_budgets(conn, budgets, now)
            conn.execute(Queries.FINALIZE_RESERVATION, ("RELEASED", None, None, now, rid))
            body = {
                "status": "RELEASED",
                "released": {"unit": unit, "amount": estimate},
                "balances": [b.balance() for b in budgets],
            }
            remember(conn, owner, f"release:{rid}", key, digest, body, self.clock())
            return body

    def extend(self, tenant: str, rid: str, req: dict[str, Any], digest: str) -> dict[str, Any]:
        """Extend reservation `rid` by `req["extend_by_ms"]` from its current expiry (at most `max_extensions`)."""
        key = req["idempotency_key"]
        with self._tx() as conn:
            now = self.clock()
            row = _load_reservation(conn, rid, tenant)
            stored = replay(conn, tenant, f"extend:{rid}", key, digest)
            if stored is not None:
                refresh_remaining_ttl(conn, stored, rid, now)
                return stored
            require_open_tenant(conn, tenant)
            _check_mutable(row, now, grace=False)
            if row[16] >= row[17]:
                raise CyclesProtocolError(
                    409, "MAX_EXTENSIONS_EXCEEDED", f"Reservation was already extended {row[16]} times"
                )
            expires = row[11] + req["extend_by_ms"]
            conn.execute(Queries.EXTEND_RESERVATION, (expires, rid))
            budgets = load_held_budgets(conn, row[9], row[5])
            body = {
                "status": "ACTIVE",
                "expires_at_ms": expires,
                "remaining_ttl_ms": expires - now,
                "balances": [b.balance() for b in budgets],
            }
            remember(conn, tenant, f"extend:{rid}", key, digest, body, self.clock())
            return body

    def expire_due(self, limit: int = 500) -> int:
        """Expire ACTIVE reservations past `expires_at_ms + grace`, returning their budget; return how many."""
        with self._tx() as conn:
            now = self.clock()
            due = conn.execute(Queries.SELECT_DUE_RESERVATIONS, (now, limit)).fetchall()
            for rid, unit, estimate, budgeted_json in due:
                budgets = load_held_budgets(conn, budgeted_json, unit)
                release_holds(budgets, estimate)
                save_budgets(conn, budgets, now)
                conn.execute(Queries.EXPIRE_RESERVATION, (rid,))
            return len(due)

    def get_reservation(self, tenant: str | None, rid: str) -> dict[str, Any]:
        """Return the `ReservationDetail` of `rid` (410 when EXPIRED, 403 for another tenant's reservation)."""
        with self._read() as conn:
            row = _load_reservation(conn, rid, tenant)
        if row[2] == "EXPIRED":
            raise CyclesProtocolError(410, "RESERVATION_EXPIRED", "Reservation has expired")
        return reservation_view(row, metadata=True, committed_metadata=True)


def _with_caps(body: dict[str, Any], caps: dict[str, Any] | None) -> dict[str, Any]:
    """Turn an ALLOW body into ALLOW_WITH_CAPS carrying `caps`; without caps it stays a plain ALLOW (no key)."""
    if caps is not None:
        body["decision"] = "ALLOW_WITH_CAPS"
        body["caps"] = caps
    return body


def _load_reservation(conn: sqlite3.Connection, rid: str, tenant: str | None) -> tuple[Any, ...]:
    row = conn.execute(Queries.SELECT_RESERVATION, (rid,)).fetchone()
    if row is None:
        raise CyclesProtocolError(404, "NOT_FOUND", f"Reservation not found: {rid}")
    if tenant is not None and row[1] != tenant:
        raise CyclesProtocolError(403, "FORBIDDEN", "Reservation belongs to another tenant")
    return tuple(row)


def _check_mutable(row: tuple[Any, ...], now: int, grace: bool) -> None:
    state = row[2]
    if state == "EXPIRED":
        raise CyclesProtocolError(410, "RESERVATION_EXPIRED", "Reservation has expired")
    if state != "ACTIVE":
        raise CyclesProtocolError(409, "RESERVATION_FINALIZED", f"Reservation is already {state}")
    deadline = row[11] + (row[12] if grace else 0)
    if now > deadline:
        raise CyclesProtocolError(410, "RESERVATION_EXPIRED", "Reservation has expired")
