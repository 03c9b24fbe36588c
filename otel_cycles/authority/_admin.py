"""Admin-plane ledger operations (tenants, API keys, budgets, funding), mixed into `SQLiteLedger`.

Shapes mirror the reference admin server (`cycles-governance-admin-v0.1.25.yaml`): `Tenant`, `ApiKeyCreateResponse`
(the secret is returned once as `key_secret`; only its sha256 is stored), `BudgetLedger` and `BudgetFundingResponse`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from otel_cycles.authority._errors import CyclesProtocolError, invalid
from otel_cycles.authority._model import DUMPS, Budget
from otel_cycles.authority._sql import Queries
from otel_cycles.authority._validation import SUBJECT_LEVELS

__all__ = ["LedgerAdminMixin", "decode_cursor", "encode_cursor", "hash_secret", "iso", "parse_scope"]

_TENANT_ID_RE = re.compile(r"^[a-z0-9-]{3,64}$")
_SEGMENT_RE = re.compile(r"^[a-z0-9_.-]{1,128}$")
FUND_OPERATIONS = frozenset({"CREDIT", "DEBIT", "RESET", "REPAY_DEBT", "RESET_SPENT"})
TENANT_STATUSES = frozenset({"ACTIVE", "SUSPENDED", "CLOSED"})
BUDGET_STATUSES = frozenset({"ACTIVE", "FROZEN", "CLOSED"})


def hash_secret(secret: str) -> str:
    """Return the stored form of an API key (sha256 hex)."""
    return hashlib.sha256(secret.encode()).hexdigest()


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


def parse_scope(scope: str) -> tuple[str, str]:
    """Validate and canonicalize a budget scope (`tenant:t[/level:v...]`, canonical order, lowercased).

    Returns:
        `(canonical_scope, tenant_id)`.
    """
    if not isinstance(scope, str) or not scope:
        raise invalid("scope must be a non-empty string")
    parts = scope.split("/")
    out: list[str] = []
    last = -1
    for part in parts:
        level, sep, value = part.partition(":")
        value = value.lower()
        if not sep or level not in SUBJECT_LEVELS or not _SEGMENT_RE.match(value):
            raise invalid(f"scope segment {part!r} must look like level:value (levels {', '.join(SUBJECT_LEVELS)})")
        index = SUBJECT_LEVELS.index(level)
        if index <= last:
            raise invalid("scope levels must follow tenant/workspace/app/workflow/agent/toolset order")
        last = index
        out.append(f"{level}:{value}")
    if not out[0].startswith("tenant:"):
        raise invalid("scope must start with tenant:<tenant_id>")
    return "/".join(out), out[0][len("tenant:") :]


def _amount_of(value: Any, name: str, unit: str | None = None) -> int:
    if not isinstance(value, dict) or set(value) != {"unit", "amount"}:
        raise invalid(f"{name} must be an Amount object with unit and amount")
    amount = value["amount"]
    if not isinstance(amount, int) or isinstance(amount, bool) or not 0 <= amount <= 9_223_372_036_854_775_807:
        raise invalid(f"{name}.amount must be a non-negative integer")
    if unit is not None and value["unit"] != unit:
        raise CyclesProtocolError(400, "UNIT_MISMATCH", f"{name}.unit must be {unit}")
    return amount


def _tenant_view(row: tuple[Any, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"tenant_id": row[0], "name": row[1], "status": row[2]}
    if row[3]:
        out["parent_tenant_id"] = row[3]
    if row[4]:
        out["default_commit_overage_policy"] = row[4]
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


class LedgerAdminMixin:
    """Admin operations; each is one transaction on the host ledger's connection."""

    clock: Callable[[], int]

    if TYPE_CHECKING:

        def _tx(self) -> AbstractContextManager[sqlite3.Connection]: ...

        def _read(self) -> AbstractContextManager[sqlite3.Connection]: ...

    # ---- tenants

    def create_tenant(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create a tenant from a `TenantCreateRequest` body; returns `(Tenant, created)` (idempotent by id)."""
        allowed = {
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
        extra = set(body) - allowed
        if extra:
            raise invalid(f"unknown field(s): {', '.join(sorted(extra))}")
        tenant_id = body.get("tenant_id")
        if not isinstance(tenant_id, str) or not _TENANT_ID_RE.match(tenant_id):
            raise invalid("tenant_id must match ^[a-z0-9-]+$ (3-64 characters)")
        name = body.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 256:
            raise invalid("name is required (1-256 characters)")
        policy = body.get("default_commit_overage_policy")
        if policy is not None and policy not in ("REJECT", "ALLOW_IF_AVAILABLE", "ALLOW_WITH_OVERDRAFT"):
            raise invalid("default_commit_overage_policy is not a CommitOveragePolicy")
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
                return _tenant_view(tuple(row)), False
            conn.execute(
                Queries.INSERT_TENANT,
                (tenant_id, name, parent, policy, *ints, None if metadata is None else DUMPS(metadata), now, now),
            )
            row = conn.execute(Queries.SELECT_TENANT, (tenant_id,)).fetchone()
            return _tenant_view(tuple(row)), True

    def get_tenant(self, tenant_id: str) -> dict[str, Any]:
        """Return the `Tenant` record, 404 if absent."""
        with self._read() as conn:
            row = conn.execute(Queries.SELECT_TENANT, (tenant_id,)).fetchone()
        if row is None:
            raise CyclesProtocolError(404, "NOT_FOUND", f"Tenant not found: {tenant_id}")
        return _tenant_view(tuple(row))

    def list_tenants(self) -> list[dict[str, Any]]:
        """Return every tenant."""
        with self._read() as conn:
            return [_tenant_view(tuple(r)) for r in conn.execute(Queries.SELECT_TENANTS)]

    def set_tenant_status(self, tenant_id: str, status: str) -> dict[str, Any]:
        """Set a tenant's status (`ACTIVE`, `SUSPENDED`, `CLOSED`); CLOSED blocks every persisting mutation."""
        if status not in TENANT_STATUSES:
            raise invalid(f"status must be one of {', '.join(sorted(TENANT_STATUSES))}")
        with self._tx() as conn:
            if conn.execute(Queries.SELECT_TENANT, (tenant_id,)).fetchone() is None:
                raise CyclesProtocolError(404, "NOT_FOUND", f"Tenant not found: {tenant_id}")
            conn.execute(Queries.UPDATE_TENANT_STATUS, (status, self.clock(), tenant_id))
            return _tenant_view(tuple(conn.execute(Queries.SELECT_TENANT, (tenant_id,)).fetchone()))

    # ---- API keys

    def create_api_key(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create an API key from an `ApiKeyCreateRequest`; the response carries `key_secret` (shown once)."""
        extra = set(body) - {
            "tenant_id",
            "name",
            "description",
            "permissions",
            "scope_filter",
            "expires_at",
            "metadata",
        }
        if extra:
            raise invalid(f"unknown field(s): {', '.join(sorted(extra))}")
        tenant_id, name = body.get("tenant_id"), body.get("name")
        if not isinstance(tenant_id, str) or not tenant_id:
            raise invalid("tenant_id is required")
        if not isinstance(name, str) or not 1 <= len(name) <= 256:
            raise invalid("name is required (1-256 characters)")
        permissions = body.get("permissions") or ["reservations:create", "reservations:commit",
                                                   "reservations:release", "reservations:extend",
                                                   "reservations:list", "balances:read"]  # fmt: skip
        if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
            raise invalid("permissions must be an array of strings")
        expires_at_ms: int | None = None
        if body.get("expires_at") is not None:
            from otel_cycles.authority._validation import parse_iso_ms

            if not isinstance(body["expires_at"], str):
                raise invalid("expires_at must be an ISO-8601 date-time")
            expires_at_ms = parse_iso_ms(body["expires_at"], "expires_at")
        secret = "cyc_live_" + secrets.token_hex(24)
        key_id = "key_" + secrets.token_hex(8)
        with self._tx() as conn:
            now = self.clock()
            if conn.execute(Queries.SELECT_TENANT, (tenant_id,)).fetchone() is None:
                raise CyclesProtocolError(404, "NOT_FOUND", f"Tenant not found: {tenant_id}")
            conn.execute(
                Queries.INSERT_API_KEY,
                (hash_secret(secret), key_id, tenant_id, name, secret[:14], DUMPS(permissions), now, expires_at_ms),
            )
        out: dict[str, Any] = {
            "key_id": key_id,
            "key_secret": secret,
            "key_prefix": secret[:14],
            "tenant_id": tenant_id,
            "name": name,
            "permissions": permissions,
            "created_at": iso(now),
        }
        # `expires_at` is required by the response schema; keys without an expiry report a far-future date.
        out["expires_at"] = iso(expires_at_ms) if expires_at_ms is not None else "9999-12-31T23:59:59.000Z"
        return out

    def authenticate(self, secret: str) -> str | None:
        """Return the tenant bound to API key `secret`, or None if unknown, revoked or expired."""
        with self._read() as conn:
            row = conn.execute(Queries.SELECT_API_KEY, (hash_secret(secret),)).fetchone()
        if row is None or row[1] != "ACTIVE" or (row[2] is not None and row[2] < self.clock()):
            return None
        tenant: str = row[0]
        return tenant

    # ---- budgets

    def create_budget(self, body: dict[str, Any], tenant_id: str | None) -> dict[str, Any]:
        """Create a budget from a `BudgetCreateRequest`; `tenant_id` must own the scope (409 if it exists)."""
        allowed = {
            "tenant_id",
            "scope",
            "unit",
            "allocated",
            "overdraft_limit",
            "commit_overage_policy",
            "rollover_policy",
            "period_start",
            "period_end",
            "metadata",
        }
        extra = set(body) - allowed
        if extra:
            raise invalid(f"unknown field(s): {', '.join(sorted(extra))}")
        for field in ("scope", "unit", "allocated"):
            if field not in body:
                raise invalid(f"{field} is required")
        scope, scope_tenant = parse_scope(body["scope"])
        unit = body["unit"]
        if unit not in ("USD_MICROCENTS", "TOKENS", "CREDITS", "RISK_POINTS"):
            raise invalid("unit is not a UnitEnum value")
        owner = tenant_id or body.get("tenant_id") or scope_tenant
        if owner != scope_tenant:
            raise CyclesProtocolError(403, "FORBIDDEN", "scope belongs to another tenant")
        allocated = _amount_of(body["allocated"], "allocated", unit)
        limit = _amount_of(body["overdraft_limit"], "overdraft_limit", unit) if body.get("overdraft_limit") else 0
        policy = body.get("commit_overage_policy")
        if policy is not None and policy not in ("REJECT", "ALLOW_IF_AVAILABLE", "ALLOW_WITH_OVERDRAFT"):
            raise invalid("commit_overage_policy is not a CommitOveragePolicy")
        with self._tx() as conn:
            now = self.clock()
            if conn.execute(Queries.SELECT_TENANT, (scope_tenant,)).fetchone() is None:
                raise CyclesProtocolError(404, "NOT_FOUND", f"Tenant not found: {scope_tenant}")
            if conn.execute(Queries.SELECT_BUDGET, (scope, unit)).fetchone() is not None:
                raise CyclesProtocolError(409, "INVALID_REQUEST", f"Budget already exists for {scope} {unit}")
            ledger_id = "ldg_" + secrets.token_hex(8)
            conn.execute(
                Queries.INSERT_BUDGET,
                (scope, unit, allocated, allocated, limit, policy, scope_tenant, ledger_id, now, now),
            )
            return ledger_view(Budget(tuple(conn.execute(Queries.SELECT_BUDGET, (scope, unit)).fetchone())))

    def _owned_budget(self, conn: sqlite3.Connection, scope: str, unit: str, tenant_id: str | None) -> Budget:
        canonical, scope_tenant = parse_scope(scope)
        if tenant_id is not None and tenant_id != scope_tenant:
            raise CyclesProtocolError(403, "FORBIDDEN", "scope belongs to another tenant")
        row = conn.execute(Queries.SELECT_BUDGET, (canonical, unit)).fetchone()
        if row is None:
            raise CyclesProtocolError(404, "NOT_FOUND", f"Budget not found for {canonical} {unit}")
        return Budget(tuple(row))

    def fund(self, scope: str, unit: str, body: dict[str, Any], tenant_id: str | None) -> dict[str, Any]:
        """Apply a `BudgetFundingRequest` (CREDIT, DEBIT, RESET, REPAY_DEBT, RESET_SPENT) per the reference Lua."""
        extra = set(body) - {"operation", "amount", "spent", "reason", "idempotency_key", "metadata"}
        if extra:
            raise invalid(f"unknown field(s): {', '.join(sorted(extra))}")
        operation = body.get("operation")
        if operation not in FUND_OPERATIONS:
            raise invalid(f"operation must be one of {', '.join(sorted(FUND_OPERATIONS))}")
        if "amount" not in body:
            raise invalid("amount is required")
        amount = _amount_of(body["amount"], "amount", unit)
        spent_to = _amount_of(body["spent"], "spent", unit) if body.get("spent") is not None else 0
        with self._tx() as conn:
            now = self.clock()
            b = self._owned_budget(conn, scope, unit, tenant_id)
            before = (b.allocated, b.remaining, b.debt, b.spent)
            if operation == "CREDIT":
                b.allocated += amount
                b.remaining += amount
            elif operation == "DEBIT":
                if b.remaining < amount:
                    raise CyclesProtocolError(409, "BUDGET_EXCEEDED", "DEBIT exceeds remaining budget")
                b.allocated -= amount
                b.remaining -= amount
            elif operation == "RESET":
                b.allocated = amount
                b.remaining = amount - b.reserved - b.spent - b.debt
            elif operation == "REPAY_DEBT":
                repay = min(b.debt, amount)
                b.debt -= repay
                b.remaining += amount
                b.allocated += amount - repay
            else:  # RESET_SPENT
                b.allocated = amount
                b.spent = spent_to
                b.remaining = amount - spent_to - b.reserved - b.debt
            b.is_over_limit = b.debt > b.overdraft_limit
            conn.execute(
                Queries.UPDATE_BUDGET_BALANCES,
                (b.allocated, b.remaining, b.reserved, b.spent, b.debt, int(b.is_over_limit), now, b.scope, b.unit),
            )
        return {
            "operation": operation,
            "previous_allocated": {"unit": unit, "amount": before[0]},
            "new_allocated": {"unit": unit, "amount": b.allocated},
            "previous_remaining": {"unit": unit, "amount": before[1]},
            "new_remaining": {"unit": unit, "amount": b.remaining},
            "previous_debt": {"unit": unit, "amount": before[2]},
            "new_debt": {"unit": unit, "amount": b.debt},
            "previous_spent": {"unit": unit, "amount": before[3]},
            "new_spent": {"unit": unit, "amount": b.spent},
            "timestamp": iso(now),
        }

    def set_budget_status(self, scope: str, unit: str, status: str, tenant_id: str | None = None) -> dict[str, Any]:
        """Set a budget's status (`ACTIVE`, `FROZEN`, `CLOSED`); returns the `BudgetLedger`."""
        if status not in BUDGET_STATUSES:
            raise invalid(f"status must be one of {', '.join(sorted(BUDGET_STATUSES))}")
        with self._tx() as conn:
            b = self._owned_budget(conn, scope, unit, tenant_id)
            if b.status == "CLOSED" and status != "CLOSED":
                raise CyclesProtocolError(409, "BUDGET_CLOSED", "A closed budget cannot be reopened")
            b.status = status
            b.updated_at_ms = self.clock()
            conn.execute(Queries.UPDATE_BUDGET_STATUS, (status, b.updated_at_ms, b.scope, b.unit))
            return ledger_view(b)

    def update_budget(self, scope: str, unit: str, body: dict[str, Any]) -> dict[str, Any]:
        """Update `overdraft_limit` / `commit_overage_policy` (recomputing `is_over_limit`)."""
        extra = set(body) - {"overdraft_limit", "commit_overage_policy", "metadata"}
        if extra:
            raise invalid(f"unknown field(s): {', '.join(sorted(extra))}")
        with self._tx() as conn:
            b = self._owned_budget(conn, scope, unit, None)
            if "overdraft_limit" in body:
                b.overdraft_limit = _amount_of(body["overdraft_limit"], "overdraft_limit", unit)
            if "commit_overage_policy" in body:
                policy = body["commit_overage_policy"]
                if policy not in ("REJECT", "ALLOW_IF_AVAILABLE", "ALLOW_WITH_OVERDRAFT"):
                    raise invalid("commit_overage_policy is not a CommitOveragePolicy")
                b.commit_overage_policy = policy
            b.is_over_limit = b.debt > b.overdraft_limit
            b.updated_at_ms = self.clock()
            conn.execute(
                Queries.UPDATE_BUDGET_SETTINGS,
                (b.overdraft_limit, b.commit_overage_policy, int(b.is_over_limit), b.updated_at_ms, b.scope, b.unit),
            )
            return ledger_view(b)

    def list_budgets(
        self, tenant_id: str, filters: dict[str, str], limit: int, cursor: str | None
    ) -> tuple[list[Budget], str | None]:
        """Return one page of `tenant_id`'s budgets whose scope contains every `filters` segment.

        Args:
            tenant_id: Owning tenant.
            filters: `{level: value}` for workspace/app/workflow/agent/toolset (lowercased when matched).
            limit: Page size.
            cursor: Opaque keyset cursor from a previous page.

        Returns:
            `(budgets, next_cursor)`; `next_cursor` is None on the last page.
        """
        after = ("", "")
        if cursor:
            decoded = decode_cursor(cursor)
            if not isinstance(decoded.get("s"), str) or not isinstance(decoded.get("u"), str):
                raise invalid("cursor is not valid")
            after = (decoded["s"], decoded["u"])
        wanted = {f"{level}:{value.lower()}" for level, value in filters.items()}
        page: list[Budget] = []
        with self._read() as conn:
            while True:
                rows = conn.execute(
                    Queries.SELECT_BUDGETS_FOR_TENANT_AFTER, (tenant_id, after[0], after[1], 256)
                ).fetchall()
                for row in rows:
                    b = Budget(tuple(row))
                    after = (b.scope, b.unit)
                    if wanted.issubset(b.scope.split("/")):
                        page.append(b)
                        if len(page) > limit:
                            last = page[limit - 1]
                            return page[:limit], encode_cursor({"s": last.scope, "u": last.unit})
                if len(rows) < 256:
                    return page, None
