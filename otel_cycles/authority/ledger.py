"""SQLite ledger: every Cycles protocol operation as one `BEGIN IMMEDIATE` transaction, no HTTP.

The semantics follow the reference server's Lua scripts (reserve/commit/release/extend/expire/event, see
`shared/reference/cycles-protocol-notes.md` §2.4). Each budget row keeps the ledger invariant
`allocated = remaining + spent + reserved + debt`; `SQLiteLedger.check_invariants()` verifies it together with
`reserved == Σ active reservation estimates` per budget.

Threading: one connection per ledger, guarded by `_lock`; every public method is safe to call from any thread.
Several processes may open the same file: WAL plus `busy_timeout` serialize writers, and because every
read-modify-write happens inside `BEGIN IMMEDIATE`, no operation ever acts on a stale balance.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from otel_cycles.authority._admin import LedgerAdminMixin
from otel_cycles.authority._errors import CyclesProtocolError
from otel_cycles.authority._model import DUMPS, Budget
from otel_cycles.authority._sql import Queries
from otel_cycles.authority._validation import SUBJECT_LEVELS

__all__ = ["Clock", "SQLiteLedger", "derive_scopes", "payload_hash", "system_clock"]

Clock = Callable[[], int]
"""A clock returning the current time in epoch milliseconds."""

DEFAULT_TTL_MS = 60_000
MAX_TTL_MS = 3_600_000
DEFAULT_GRACE_MS = 5_000
DEFAULT_MAX_EXTENSIONS = 10
CHECKPOINT_INTERVAL_S = 0.5
_CANONICAL = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode


def system_clock() -> int:
    """Return the wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def payload_hash(body: Any) -> str:
    """Canonical form of a request payload used for idempotency comparison (sorted keys, compact)."""
    return _CANONICAL(body)


def derive_scopes(subject: dict[str, Any], tenant_id: str) -> list[str]:
    """Return the cumulative scope prefixes for `subject`, canonical order, lowercased, gaps skipped.

    A subject without `tenant` is evaluated under the effective tenant (the key's tenant).
    """
    parts: list[str] = []
    scopes: list[str] = []
    for level in SUBJECT_LEVELS:
        value = subject.get(level)
        if level == "tenant" and value is None:
            value = tenant_id
        if value is not None:
            parts.append(f"{level}:{value.lower()}")
            scopes.append("/".join(parts))
    return scopes


def _deny_reason(budget: Budget, estimate: int) -> str | None:
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


_DENY_MESSAGES = {
    "BUDGET_FROZEN": "Budget is frozen",
    "BUDGET_CLOSED": "Budget is closed",
    "OVERDRAFT_LIMIT_EXCEEDED": "Scope is over its overdraft limit",
    "DEBT_OUTSTANDING": "Scope has outstanding debt",
    "BUDGET_EXCEEDED": "Insufficient budget",
}


