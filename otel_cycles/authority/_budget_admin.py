"""Budgets as admin-plane ledger operations: create, fund, freeze/close, change settings, list.

Shapes mirror the reference admin server (`cycles-governance-admin-v0.1.25.yaml`): `BudgetLedger` and
`BudgetFundingResponse`; the funding operations follow the reference server's Lua scripts.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
from typing import Any

from otel_cycles.authority._budgets import save_budgets
from otel_cycles.authority._errors import CyclesProtocolError, invalid
from otel_cycles.authority._model import Budget
from otel_cycles.authority._sql import Queries
from otel_cycles.authority._store import LedgerStore
from otel_cycles.authority._tenants import require_tenant
from otel_cycles.authority._validation import SUBJECT_LEVELS, UNITS, check_commit_policy, reject_unknown
from otel_cycles.authority._views import decode_cursor, encode_cursor, iso, ledger_view

__all__ = ["BudgetAdminMixin", "parse_scope"]

_SEGMENT_RE = re.compile(r"^[a-z0-9_.-]{1,128}$")
FUND_OPERATIONS = ("CREDIT", "DEBIT", "RESET", "REPAY_DEBT", "RESET_SPENT")  # tuples: see _validation.UNITS
BUDGET_STATUSES = ("ACTIVE", "FROZEN", "CLOSED")
_BUDGET_FIELDS = frozenset(
    {
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
)
_FUND_FIELDS = frozenset({"operation", "amount", "spent", "reason", "idempotency_key", "metadata"})
_SETTINGS_FIELDS = frozenset({"overdraft_limit", "commit_overage_policy", "metadata"})


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


def _owned_budget(conn: sqlite3.Connection, scope: str, unit: str, tenant_id: str | None) -> Budget:
    canonical, scope_tenant = parse_scope(scope)
    if tenant_id is not None and tenant_id != scope_tenant:
        raise CyclesProtocolError(403, "FORBIDDEN", "scope belongs to another tenant")
    row = conn.execute(Queries.SELECT_BUDGET, (canonical, unit)).fetchone()
    if row is None:
        raise CyclesProtocolError(404, "NOT_FOUND", f"Budget not found for {canonical} {unit}")
    return Budget(tuple(row))


class BudgetAdminMixin(LedgerStore):
    """Budget administration of `SQLiteLedger`; each operation is one transaction."""

    def create_budget(self, body: dict[str, Any], tenant_id: str | None) -> dict[str, Any]:
        """Create a budget from a `BudgetCreateRequest`; `tenant_id` must own the scope (409 if it exists)."""
        reject_unknown(body, _BUDGET_FIELDS)
        for field in ("scope", "unit", "allocated"):
            if field not in body:
                raise invalid(f"{field} is required")
        scope, scope_tenant = parse_scope(body["scope"])
        unit = body["unit"]
        if unit not in UNITS:
            raise invalid("unit is not a UnitEnum value")
        owner = tenant_id or body.get("tenant_id") or scope_tenant
        if owner != scope_tenant:
            raise CyclesProtocolError(403, "FORBIDDEN", "scope belongs to another tenant")
        allocated = _amount_of(body["allocated"], "allocated", unit)
        limit = _amount_of(body["overdraft_limit"], "overdraft_limit", unit) if body.get("overdraft_limit") else 0
        policy = body.get("commit_overage_policy")
        if policy is not None:
            check_commit_policy(policy, "commit_overage_policy")
        with self._tx() as conn:
            now = self.clock()
            require_tenant(conn, scope_tenant)
            if conn.execute(Queries.SELECT_BUDGET, (scope, unit)).fetchone() is not None:
                raise CyclesProtocolError(409, "INVALID_REQUEST", f"Budget already exists for {scope} {unit}")
            ledger_id = "ldg_" + secrets.token_hex(8)
            conn.execute(
                Queries.INSERT_BUDGET,
                (scope, unit, allocated, allocated, limit, policy, scope_tenant, ledger_id, now, now),
            )
            return ledger_view(Budget(tuple(conn.execute(Queries.SELECT_BUDGET, (scope, unit)).fetchone())))

    def fund(self, scope: str, unit: str, body: dict[str, Any], tenant_id: str | None) -> dict[str, Any]:
        """Apply a `BudgetFundingRequest` (CREDIT, DEBIT, RESET, REPAY_DEBT, RESET_SPENT) per the reference Lua."""
        reject_unknown(body, _FUND_FIELDS)
        operation = body.get("operation")
        if operation not in FUND_OPERATIONS:
            raise invalid(f"operation must be one of {', '.join(sorted(FUND_OPERATIONS))}")
        if "amount" not in body:
            raise invalid("amount is required")
        amount = _amount_of(body["amount"], "amount", unit)
        spent_to = _amount_of(body["spent"], "spent", unit) if body.get("spent") is not None else 0
        with self._tx() as conn:
            now = self.clock()
            b = _owned_budget(conn, scope, unit, tenant_id)
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
            save_budgets(conn, [b], now)
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
            b = _owned_budget(conn, scope, unit, tenant_id)
            if b.status == "CLOSED" and status != "CLOSED":
                raise CyclesProtocolError(409, "BUDGET_CLOSED", "A closed budget cannot be reopened")
            b.status = status
            b.updated_at_ms = self.clock()
            conn.execute(Queries.UPDATE_BUDGET_STATUS, (status, b.updated_at_ms, b.scope, b.unit))
            return ledger_view(b)

    def update_budget(self, scope: str, unit: str, body: dict[str, Any]) -> dict[str, Any]:
        """Update `overdraft_limit` / `commit_overage_policy` (recomputing `is_over_limit`)."""
        reject_unknown(body, _SETTINGS_FIELDS)
        with self._tx() as conn:
            b = _owned_budget(conn, scope, unit, None)
            if "overdraft_limit" in body:
                b.overdraft_limit = _amount_of(body["overdraft_limit"], "overdraft_limit", unit)
            if "commit_overage_policy" in body:
                policy = body["commit_overage_policy"]
                check_commit_policy(policy, "commit_overage_policy")
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
