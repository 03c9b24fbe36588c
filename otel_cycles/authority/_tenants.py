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
    """Tenant and API-key operations of `SQLiteLedger`; each is one transaction."""

    def create_tenant(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create a tenant from a `TenantCreateRequest` body; returns `(Tenant, created)` (idempotent by id)."""
        reject_unknown(body, _TENANT_FIELDS)
        tenant_id = body.get("tenant_id")
        if not isinstance(tenant_id, str) or not _TENANT_ID_RE.match(tenant_id):
            raise invalid("tenant_id must match ^[a-z0-9-]+$ (3-64 characters)")
        name = body.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 256:
            raise invalid("name is required (1-256 characters)")
        policy = body.get("default_commit_overage_policy")
        if policy is not None:
            check_commit_policy(policy, "default_commit_overage_policy")
        ints: list[int | None] = []
        for field, lo, hi in (
            ("default_reservation_ttl_ms", 1000, 86_400_000),
            ("max_reservation_ttl_ms", 1000, 86_400_000),
            ("max_reservation_extensions", 0, 10_000),
        ):
            value = body.get(field)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi):
                raise invalid(f"{field} must be an integer between {lo} and {hi}")
            ints.append(value)
        metadata = body.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise invalid("metadata must be an object")
        parent = body.get("parent_tenant_id")
        if parent is not None and not isinstance(parent, str):
            raise invalid("parent_tenant_id must be a string")
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
        if status not in TENANT_STATUSES:
            raise invalid(f"status must be one of {', '.join(sorted(TENANT_STATUSES))}")
        with self._tx() as conn:
            require_tenant(conn, tenant_id)
            conn.execute(Queries.UPDATE_TENANT_STATUS, (status, self.clock(), tenant_id))
            return tenant_view(tuple(conn.execute(Queries.SELECT_TENANT, (tenant_id,)).fetchone()))