def _charge_overage(budgets: list[Budget], delta: int, policy: str, now: int) -> int:
    """Apply an overage `delta` (> 0) to `budgets` per `policy`; return the amount actually charged.

    Mirrors commit.lua / event.lua. Raises 409 (nothing mutated) on REJECT shortfall or overdraft breach.
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


class SQLiteLedger(LedgerAdminMixin):
    """The budget ledger on one SQLite database (a file, or private in-memory when `path` is None).

    Use `SQLiteLedger.open(path)`; close with `close()`.
    """

    def __init__(self, conn: sqlite3.Connection, clock: Clock, path: str | None) -> None:
        self._conn = conn
        self._lock = threading.Lock()  # guards self._conn: one statement sequence at a time
        self.clock = clock
        self.path = path
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoint = threading.Event()

    @classmethod
    def open(cls, path: str | None = None, *, clock: Clock | None = None) -> SQLiteLedger:
        """Open (creating if needed, mode 0600) the ledger database at `path`; `None` means in-memory."""
        if path is None:
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        else:
            if not os.path.exists(path):
                os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
            conn.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit is durable across process crashes without an fsync per transaction. The
            # checkpoint (which does fsync) runs on a background thread instead of inside request transactions.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("BEGIN IMMEDIATE")
        for statement in Queries.SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("COMMIT")
        ledger = cls(conn, clock or system_clock, path)
        if path is not None:
            ledger._start_checkpointer()
        return ledger

    def _start_checkpointer(self) -> None:
        self._stop_checkpoint = threading.Event()
        path = self.path
        assert path is not None

        def run() -> None:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
            try:
                while not self._stop_checkpoint.wait(CHECKPOINT_INTERVAL_S):
                    try:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    except sqlite3.Error:  # busy or locked: try again next round
                        pass
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                conn.close()

        self._checkpointer = threading.Thread(target=run, name="otel-cycles-ledger-checkpoint", daemon=True)
        self._checkpointer.start()

    def close(self) -> None:
        """Stop the checkpointer (file databases) and close the database connection (idempotent)."""
        if self._checkpointer is not None:
            self._stop_checkpoint.set()
            self._checkpointer.join(timeout=10)
            self._checkpointer = None
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    # ---- shared helpers (called inside a transaction)

    @staticmethod
    def _replay(conn: sqlite3.Connection, tenant: str, endpoint: str, key: str, digest: str) -> dict[str, Any] | None:
        row = conn.execute(Queries.SELECT_IDEMPOTENCY, (tenant, endpoint, key)).fetchone()
        if row is None:
            return None
        if row[0] != digest:
            raise CyclesProtocolError(
                409, "IDEMPOTENCY_MISMATCH", "Idempotency key was already used with a different payload"
            )
        body: dict[str, Any] = json.loads(row[1])
        return body

    def _remember(self, conn: sqlite3.Connection, tenant: str, endpoint: str, key: str, digest: str, body: Any) -> None:
        conn.execute(Queries.INSERT_IDEMPOTENCY, (tenant, endpoint, key, digest, DUMPS(body), self.clock()))

    @staticmethod
    def _tenant_closed(conn: sqlite3.Connection, tenant: str) -> bool:
        row = conn.execute(Queries.SELECT_TENANT_STATUS, (tenant,)).fetchone()
        return row is not None and row[0] == "CLOSED"

    @staticmethod
    def _budgets(conn: sqlite3.Connection, scopes: list[str]) -> list[Budget]:
        rows = conn.execute(Queries.SELECT_BUDGETS_IN_SCOPES[len(scopes)], scopes).fetchall()
        order = {scope: i for i, scope in enumerate(scopes)}
        return sorted((Budget(r) for r in rows), key=lambda b: order[b.scope])

    @staticmethod
    def _save(conn: sqlite3.Connection, budgets: list[Budget], now: int) -> None:
        conn.executemany(
            Queries.UPDATE_BUDGET_BALANCES,
            [
                (b.allocated, b.remaining, b.reserved, b.spent, b.debt, int(b.is_over_limit), now, b.scope, b.unit)
                for b in budgets
            ],
        )

    @staticmethod
    def _select_budgeted(budgets: list[Budget], unit: str, scopes: list[str], strict: bool) -> list[Budget]:
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

    def _unit_or_none(self, budgets: list[Budget], unit: str, scopes: list[str]) -> list[Budget]:
        """Like `_select_budgeted` but a total absence of budgets returns [] (for dry-run/decide DENY)."""
        if not budgets:
            return []
        return self._select_budgeted(budgets, unit, scopes, True)

    @staticmethod
    def _load_reservation(conn: sqlite3.Connection, rid: str, tenant: str | None) -> tuple[Any, ...]:
        row = conn.execute(Queries.SELECT_RESERVATION, (rid,)).fetchone()
        if row is None:
            raise CyclesProtocolError(404, "NOT_FOUND", f"Reservation not found: {rid}")
        if tenant is not None and row[1] != tenant:
            raise CyclesProtocolError(403, "FORBIDDEN", "Reservation belongs to another tenant")
        return tuple(row)

    @staticmethod
    def _check_mutable(row: tuple[Any, ...], now: int, grace: bool) -> None:
        state = row[2]
        if state == "EXPIRED":
            raise CyclesProtocolError(410, "RESERVATION_EXPIRED", "Reservation has expired")
        if state != "ACTIVE":
            raise CyclesProtocolError(409, "RESERVATION_FINALIZED", f"Reservation is already {state}")
        deadline = row[11] + (row[12] if grace else 0)
        if now > deadline:
            raise CyclesProtocolError(410, "RESERVATION_EXPIRED", "Reservation has expired")

    # ---- runtime plane

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
        scopes = derive_scopes(req["subject"], tenant)
        dry_run = req["dry_run"]
        with self._tx() as conn:
            now = self.clock()
            replay = self._replay(conn, tenant, "reserve", key, digest)
            if replay is not None:
                if "remaining_ttl_ms" in replay:
                    state = conn.execute(
                        "SELECT state FROM reservations WHERE reservation_id = ?", (replay["reservation_id"],)
                    ).fetchone()
                    active = state is not None and state[0] == "ACTIVE"
                    replay["remaining_ttl_ms"] = max(0, replay["expires_at_ms"] - now) if active else 0
                return replay
            policy_row = conn.execute(Queries.SELECT_TENANT_POLICY, (tenant,)).fetchone()
            scope_path = scopes[-1]
            if policy_row is not None and policy_row[0] == "CLOSED":
                if dry_run:
                    return _deny(scopes, "TENANT_CLOSED")
                raise CyclesProtocolError(409, "TENANT_CLOSED", f"Tenant {tenant} is closed")
            budgets = self._budgets(conn, scopes)
            if dry_run:
                budgeted = self._unit_or_none(budgets, unit, scopes)
                if not budgeted:
                    return _deny(scopes, "BUDGET_NOT_FOUND")
            else:
                budgeted = self._select_budgeted(budgets, unit, scopes, True)
            for b in budgeted:
                reason = _deny_reason(b, amount)
                if reason is not None:
                    if dry_run:
                        return _deny(scopes, reason)
                    raise CyclesProtocolError(409, reason, f"{_DENY_MESSAGES[reason]} at scope {b.scope}")
            if dry_run:
                return {
                    "decision": "ALLOW",
                    "affected_scopes": scopes,
                    "scope_path": scope_path,
                    "reserved": {"unit": unit, "amount": amount},
                    "balances": [b.balance() for b in budgeted],
                }
            ttl = req["ttl_ms"] or (policy_row and policy_row[2]) or DEFAULT_TTL_MS
            ttl = min(ttl, (policy_row and policy_row[3]) or MAX_TTL_MS)
            grace = req["grace_period_ms"]
            if grace is None:
                grace = DEFAULT_GRACE_MS
            policy = (
                req["overage_policy"]
                or (policy_row and policy_row[1])
                or budgeted[-1].commit_overage_policy
                or "ALLOW_IF_AVAILABLE"
            )
            max_ext = (policy_row and policy_row[4]) or DEFAULT_MAX_EXTENSIONS
            for b in budgeted:
                b.reserved += amount
                b.remaining -= amount
            self._save(conn, budgeted, now)
            rid = str(uuid.uuid4())
            expires = now + ttl
            metadata = req["metadata"]
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
                    None if metadata is None else DUMPS(metadata),
                    max_ext,
                ),
            )
            body = {
                "decision": "ALLOW",
                "reservation_id": rid,
                "affected_scopes": scopes,
                "expires_at_ms": expires,
                "remaining_ttl_ms": ttl,
                "scope_path": scope_path,
                "reserved": {"unit": unit, "amount": amount},
                "balances": [b.balance() for b in budgeted],
            }
            self._remember(conn, tenant, "reserve", key, digest, body)
            return body

    def decide(self, tenant: str, req: dict[str, Any], digest: str) -> dict[str, Any]:
        """Evaluate `req` (a validated `DecisionRequest`) without reserving; DENY carries a `reason_code`."""
        key = req["idempotency_key"]
        estimate = req["estimate"]
        scopes = derive_scopes(req["subject"], tenant)
        with self._tx() as conn:
            replay = self._replay(conn, tenant, "decide", key, digest)
            if replay is not None:
                return replay
            body: dict[str, Any] = {"decision": "ALLOW", "affected_scopes": scopes}
            if self._tenant_closed(conn, tenant):
                body = _deny(scopes, "TENANT_CLOSED", decide=True)
            else:
                budgeted = self._unit_or_none(self._budgets(conn, scopes), estimate["unit"], scopes)
                if not budgeted:
                    body = _deny(scopes, "BUDGET_NOT_FOUND", decide=True)
                for b in budgeted:
                    reason = _deny_reason(b, estimate["amount"])
                    if reason is not None:
                        body = _deny(scopes, reason, decide=True)
                        break
            self._remember(conn, tenant, "decide", key, digest, body)
            return body

    def commit(self, tenant: str | None, rid: str, req: dict[str, Any], digest: str) -> dict[str, Any]:
        """Commit reservation `rid` with `req` (a validated `CommitRequest`); returns the `CommitResponse` body."""
        key = req["idempotency_key"]
        actual = req["actual"]
        with self._tx() as conn:
            now = self.clock()
            row = self._load_reservation(conn, rid, tenant)
            owner = row[1]
            replay = self._replay(conn, owner, f"commit:{rid}", key, digest)
            if replay is not None:
                return replay
            if self._tenant_closed(conn, owner):
                raise CyclesProtocolError(409, "TENANT_CLOSED", f"Tenant {owner} is closed")
            if row[2] == "ACTIVE" and actual["unit"] != row[5]:
                raise CyclesProtocolError(
                    400,
                    "UNIT_MISMATCH",
                    "actual.unit differs from the reserved unit",
                    {"scope": row[7], "requested_unit": actual["unit"], "expected_units": [row[5]]},
                )
            self._check_mutable(row, now, grace=True)
            unit, estimate = row[5], row[6]
            budgets = self._budgets(conn, json.loads(row[9]))
            budgets = [b for b in budgets if b.unit == unit]
            delta = actual["amount"] - estimate
            charged = actual["amount"]
            if delta > 0:
                charged = estimate + _charge_overage(budgets, delta, row[14], now)
            for b in budgets:
                b.reserved -= estimate
                if delta < 0:
                    b.remaining -= delta
                    b.spent += actual["amount"]
                else:
                    b.spent += estimate
            self._save(conn, budgets, now)
            metadata = req["metadata"]
            conn.execute(
                Queries.FINALIZE_RESERVATION,
                ("COMMITTED", charged, None if metadata is None else DUMPS(metadata), now, rid),
            )
            body: dict[str, Any] = {"status": "COMMITTED", "charged": {"unit": unit, "amount": charged}}
            if delta < 0:
                body["released"] = {"unit": unit, "amount": -delta}
            body["balances"] = [b.balance() for b in budgets]
            self._remember(conn, owner, f"commit:{rid}", key, digest, body)
            return body

    def release(self, tenant: str | None, rid: str, req: dict[str, Any], digest: str) -> dict[str, Any]:
        """Release reservation `rid`; `tenant` None means an admin-key caller. Returns the `ReleaseResponse` body."""
        key = req["idempotency_key"]
        with self._tx() as conn:
            now = self.clock()
            row = self._load_reservation(conn, rid, tenant)
            owner = row[1]
            replay = self._replay(conn, owner, f"release:{rid}", key, digest)
            if replay is not None:
                return replay
            if self._tenant_closed(conn, owner):
                raise CyclesProtocolError(409, "TENANT_CLOSED", f"Tenant {owner} is closed")
            self._check_mutable(row, now, grace=True)
            unit, estimate = row[5], row[6]
            budgets = [b for b in self._budgets(conn, json.loads(row[9])) if b.unit == unit]
            for b in budgets:
                b.reserved -= estimate
                b.remaining += estimate
            self._save(conn, budgets, now)
            conn.execute(Queries.FINALIZE_RESERVATION, ("RELEASED", None, None, now, rid))
            body = {
                "status": "RELEASED",
                "released": {"unit": unit, "amount": estimate},
                "balances": [b.balance() for b in budgets],
            }
            self._remember(conn, owner, f"release:{rid}", key, digest, body)
            return body

    def extend(self, tenant: str, rid: str, req: dict[str, Any], digest: str) -> dict[str, Any]:
        """Extend reservation `rid` by `req["extend_by_ms"]` from its current expiry (at most `max_extensions`)."""
        key = req["idempotency_key"]
        with self._tx() as conn:
            now = self.clock()
            row = self._load_reservation(conn, rid, tenant)
            replay = self._replay(conn, tenant, f"extend:{rid}", key, digest)
            if replay is not None:
                state = conn.execute("SELECT state FROM reservations WHERE reservation_id = ?", (rid,)).fetchone()
                active = state is not None and state[0] == "ACTIVE"
                replay["remaining_ttl_ms"] = max(0, replay["expires_at_ms"] - now) if active else 0
                return replay
            if self._tenant_closed(conn, tenant):
                raise CyclesProtocolError(409, "TENANT_CLOSED", f"Tenant {tenant} is closed")
            self._check_mutable(row, now, grace=False)
            if row[16] >= row[17]:
                raise CyclesProtocolError(
                    409, "MAX_EXTENSIONS_EXCEEDED", f"Reservation was already extended {row[16]} times"
                )
            expires = row[11] + req["extend_by_ms"]
            conn.execute(Queries.EXTEND_RESERVATION, (expires, rid))
            budgets = [b for b in self._budgets(conn, json.loads(row[9])) if b.unit == row[5]]
            body = {
                "status": "ACTIVE",
                "expires_at_ms": expires,
                "remaining_ttl_ms": expires - now,
                "balances": [b.balance() for b in budgets],
            }
            self._remember(conn, tenant, f"extend:{rid}", key, digest, body)
            return body

    def create_event(self, tenant: str, req: dict[str, Any], digest: str) -> dict[str, Any]:
        """Apply a direct-debit event (`EventCreateRequest`) atomically across the derived scopes."""
        key = req["idempotency_key"]
        actual = req["actual"]
        unit, amount = actual["unit"], actual["amount"]
        scopes = derive_scopes(req["subject"], tenant)
        with self._tx() as conn:
            now = self.clock()
            replay = self._replay(conn, tenant, "event", key, digest)
            if replay is not None:
                return replay
            if self._tenant_closed(conn, tenant):
                raise CyclesProtocolError(409, "TENANT_CLOSED", f"Tenant {tenant} is closed")
            budgeted = self._select_budgeted(self._budgets(conn, scopes), unit, scopes, True)
            for b in budgeted:
                if b.status in ("FROZEN", "CLOSED"):
                    raise CyclesProtocolError(409, f"BUDGET_{b.status}", f"Budget at scope {b.scope} is {b.status}")
            policy = req["overage_policy"] or "ALLOW_IF_AVAILABLE"
            charged = _charge_overage(budgeted, amount, policy, now) if amount > 0 else 0
            self._save(conn, budgeted, now)
            event_id = str(uuid.uuid4())
            metadata = req["metadata"]
            conn.execute(
                Queries.INSERT_EVENT,
                (
                    event_id,
                    tenant,
                    DUMPS(req["subject"]),
                    DUMPS(req["action"]),
                    unit,
                    amount,
                    charged,
                    scopes[-1],
                    key,
                    None if metadata is None else DUMPS(metadata),
                    now,
                ),
            )
            body: dict[str, Any] = {"status": "APPLIED", "event_id": event_id}
            if charged != amount:
                body["charged"] = {"unit": unit, "amount": charged}
            body["balances"] = [b.balance() for b in budgeted]
            self._remember(conn, tenant, "event", key, digest, body)
            return body

    def expire_due(self, limit: int = 500) -> int:
        """Expire ACTIVE reservations past `expires_at_ms + grace`, returning their budget; return how many."""
        with self._tx() as conn:
            now = self.clock()
            due = conn.execute(Queries.SELECT_DUE_RESERVATIONS, (now, limit)).fetchall()
            for rid, unit, estimate, budgeted_json in due:
                budgets = [b for b in self._budgets(conn, json.loads(budgeted_json)) if b.unit == unit]
                for b in budgets:
                    b.reserved -= estimate
                    b.remaining += estimate
                self._save(conn, budgets, now)
                conn.execute(Queries.EXPIRE_RESERVATION, (rid,))
            return len(due)

    def get_reservation(self, tenant: str | None, rid: str) -> dict[str, Any]:
        """Return the `ReservationDetail` of `rid` (410 when EXPIRED, 403 for another tenant's reservation)."""
        with self._read() as conn:
            row = self._load_reservation(conn, rid, tenant)
        if row[2] == "EXPIRED":
            raise CyclesProtocolError(410, "RESERVATION_EXPIRED", "Reservation has expired")
        return reservation_view(row, metadata=True, committed_metadata=True)

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


def _deny(scopes: list[str], reason: str, *, decide: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"decision": "DENY", "affected_scopes": scopes}
    if not decide:
        body["scope_path"] = scopes[-1]
    body["reason_code"] = reason
    return body


def reservation_view(row: tuple[Any, ...], *, metadata: bool, committed_metadata: bool) -> dict[str, Any]:
    """Render a reservation row as `ReservationDetail` / `ReservationSummary` (absent fields omitted)."""
    unit = row[5]
    out: dict[str, Any] = {
        "reservation_id": row[0],
        "status": row[2],
        "idempotency_key": row[13],
        "subject": json.loads(row[3]),
        "action": json.loads(row[4]),
        "reserved": {"unit": unit, "amount": row[6]},
        "created_at_ms": row[10],
        "expires_at_ms": row[11],
        "scope_path": row[7],
        "affected_scopes": json.loads(row[8]),
    }
    if row[2] == "COMMITTED":
        out["committed"] = {"unit": unit, "amount": row[18]}
    if row[20] is not None:
        out["finalized_at_ms"] = row[20]
    if metadata and row[15] is not None:
        out["metadata"] = json.loads(row[15])
    if committed_metadata and row[19] is not None:
        out["committed_metadata"] = json.loads(row[19])
    return out
