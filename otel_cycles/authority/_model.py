"""Value types shared by the ledger modules."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["DUMPS", "Budget", "dumps_or_none"]

DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
"""Compact JSON encoder used for stored bodies and responses."""


def dumps_or_none(value: Any) -> str | None:
    """Return `DUMPS(value)`, or None for None (an optional JSON column)."""
    return None if value is None else DUMPS(value)


class Budget:
    """A mutable in-transaction copy of one `(scope, unit)` budget row."""

    __slots__ = (
        "allocated",
        "commit_overage_policy",
        "created_at_ms",
        "debt",
        "is_over_limit",
        "ledger_id",
        "overdraft_limit",
        "remaining",
        "reserved",
        "scope",
        "spent",
        "status",
        "tenant_id",
        "unit",
        "updated_at_ms",
    )

    def __init__(self, row: tuple[Any, ...]) -> None:
        (
            self.scope,
            self.unit,
            self.allocated,
            self.remaining,
            self.reserved,
            self.spent,
            self.debt,
            self.overdraft_limit,
            over,
            self.status,
            self.commit_overage_policy,
            self.tenant_id,
            self.ledger_id,
            self.created_at_ms,
            self.updated_at_ms,
        ) = row
        self.is_over_limit = bool(over)

    def balance(self) -> dict[str, Any]:
        """Return the wire `Balance` (leaf `scope`, full `scope_path`; debt/overdraft/over-limit only when set)."""
        unit = self.unit
        out: dict[str, Any] = {
            "scope": self.scope.rsplit("/", 1)[-1],
            "scope_path": self.scope,
            "remaining": {"unit": unit, "amount": self.remaining},
            "reserved": {"unit": unit, "amount": self.reserved},
            "spent": {"unit": unit, "amount": self.spent},
            "allocated": {"unit": unit, "amount": self.allocated},
        }
        if self.debt:
            out["debt"] = {"unit": unit, "amount": self.debt}
        if self.overdraft_limit:
            out["overdraft_limit"] = {"unit": unit, "amount": self.overdraft_limit}
        if self.is_over_limit:
            out["is_over_limit"] = True
        return out
