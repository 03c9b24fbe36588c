"""Direct-debit events as a ledger operation: charge an actual amount across the subject's scopes, no reservation."""

from __future__ import annotations

import uuid
from typing import Any

from otel_cycles.authority._budgets import charge_overage, derive_scopes, load_budgets, save_budgets, select_budgeted
from otel_cycles.authority._errors import CyclesProtocolError
from otel_cycles.authority._idempotency import remember, replay
from otel_cycles.authority._model import DUMPS, dumps_or_none
from otel_cycles.authority._sql import Queries
from otel_cycles.authority._store import LedgerStore
from otel_cycles.authority._tenants import require_open_tenant

__all__ = ["EventsMixin"]


class EventsMixin(LedgerStore):
    """The event operation of `SQLiteLedger`."""

    def create_event(self, tenant: str, req: dict[str, Any], digest: str) -> dict[str, Any]:
        """Apply a direct-debit event (`EventCreateRequest`) atomically across the derived scopes."""
        key = req["idempotency_key"]
        actual = req["actual"]
        unit, amount = actual["unit"], actual["amount"]
        scopes = derive_scopes(req["subject"])
        with self._tx() as conn:
            now = self.clock()
            stored = replay(conn, tenant, "event", key, digest)
            if stored is not None:
                return stored
            require_open_tenant(conn, tenant)
            budgeted = select_budgeted(load_budgets(conn, scopes), unit, scopes, True)
            for b in budgeted:
                if b.status in ("FROZEN", "CLOSED"):
                    raise CyclesProtocolError(409, f"BUDGET_{b.status}", f"Budget at scope {b.scope} is {b.status}")
            policy = req["overage_policy"] or "ALLOW_IF_AVAILABLE"
            charged = charge_overage(budgeted, amount, policy, now) if amount > 0 else 0
            save_budgets(conn, budgeted, now)
            event_id = str(uuid.uuid4())
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
                    dumps_or_none(req["metadata"]),
                    now,
                ),
            )
            body: dict[str, Any] = {"status": "APPLIED", "event_id": event_id}
            if charged != amount:
                body["charged"] = {"unit": unit, "amount": charged}
            body["balances"] = [b.balance() for b in budgeted]
            remember(conn, tenant, "event", key, digest, body, self.clock())
            return body
