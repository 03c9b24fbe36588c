"""Policies in the SQLite ledger: the admin plane's create/list/get/update, and the caps a decision carries.

Shapes follow `cycles-governance-admin-v0.1.25.yaml` (`Policy`, `PolicyCreateRequest`, `PolicyListResponse`); the
rules themselves (patterns, caps, which policy wins) are the pure functions of `_policies`.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from typing import Any

from otel_cycles.authority._errors import CyclesProtocolError, invalid
from otel_cycles.authority._model import DUMPS, dumps_or_none
from otel_cycles.authority._policies import (
    POLICY_STATUSES,
    EvaluatedPolicy,
    PolicyEffects,
    check_window,
    parse_pattern,
    parse_policy_create,
    parse_policy_update,
    policy_effects,
)
from otel_cycles.authority._sql import Queries
from otel_cycles.authority._store import LedgerStore
from otel_cycles.authority._tenants import require_open_tenant
from otel_cycles.authority._views import decode_cursor, encode_cursor, iso

__all__ = ["PoliciesMixin", "decision_effects"]


_NO_EFFECTS = PolicyEffects(None, None, {})


def decision_effects(conn: sqlite3.Connection, tenant: str, scope: str, now: int) -> PolicyEffects:
    """What `tenant`'s policies do to a decision for `scope` (the deepest derived scope), inside the caller's tx."""
    rows = conn.execute(Queries.SELECT_EVALUATED_POLICIES, (tenant,)).fetchall()
    if not rows:
        return _NO_EFFECTS
    return policy_effects([EvaluatedPolicy._make(r) for r in rows], scope, now)


def _view(row: tuple[Any, ...]) -> dict[str, Any]:
    """Render a policies row (`Queries.POLICY_COLUMNS`) as the admin `Policy` shape (absent fields omitted)."""
    out: dict[str, Any] = {"policy_id": row[0], "name": row[2]}
    if row[3] is not None:
        out["description"] = row[3]
    out["scope_pattern"] = row[4]
    out["priority"] = row[5]
    if row[6] is not None:
        out["caps"] = json.loads(row[6])
    if row[12] is not None:
        out["commit_overage_policy"] = row[12]
    if row[13] is not None:
        out["reservation_ttl_override"] = json.loads(row[13])
    out["status"] = row[7]
    if row[8] is not None:
        out["effective_from"] = iso(row[8])
    if row[9] is not None:
        out["effective_until"] = iso(row[9])
    out["created_at"] = iso(row[10])
    out["updated_at"] = iso(row[11])
    return out


def _load(conn: sqlite3.Connection, policy_id: str, tenant: str | None) -> tuple[Any, ...]:
    row = conn.execute(Queries.SELECT_POLICY, (policy_id,)).fetchone()
    # Another tenant's policy is reported as missing, so a tenant key cannot probe for policy ids.
    if row is None or (tenant is not None and row[1] != tenant):
        raise CyclesProtocolError(404, "NOT_FOUND", f"Policy not found: {policy_id}")
    return tuple(row)


def _duplicate(name: str) -> CyclesProtocolError:
    return CyclesProtocolError(409, "DUPLICATE_RESOURCE", f"A policy named {name!r} already exists for this tenant")


class PoliciesMixin(LedgerStore):
    """Policy operations of `SQLiteLedger`; each is one transaction."""

    def create_policy(self, body: dict[str, Any], tenant: str | None) -> dict[str, Any]:
        """Create a policy from a `PolicyCreateRequest` and return its `Policy`.

        Args:
            body: The request body.
            tenant: The tenant of the calling API key (then `tenant_id` must not be in the body), or None for the
                admin key (then `tenant_id` is required).
        """
        if tenant is not None and "tenant_id" in body:
            raise invalid("tenant_id must not be sent with a tenant API key (the key's tenant owns the policy)")
        owner = tenant if tenant is not None else body.get("tenant_id")
        if not isinstance(owner, str) or not owner:
            raise invalid("tenant_id is required when using admin key authentication")
        fields = parse_policy_create(body)
        pattern = parse_pattern(body["scope_pattern"], owner)
        caps = fields.get("caps")
        with self._tx() as conn:
            now = self.clock()
            if conn.execute(Queries.SELECT_TENANT_STATUS, (owner,)).fetchone() is None:
                # createPolicy documents no 404; like createBudget ("Invalid scope or tenant not found"), a 400.
                raise CyclesProtocolError(400, "TENANT_NOT_FOUND", f"Tenant not found: {owner}")
            require_open_tenant(conn, owner)
            if conn.execute(Queries.SELECT_POLICY_BY_NAME, (owner, fields["name"])).fetchone() is not None:
                raise _duplicate(fields["name"])
            policy_id = "pol_" + secrets.token_hex(8)
            conn.execute(
                Queries.INSERT_POLICY,
                (
                    policy_id,
                    owner,
                    fields["name"],
                    fields.get("description"),
                    pattern,
                    fields["priority"],
                    dumps_or_none(caps),
                    fields.get("effective_from"),
                    fields.get("effective_until"),
                    now,
                    now,
                    fields.get("commit_overage_policy"),
                    dumps_or_none(fields.get("reservation_ttl_override")),
                ),
            )
            return _view(_load(conn, policy_id, None))

    def get_policy(self, policy_id: str, tenant: str | None) -> dict[str, Any]:
        """Return the `Policy` `policy_id` (404 if absent or, for a tenant caller, another tenant's)."""
        with self._read() as conn:
            return _view(_load(conn, policy_id, tenant))

    def update_policy(self, policy_id: str, body: dict[str, Any], tenant: str | None) -> dict[str, Any]:
        """Apply an updatePolicy body (each field replaced whole, `caps` included) and return the `Policy`."""
        fields = parse_policy_update(body)
        with self._tx() as conn:
            row = _load(conn, policy_id, tenant)
            require_open_tenant(conn, row[1])
            name = fields.get("name", row[2])
            if name != row[2] and conn.execute(Queries.SELECT_POLICY_BY_NAME, (row[1], name)).fetchone():
                raise _duplicate(name)
            effective_from = fields.get("effective_from", row[8])
            effective_until = fields.get("effective_until", row[9])
            check_window(effective_from, effective_until)
            caps = DUMPS(fields["caps"]) if "caps" in fields else row[6]
            ttl = DUMPS(fields["reservation_ttl_override"]) if "reservation_ttl_override" in fields else row[13]
            conn.execute(
                Queries.UPDATE_POLICY,
                (
                    name,
                    fields.get("description", row[3]),
                    fields.get("priority", row[5]),
                    caps,
                    fields.get("status", row[7]),
                    effective_from,
                    effective_until,
                    self.clock(),
                    fields.get("commit_overage_policy", row[12]),
                    ttl,
                    policy_id,
                ),
            )
            return _view(_load(conn, policy_id, None))

    def list_policies(
        self, tenant: str, *, status: str | None, scope_pattern: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        """Return a `PolicyListResponse` page of `tenant`'s policies, highest priority first (evaluation order).

        Args:
            tenant: Owning tenant.
            status: Only policies with this status (`ACTIVE`, `DISABLED`).
            scope_pattern: Only policies with exactly this pattern (compared after canonicalization).
            limit: Page size.
            cursor: Opaque cursor from a previous page.
        """
        if status is not None and status not in POLICY_STATUSES:
            raise invalid(f"status must be one of {', '.join(POLICY_STATUSES)}")
        pattern = parse_pattern(scope_pattern, None) if scope_pattern else None
        after: tuple[int, int, str] | None = None
        if cursor:
            decoded = decode_cursor(cursor)
            key = (decoded.get("p"), decoded.get("c"), decoded.get("i"))
            if not (isinstance(key[0], int) and isinstance(key[1], int) and isinstance(key[2], str)):
                raise invalid("cursor is not valid")
            after = (-key[0], key[1], key[2])
        with self._read() as conn:
            rows = [tuple(r) for r in conn.execute(Queries.SELECT_TENANT_POLICIES, (tenant,))]
        rows = [r for r in rows if (status is None or r[7] == status) and (pattern is None or r[4] == pattern)]
        rows.sort(key=lambda r: (-r[5], r[10], r[0]))
        if after is not None:
            rows = [r for r in rows if (-r[5], r[10], r[0]) > after]
        page = rows[:limit]
        out: dict[str, Any] = {"policies": [_view(r) for r in page], "has_more": len(rows) > limit}
        if len(rows) > limit:
            last = page[-1]
            out["next_cursor"] = encode_cursor({"p": last[5], "c": last[10], "i": last[0]})
        return out
