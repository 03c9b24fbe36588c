"""Tenants as ledger operations (the admin plane's `/v1/admin/tenants`); API keys are in `_api_keys`.

Shapes mirror the reference admin server (`cycles-governance-admin-v0.1.25.yaml`): `Tenant`.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from otel_cycles.authority._errors import CyclesProtocolError, invalid
from otel_cycles.authority._model import dumps_or_none
from otel_cycles.authority._sql import Queries
from otel_cycles.authority._store import LedgerStore
from otel_cycles.authority._validation import check_commit_policy, reject_unknown
from otel_cycles.authority._views import tenant_view

__all__ = ["TenantAdminMixin", "require_open_tenant", "require_tenant", "tenant_closed"]

_TENANT_ID_RE = re.compile(r"^[a-z0-9-]{3,64}$")
TENANT_STATUSES = ("ACTIVE", "SUSPENDED", "CLOSED")  # a tuple: see _validation.UNITS
_TENANT_FIELDS = frozenset(
    {
        "tenant_id",
        "name",
        "parent_tenant_id",
        "metadata",
        "default_commit_overage_policy",
        "default_reservation_ttl_ms",
        "max_reservation_ttl_ms",
        "max_reservation_extensions",
        "reservation_expiry_policy",
    }
)


_POLICY = "default_commit_overage_policy"
_LIMITS = (
    ("default_reservation_ttl_ms", 1000, 86_400_000),
    ("max_reservation_ttl_ms", 1000, 86_400_000),
    ("max_reservation_extensions", 0, 10_000),
)
_UPDATABLE = frozenset({"name", "status", "metadata", _POLICY, *(field for field, _, _ in _LIMITS)})


def _check_settings(body: dict[str, Any]) -> None:
    """Validate the settings a tenant create or update body may carry (each optional here)."""
    if "name" in body and (not isinstance(body["name"], str) or not 1 <= len(body["name"]) <= 256):
        raise invalid("name is required (1-256 characters)")
    if body.get(_POLICY) is not None:
        check_commit_policy(body[_POLICY], _POLICY)
    for field, lo, hi in _LIMITS:
        value = body.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi):
            raise invalid(f"{field} must be an integer between {lo} and {hi}")
    if body.get("metadata") is not None and not isinstance(body["metadata"], dict):
        raise invalid("metadata must be an object")
    if "status" in body and body["status"] not in TENANT_STATUSES:
        raise invalid(f"status must be one of {', '.join(sorted(TENANT_STATUSES))}")


def require_tenant(conn: sqlite3.Connection, tenant_id: str) -> None:
    """Raise 404 NOT_FOUND unless tenant `tenant_id` exists."""
    if conn.execute(Queries.SELECT_TENANT, (tenant_id,)).fetchone() is None:
        raise CyclesProtocolError(404, "NOT_FOUND", f"Tenant not found: {tenant_id}")


def tenant_closed(conn: sqlite3.Connection, tenant: str) -> bool:
    """Return whether `tenant` exists and is CLOSED."""
    row = conn.execute(Queries.SELECT_TENANT_STATUS, (tenant,)).fetchone()
    return row is not None and row[0] == "CLOSED"


def require_open_tenant(conn: sqlite3.Connection, tenant: str) -> None:
    """Raise 409 TENANT_CLOSED if `tenant` is closed (closed tenants get no persisting mutation)."""
    if tenant_closed(conn, tenant):
        raise CyclesProtocolError(409, "TENANT_CLOSED", f"Tenant {tenant} is closed")


class TenantAdminMixin(LedgerStore):
    """Tenant operations of `SQLiteLedger`; each is one transaction."""

    def create_tenant(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create a tenant from a `TenantCreateRequest` body; returns `(Tenant, created)` (idempotent by id)."""
        reject_unknown(body, _TENANT_FIELDS)
        tenant_id = body.get("tenant_id")
        if not isinstance(tenant_id, str) or not _TENANT_ID_RE.match(tenant_id):
            raise invalid("tenant_id must match ^[a-z0-9-]+$ (3-64 characters)")
        if "name" not in body:
            raise invalid("name is required (1-256 characters)")
        _check_settings(body)
        name, policy, metadata, parent = (body.get(k) for k in ("name", _POLICY, "metadata", "parent_tenant_id"))
        if parent is not None and not isinstance(parent, str):
            raise invalid("parent_tenant_id must be a string")
        ints = [body.get(field) for field, _, _ in _LIMITS]
        with self._tx() as conn:
            now = self.clock()
            row = conn.execute(Queries.SELECT_TENANT, (tenant_id,)).fetchone()
            if row is not None:
                return tenant_view(tuple(row)), False
            conn.execute(
                Queries.INSERT_TENANT, (tenant_id, name, parent, policy, *ints, dumps_or_none(metadata), now, now)
            )
            row = conn.execute(Queries.SELECT_TENANT, (tenant_id,)).fetchone()
            return tenant_view(tuple(row)), True

    def get_tenant(self, tenant_id: str) -> dict[str, Any]:
        """Return the `Tenant` record, 404 if absent."""
        with self._read() as conn:
            row = conn.execute(Queries.SELECT_TENANT, (tenant_id,)).fetchone()
        if row is None:
            raise CyclesProtocolError(404, "NOT_FOUND", f"Tenant not found: {tenant_id}")
        return tenant_view(tuple(row))

    def list_tenants(self) -> list[dict[str, Any]]:
        """Return every tenant."""
        with self._read() as conn:
            return [tenant_view(tuple(r)) for r in conn.execute(Queries.SELECT_TENANTS)]

    def set_tenant_status(self, tenant_id: str, status: str) -> dict[str, Any]:
        """Set a tenant's status (`ACTIVE`, `SUSPENDED`, `CLOSED`); CLOSED blocks every persisting mutation."""
        return self.update_tenant(tenant_id, {"status": status})

    def update_tenant(self, tenant_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Apply a tenant PATCH body (name, status, metadata, default overage policy and TTL limits); 404 if absent.

        Fields left out keep their value; `null` resets a default to the server's.
        """
        reject_unknown(body, _UPDATABLE)
        _check_settings(body)
        with self._tx() as conn:
            row = conn.execute(Queries.SELECT_TENANT, (tenant_id,)).fetchone()
            if row is None:
                raise CyclesProtocolError(404, "NOT_FOUND", f"Tenant not found: {tenant_id}")
            _, name, status, _, policy, ttl, max_ttl, max_ext, metadata_json, _, _ = row
            metadata = dumps_or_none(body["metadata"]) if "metadata" in body else metadata_json
            limits = {"default_reservation_ttl_ms": ttl, "max_reservation_ttl_ms": max_ttl,
                      "max_reservation_extensions": max_ext}  # fmt: skip
            limits.update((field, body[field]) for field in limits if field in body)
            values = (
                body.get("name") or name,
                body.get("status") or status,
                body[_POLICY] if _POLICY in body else policy,
                *limits.values(),
                metadata,
                self.clock(),
                tenant_id,
            )
            conn.execute(Queries.UPDATE_TENANT, values)
            return tenant_view(tuple(conn.execute(Queries.SELECT_TENANT, (tenant_id,)).fetchone()))
