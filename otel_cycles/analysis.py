"""Before and after a run: a preflight budget check (`decide`) and the balances of every scope of a subject."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from runcycles import CyclesClient

from otel_cycles._settlement import suppressed_instrumentation

__all__ = ["ScopeBalance", "balances", "limiting_scope", "preflight"]


@dataclass(frozen=True)
class ScopeBalance:
    """One budget scope's ledger, in `unit` (`allocated = remaining + spent + reserved + debt`)."""

    scope_path: str
    unit: str
    allocated: int | None
    remaining: int
    spent: int
    reserved: int
    debt: int
    is_over_limit: bool


def _amount(balance: dict[str, Any], key: str) -> int:
    value = balance.get(key)
    return int(value["amount"]) if isinstance(value, dict) and "amount" in value else 0


def balances(client: CyclesClient, tenant: str, **filters: str) -> list[ScopeBalance]:
    """Every budget of `tenant` (narrowed by workspace/app/workflow/agent/toolset filters), following pagination.

    Raises:
        RuntimeError: the authority answered with an error.
    """
    out: list[ScopeBalance] = []
    cursor: str | None = None
    while True:
        params = {"tenant": tenant, **filters}
        if cursor:
            params["cursor"] = cursor
        response = client.get_balances(**params)
        if not response.is_success or not isinstance(response.body, dict):
            raise RuntimeError(f"GET /v1/balances failed: HTTP {response.status} {response.error_message or ''}")
        for item in response.body.get("balances", []):
            allocated = item.get("allocated")
            out.append(
                ScopeBalance(
                    scope_path=item["scope_path"],
                    unit=item["remaining"]["unit"],
                    allocated=int(allocated["amount"]) if isinstance(allocated, dict) else None,
                    remaining=int(item["remaining"]["amount"]),
                    spent=_amount(item, "spent"),
                    reserved=_amount(item, "reserved"),
                    debt=_amount(item, "debt"),
                    is_over_limit=bool(item.get("is_over_limit", False)),
                )
            )
        cursor = response.body.get("next_cursor")
        if not response.body.get("has_more") or not cursor:
            return out


def preflight(
    client: CyclesClient,
    *,
    estimate: int,
    tenant: str,
    action_kind: str = "llm.completion",
    action_name: str = "unknown",
    unit: str = "USD_MICROCENTS",
    **subject: str,
) -> tuple[bool, str | None]:
    """Ask the authority (`POST /v1/decide`) whether `estimate` would be allowed now, without reserving anything.

    Returns (allowed, reason_code). A decision is advice, not a reservation: it is not safe under concurrency.

    Raises:
        RuntimeError: the authority answered with an error.
    """
    body = {
        "idempotency_key": f"decide-{uuid.uuid4()}",
        "subject": {"tenant": tenant, **{k: v for k, v in subject.items() if v}},
        "action": {"kind": action_kind, "name": action_name},
        "estimate": {"unit": unit, "amount": estimate},
    }
    response = client.decide(body)
    if not response.is_success or not isinstance(response.body, dict):
        raise RuntimeError(f"POST /v1/decide failed: HTTP {response.status} {response.error_message or ''}")
    decision = response.body.get("decision")
    return decision in ("ALLOW", "ALLOW_WITH_CAPS"), response.body.get("reason_code")


def derived_scopes(subject: dict[str, Any]) -> list[str]:
    """The scope paths a Cycles subject charges, root first (lowercased, gaps skipped), as the protocol derives them."""
    scopes, parts = [], []
    for level in ("tenant", "workspace", "app", "workflow", "agent", "toolset"):
        value = subject.get(level)
        if value:
            parts.append(f"{level}:{str(value).lower()}")
            scopes.append("/".join(parts))
    return scopes


def limiting_scope(client: CyclesClient, subject: dict[str, Any]) -> tuple[str | None, int | None]:
    """(scope path, remaining) of the subject's budgeted scope with the least remaining budget; (None, None) if the
    balances cannot be read. Used to explain a denial; never raises."""
    try:
        with suppressed_instrumentation():
            response = client.get_balances(tenant=str(subject["tenant"]))
        items = response.body.get("balances", []) if response.is_success and isinstance(response.body, dict) else []
    except Exception:
        return None, None
    own = set(derived_scopes(subject))
    candidates = [
        (item["remaining"]["amount"], item["scope_path"])
        for item in items
        if isinstance(item, dict)
        and item.get("scope_path") in own
        and isinstance(item.get("remaining"), dict)
        and item["remaining"].get("unit") == "USD_MICROCENTS"
        and isinstance(item["remaining"].get("amount"), int)
    ]
    if not candidates:
        return None, None
    amount, path = min(candidates)
    return path, amount
