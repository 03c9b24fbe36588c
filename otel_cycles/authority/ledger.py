"""SQLite ledger: every Cycles protocol operation as one `BEGIN IMMEDIATE` transaction, no HTTP.

The semantics follow the reference server's Lua scripts (reserve/commit/release/extend/expire/event, see
`shared/reference/cycles-protocol-notes.md` §2.4). Each budget row keeps the ledger invariant
`allocated = remaining + spent + reserved + debt`; `SQLiteLedger.check_invariants()` verifies it together with
`reserved == Σ active reservation estimates` per budget.

`SQLiteLedger` is assembled from one mixin per area: `_reservations` (the reservation lifecycle), `_events` (direct
debits), `_tenants` (tenants), `_api_keys` (API keys), `_budget_admin` (budgets and funding) and
`_policy_store` (policies and the caps they put on decisions), all on `_store.LedgerStore`.

Threading: one connection per ledger, guarded by `_lock`; every public method is safe to call from any thread.
Several processes may open the same file: WAL plus `busy_timeout` serialize writers, and because every
read-modify-write happens inside `BEGIN IMMEDIATE`, no operation ever acts on a stale balance.
"""

from __future__ import annotations

import json
from typing import Any

from otel_cycles.authority._api_keys import DEFAULT_KEY_TTL_MS, ApiKeyRecord, ApiKeysMixin
from otel_cycles.authority._budget_admin import BudgetAdminMixin
from otel_cycles.authority._budgets import derive_scopes
from otel_cycles.authority._events import EventsMixin
from otel_cycles.authority._idempotency import payload_hash
from otel_cycles.authority._model import Budget
from otel_cycles.authority._policy_store import PoliciesMixin
from otel_cycles.authority._reservations import ReservationsMixin
from otel_cycles.authority._sql import Queries
from otel_cycles.authority._store import Clock, connect, system_clock
from otel_cycles.authority._tenants import TenantAdminMixin

__all__ = [
    "DEFAULT_KEY_TTL_MS",
    "ApiKeyRecord",
    "Clock",
    "SQLiteLedger",
    "derive_scopes",
    "payload_hash",
    "system_clock",
]


class SQLiteLedger(ReservationsMixin, EventsMixin, TenantAdminMixin, ApiKeysMixin, BudgetAdminMixin, PoliciesMixin):
    """The budget ledger on one SQLite database (a file, or private in-memory when `path` is None).

    Use `SQLiteLedger.open(path)`; close with `close()`.
    """

    @classmethod
    def open(
        cls, path: str | None = None, *, clock: Clock | None = None, key_ttl_ms: int | None = DEFAULT_KEY_TTL_MS
    ) -> SQLiteLedger:
        """Open (creating if needed, mode 0600) the ledger database at `path`; `None` means in-memory.

        `key_ttl_ms` is the lifetime of API keys created without `expires_at` (None: they never expire).
        """
        ledger = cls(connect(path), clock or system_clock, path)
        ledger.key_ttl_ms = key_ttl_ms
        if path is not None:
            ledger._start_checkpointer()
        return ledger

    def check_invariants(self) -> list[str]:
        """Return human-readable violations: the ledger identity per budget, non-negative counters, and
        `reserved == Σ active reservation estimates` per budget. Empty when the ledger is consistent."""
        problems: list[str] = []
        with self._read() as conn:
            budgets = [Budget(r) for r in conn.execute(Queries.SELECT_ALL_BUDGETS)]
            holds: dict[tuple[str, str], int] = {}
            for unit, estimate, budgeted_json in conn.execute(Queries.SELECT_ACTIVE_HOLDS):
                for scope in json.loads(budgeted_json):
                    holds[(scope, unit)] = holds.get((scope, unit), 0) + estimate
        for b in budgets:
            if b.allocated != b.remaining + b.spent + b.reserved + b.debt:
                problems.append(
                    f"{b.scope} {b.unit}: allocated {b.allocated} != remaining {b.remaining} + spent {b.spent} "
                    f"+ reserved {b.reserved} + debt {b.debt}"
                )
            if min(b.reserved, b.spent, b.debt) < 0:
                problems.append(f"{b.scope} {b.unit}: negative counter (reserved/spent/debt)")
            held = holds.get((b.scope, b.unit), 0)
            if held != b.reserved:
                problems.append(f"{b.scope} {b.unit}: reserved {b.reserved} != active holds {held}")
        return problems

    def reservation_rows(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """Run a read-only reservation query built by `_queries` (whitelisted fragments, bound parameters)."""
        with self._read() as conn:
            return [tuple(r) for r in conn.execute(sql, params)]
