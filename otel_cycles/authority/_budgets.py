"""Budget rows inside a ledger transaction: scopes, loading and saving, admission checks and overage charging.

The rules follow the reference server's Lua scripts (`shared/reference/cycles-protocol-notes.md` §2.4); every
function works on `Budget` copies that the caller saves with `save_budgets` before its transaction commits.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from otel_cycles.authority._errors import CyclesProtocolError
from otel_cycles.authority._model import Budget
from otel_cycles.authority._sql import Queries
from otel_cycles.authority._validation import SUBJECT_LEVELS

__all__ = [
    "DENY_MESSAGES",
    "REJECTED_OVERAGE",
    "charge_overage",
    "deny_body",
    "deny_reason",
    "derive_scopes",
    "load_budgets",
    "load_held_budgets",
    "reject_commit_overage",
    "release_holds",
    "save_budgets",
    "select_budgeted",
    "unit_or_none",
]

_INT64_MAX = 9_223_372_036_854_775_807

DENY_MESSAGES = {
    "BUDGET_FROZEN": "Budget is frozen",
    "BUDGET_CLOSED": "Budget is closed",
    "OVERDRAFT_LIMIT_EXCEEDED": "Scope is over its overdraft limit",
    "DEBT_OUTSTANDING": "Scope has outstanding debt",
    "BUDGET_EXCEEDED": "Insufficient budget",
}
"""Error message per `deny_reason` code, for the 409 a non-dry-run reservation gets."""


def derive_scopes(subject: dict[str, Any]) -> list[str]:
    """Return the cumulative scope prefixes for `subject`, canonical order, lowercased, gaps skipped.

    Scopes come from the subject's own fields, as in the reference server: a subject without `tenant` derives no
    `tenant:` prefix (`{"agent": "x"}` gives `["agent:x"]`). Budgets always sit under a tenant, so such a subject
    finds none (404, or DENY `BUDGET_NOT_FOUND`) and can never charge the key's tenant.
    """
    parts: list[str] = []
    scopes: list[str] = []
    for level in SUBJECT_LEVELS:
        value = subject.get(level)
        if value is not None:
            parts.append(f"{level}:{value.lower()}")
            scopes.append("/".join(parts))
    return scopes


def load_budgets(conn: sqlite3.Connection, scopes: list[str]) -> list[Budget]:
    """Return the budgets (any unit) at `scopes`, in the order of `scopes`."""
    rows = conn.execute(Queries.SELECT_BUDGETS_IN_SCOPES[len(scopes)], scopes).fetchall()
    order = {scope: i for i, scope in enumerate(scopes)}
    return sorted((Budget(r) for r in rows), key=lambda b: order[b.scope])


def load_held_budgets(conn: sqlite3.Connection, budgeted_json: str, unit: str) -> list[Budget]:
    """Return the budgets a reservation holds: its stored `budgeted_json` scopes, in its `unit`."""
    return [b for b in load_budgets(conn, json.loads(budgeted_json)) if b.unit == unit]


def save_budgets(conn: sqlite3.Connection, budgets: list[Budget], now: int) -> None:
    """Write the balance counters of `budgets` back, stamping `updated_at_ms = now`.

    Raises 400 (the caller's transaction rolls back) when a counter would leave SQLite's signed 64-bit range, e.g.
    a CREDIT on top of a near-maximal allocation.
    """
    for b in budgets:
        counters = (b.allocated, b.remaining, b.reserved, b.spent, b.debt)
        if max(counters) > _INT64_MAX or min(counters) < -_INT64_MAX:
            raise CyclesProtocolError(400, "INVALID_REQUEST", f"amount would overflow the balance at scope {b.scope}")
    conn.executemany(
        Queries.UPDATE_BUDGET_BALANCES,
        [
            (b.allocated, b.remaining, b.reserved, b.spent, b.debt, int(b.is_over_limit), now, b.scope, b.unit)
            for b in budgets
        ],
    )


def select_budgeted(budgets: list[Budget], unit: str, scopes: list[str], strict: bool) -> list[Budget]:
    """Budgets in `unit`; when there are none: UNIT_MISMATCH (another unit exists) or 404 (if `strict`)."""
    budgeted = [b for b in budgets if b.unit == unit]
    if budgeted or not strict:
        return budgeted
    if budgets:
        other = budgets[0]
        raise CyclesProtocolError(
            400,
            "UNIT_MISMATCH",
            f"Budget at scope {other.scope} is denominated in another unit",
            {
                "scope": other.scope,
                "requested_unit": unit,
                "expected_units": sorted({b.unit for b in budgets if b.scope == other.scope}),
            },
        )
    raise CyclesProtocolError(404, "NOT_FOUND", f"Budget not found for provided scope: {scopes[-1]}")


def unit_or_none(budgets: list[Budget], unit: str, scopes: list[str]) -> list[Budget]:
    """Like `select_budgeted` but a total absence of budgets returns [] (for dry-run/decide DENY)."""
    if not budgets:
        return []
    return select_budgeted(budgets, unit, scopes, True)


def deny_reason(budget: Budget, estimate: int) -> str | None:
    """Return why `budget` cannot admit `estimate` (a `DENY_MESSAGES` code), or None if it can."""
    # Order of checks from reserve.lua: status, over-limit, debt with no overdraft, insufficient remaining.
    if budget.status == "FROZEN":
        return "BUDGET_FROZEN"
    if budget.status == "CLOSED":
        return "BUDGET_CLOSED"
    if budget.is_over_limit:
        return "OVERDRAFT_LIMIT_EXCEEDED"
    if budget.debt > 0 and budget.overdraft_limit == 0:
        return "DEBT_OUTSTANDING"
    if budget.remaining < estimate:
        return "BUDGET_EXCEEDED"
    return None


def deny_body(scopes: list[str], reason: str, *, decide: bool = False) -> dict[str, Any]:
    """Return a DENY decision body (a dry-run reservation's, or with `decide` a `DecisionResponse`)."""
    body: dict[str, Any] = {"decision": "DENY", "affected_scopes": scopes}
    if not decide:
        body["scope_path"] = scopes[-1]
    body["reason_code"] = reason
    return body


REJECTED_OVERAGE = "Actual exceeds estimate and policy is REJECT"
"""The reference server's message for a commit above its estimate under `REJECT` (409 BUDGET_EXCEEDED)."""


def reject_commit_overage(policy: str, delta: int) -> None:
    """Raise 409 BUDGET_EXCEEDED for a commit above its estimate under `REJECT`, whatever the budget has left.

    commit.lua refuses every positive delta under REJECT; the reservation stays ACTIVE, so the caller can still
    commit within the estimate or release.
    """
    if policy == "REJECT" and delta > 0:
        raise CyclesProtocolError(409, "BUDGET_EXCEEDED", REJECTED_OVERAGE)


def charge_overage(budgets: list[Budget], delta: int, policy: str, now: int) -> int:
    """Apply an overage `delta` (> 0) to `budgets` per `policy`; return the amount actually charged.

    Mirrors event.lua and the non-REJECT branches of commit.lua (a commit checks `reject_commit_overage` first).
    Raises 409 (nothing mutated) when `REJECT` finds a scope that cannot cover `delta` (an event's rule) or an
    overdraft limit would be breached.
    """
    overdraft = policy == "ALLOW_WITH_OVERDRAFT"
    capped = delta
    if policy == "REJECT":
        for b in budgets:
            if b.remaining < delta:
                raise CyclesProtocolError(409, "BUDGET_EXCEEDED", f"Insufficient budget at scope {b.scope}")
    else:
        # Scopes that may not go into debt cap the charge to what they can still cover (floor 0).
        for b in budgets:
            if not overdraft or b.overdraft_limit == 0:
                capped = min(capped, max(b.remaining, 0))
        if overdraft:
            for b in budgets:
                if b.overdraft_limit > 0 and b.remaining < capped:
                    if b.debt + capped - max(b.remaining, 0) > b.overdraft_limit:
                        raise CyclesProtocolError(
                            409, "OVERDRAFT_LIMIT_EXCEEDED", f"Overdraft limit exceeded at scope {b.scope}"
                        )
    for b in budgets:
        if b.remaining < delta and (not overdraft or b.overdraft_limit == 0):
            b.is_over_limit = True  # the full overage could not be covered here
        funded = min(capped, max(b.remaining, 0))
        b.remaining -= capped
        b.spent += funded
        b.debt += capped - funded
        if b.debt > b.overdraft_limit:
            b.is_over_limit = True
    return capped


def release_holds(budgets: list[Budget], estimate: int) -> None:
    """Return a reservation's held `estimate` to each budget's remaining (release and expiry)."""
    for b in budgets:
        b.reserved -= estimate
        b.remaining += estimate
