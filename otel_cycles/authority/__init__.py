"""Embedded Cycles-compatible budget authority: a SQLite ledger behind the Cycles v0 HTTP API.

`LocalAuthority` runs it in-process on a free loopback port (tests, examples, the demo); `serve()` runs it in the
foreground (the `otel-cycles authority serve` command). Clients talk to it with `runcycles` as to the reference
server; setup scripts use the same admin-plane endpoints (`/v1/admin/tenants`, `/api-keys`, `/budgets`,
`/budgets/fund`, `/policies`).

Example:
    >>> with LocalAuthority() as authority:
    ...     authority.create_tenant("acme")
    ...     api_key = authority.create_api_key("acme")
    ...     authority.create_budget("tenant:acme", 1_000_000)
    ...     authority.create_policy("acme", "agent:*", {"tool_denylist": ["send_email"], "max_tokens": 512})
    ...     # CyclesConfig(base_url=authority.base_url, api_key=api_key, journal_enabled=False)
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

from otel_cycles.authority._errors import CyclesProtocolError
from otel_cycles.authority._listing import list_reservations
from otel_cycles.authority._permissions import DEFAULT_KEY_PERMISSIONS, PERMISSIONS
from otel_cycles.authority._server import BackgroundServer, ServerHandle, run_foreground
from otel_cycles.authority.admin_client import budget_create_body
from otel_cycles.authority.ledger import Clock, SQLiteLedger

__all__ = ["DEFAULT_KEY_PERMISSIONS", "PERMISSIONS", "CyclesProtocolError", "LocalAuthority", "SQLiteLedger", "serve"]

_DAY_MS = 86_400_000


class LocalAuthority:
    """The authority served from a background thread, for tests, examples and the demo.

    The server starts in the constructor and listens on `host:port` (port 0 picks a free one); use it as a context
    manager or call `stop()`. Convenience admin methods call the same ledger functions as the HTTP admin plane.

    Args:
        db_path: SQLite file (created 0600, WAL); None keeps the ledger in memory for this object's lifetime.
        admin_key: Secret for `X-Admin-API-Key`; a random one is generated when None (see `admin_key`).
        host: Interface to bind; loopback by default.
        port: TCP port; 0 picks a free port (see `port` / `base_url`).
        clock: Time source in epoch milliseconds, injectable so expiry tests need not sleep.
        sweep_interval_s: Seconds between background expiry sweeps.
        key_ttl_days: Lifetime of API keys created without `expires_at` (90 days, like the reference server);
            None: they never expire.
    """

    def __init__(
        self,
        db_path: str | None = None,
        *,
        admin_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock | None = None,
        sweep_interval_s: float = 1.0,
        key_ttl_days: float | None = 90,
    ) -> None:
        self.admin_key: str = admin_key or "cyc_admin_" + secrets.token_hex(16)
        """The admin secret accepted in `X-Admin-API-Key`."""
        self.ledger: SQLiteLedger = SQLiteLedger.open(db_path, clock=clock, key_ttl_ms=_ttl_ms(key_ttl_days))
        """The underlying ledger (thread-safe)."""
        try:
            self._server = BackgroundServer(self.ledger, host, port, self.admin_key, sweep_interval_s)
        except BaseException:
            self.ledger.close()
            raise
        handle = self._server.handle
        assert handle is not None
        self.host: str = handle.host
        self.port: int = handle.port
        self.base_url: str = f"http://{self.host}:{self.port}"
        """Base URL for `runcycles.CyclesConfig(base_url=...)`."""
        self._stopped = False

    def __enter__(self) -> LocalAuthority:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the server and close the database (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self._server.stop()
        self.ledger.close()

    # ---- admin conveniences (same ledger functions as the HTTP admin plane)

    def create_tenant(self, tenant_id: str, name: str | None = None) -> dict[str, Any]:
        """Create tenant `tenant_id` (idempotent) and return its `Tenant` record."""
        body, _ = self.ledger.create_tenant({"tenant_id": tenant_id, "name": name or tenant_id})
        return body

    def set_tenant_status(self, tenant_id: str, status: str) -> dict[str, Any]:
        """Set a tenant's status: `ACTIVE`, `SUSPENDED` or `CLOSED` (CLOSED → 409 TENANT_CLOSED on mutations)."""
        return self.ledger.set_tenant_status(tenant_id, status)

    def create_api_key(
        self,
        tenant_id: str,
        name: str = "default",
        *,
        permissions: Sequence[str] | None = None,
        expires_at: str | None = None,
    ) -> str:
        """Create an API key for `tenant_id` and return its secret (`cyc_live_…`; only a hash is stored).

        `permissions` defaults to the runtime plane only (`DEFAULT_KEY_PERMISSIONS`); grant e.g. `budgets:write`
        explicitly. `expires_at` (RFC 3339) defaults to now + `key_ttl_days`. See `create_api_key_record`.
        """
        secret: str = self.create_api_key_record(tenant_id, name, permissions=permissions, expires_at=expires_at)[
            "key_secret"
        ]
        return secret

    def create_api_key_record(
        self,
        tenant_id: str,
        name: str = "default",
        *,
        permissions: Sequence[str] | None = None,
        expires_at: str | None = None,
    ) -> dict[str, Any]:
        """Create an API key and return the whole `ApiKeyCreateResponse` (`key_id`, `key_secret`, `permissions`,
        `expires_at`, ...)."""
        body: dict[str, Any] = {"tenant_id": tenant_id, "name": name}
        if permissions is not None:
            body["permissions"] = list(permissions)
        if expires_at is not None:
            body["expires_at"] = expires_at
        return self.ledger.create_api_key(body)

    def list_api_keys(self, tenant_id: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """Return the `ApiKey` records (never secrets), newest first: one tenant's or all, optionally by status
        (`ACTIVE`, `REVOKED`, `EXPIRED`)."""
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page = self.ledger.list_api_keys(tenant_id, status, 100, cursor)
            out.extend(page["keys"])
            cursor = page.get("next_cursor")
            if cursor is None:
                return out

    def revoke_api_key(self, key_id: str, reason: str | None = None) -> dict[str, Any]:
        """Revoke key `key_id` for good (it gets 401 from now on) and return its `ApiKey` record."""
        return self.ledger.revoke_api_key(key_id, reason)

    def create_budget(
        self,
        scope: str,
        allocated: int,
        unit: str = "USD_MICROCENTS",
        overdraft_limit: int = 0,
        commit_overage_policy: str | None = None,
    ) -> dict[str, Any]:
        """Create a budget at `scope` (e.g. `tenant:acme/workspace:prod`) and return its `BudgetLedger`."""
        body = budget_create_body(
            scope, allocated, unit=unit, overdraft_limit=overdraft_limit, commit_overage_policy=commit_overage_policy
        )
        return self.ledger.create_budget(body, None)

    def fund(self, scope: str, operation: str, amount: int, unit: str = "USD_MICROCENTS") -> dict[str, Any]:
        """Apply a funding operation (`CREDIT`, `DEBIT`, `RESET`, `REPAY_DEBT`, `RESET_SPENT`) to a budget."""
        return self.ledger.fund(scope, unit, {"operation": operation, "amount": {"unit": unit, "amount": amount}}, None)

    def set_budget_status(self, scope: str, status: str, unit: str = "USD_MICROCENTS") -> dict[str, Any]:
        """Set a budget's status: `ACTIVE`, `FROZEN` or `CLOSED`."""
        return self.ledger.set_budget_status(scope, unit, status)

    def create_policy(
        self,
        tenant_id: str,
        scope_pattern: str,
        caps: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        priority: int = 0,
        description: str | None = None,
        effective_from: datetime | str | None = None,
        effective_until: datetime | str | None = None,
        commit_overage_policy: str | None = None,
        reservation_ttl_override: Mapping[str, int] | None = None,
    ) -> dict[str, Any]:
        """Create a policy for `tenant_id` (as `POST /v1/admin/policies` with the admin key); return its `Policy`.

        Args:
            tenant_id: The owning tenant; the policy only ever applies to its scopes.
            scope_pattern: `tenant:acme/agent:bot` (exact), `tenant:acme/*` (descendants), `agent:*` (any agent),
                `*/agent:bot` (that agent anywhere), `*` (every scope).
            caps: `Caps` fields: `max_tokens`, `max_steps_remaining`, `tool_allowlist`, `tool_denylist`,
                `cooldown_ms`. Allowed decisions on matching scopes answer `ALLOW_WITH_CAPS` with them.
            name: Unique per tenant; defaults to `"<scope_pattern> @<priority>"`.
            priority: The highest-priority matching policy wins (ties: the oldest).
            description: Free text.
            effective_from: The policy applies from this instant (aware datetime or RFC 3339 string).
            effective_until: ...until just before this instant.
            commit_overage_policy: Overage policy of new reservations on matching scopes (before the tenant's).
            reservation_ttl_override: `default_ttl_ms`, `max_ttl_ms`, `max_extensions` for those reservations.
        """
        body: dict[str, Any] = {
            "tenant_id": tenant_id,
            "name": name or f"{scope_pattern} @{priority}",
            "scope_pattern": scope_pattern,
            "priority": priority,
        }
        if caps is not None:
            body["caps"] = dict(caps)
        if description is not None:
            body["description"] = description
        if commit_overage_policy is not None:
            body["commit_overage_policy"] = commit_overage_policy
        if reservation_ttl_override is not None:
            body["reservation_ttl_override"] = dict(reservation_ttl_override)
        for field, value in (("effective_from", effective_from), ("effective_until", effective_until)):
            if value is not None:
                body[field] = value.isoformat() if isinstance(value, datetime) else value
        return self.ledger.create_policy(body, None)

    def update_policy(self, policy_id: str, **fields: Any) -> dict[str, Any]:
        """Update a policy as `PATCH /v1/admin/policies/{policy_id}` does (e.g. `status="DISABLED"`, `caps={...}`)."""
        return self.ledger.update_policy(policy_id, fields, None)

    def policies(self, tenant_id: str) -> list[dict[str, Any]]:
        """Return every `Policy` of `tenant_id`, highest priority first."""
        return list(
            self.ledger.list_policies(tenant_id, status=None, scope_pattern=None, limit=10**9, cursor=None)["policies"]
        )

    def balances(self, tenant_id: str) -> list[dict[str, Any]]:
        """Return every `Balance` of `tenant_id`, ordered by scope then unit."""
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page, cursor = self.ledger.list_budgets(tenant_id, {}, 200, cursor)
            out.extend(b.balance() for b in page)
            if cursor is None:
                return out

    def reservations(self, tenant_id: str, status: str | None = None) -> list[dict[str, Any]]:
        """Return `tenant_id`'s reservations (newest first) as `ReservationSummary` dicts, optionally by status."""
        params = {"limit": "200"} | ({"status": status} if status else {})
        out: list[dict[str, Any]] = []
        while True:
            page = list_reservations(self.ledger, tenant_id, params)
            out.extend(page["reservations"])
            if "next_cursor" not in page:
                return out
            params["cursor"] = page["next_cursor"]

    def sweep(self) -> int:
        """Run one expiry pass now (what the background sweeper does); return how many reservations expired."""
        return self.ledger.expire_due()

    def check_invariants(self) -> list[str]:
        """Return ledger violations (`allocated = remaining + spent + reserved + debt`, holds); empty when sound."""
        return self.ledger.check_invariants()


def serve(
    db_path: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 7878,
    admin_key: str | None = None,
    sweep_interval_s: float = 1.0,
    key_ttl_days: float | None = 90,
) -> None:
    """Serve the authority in the foreground until SIGINT/SIGTERM.

    Prints `listening on http://HOST:PORT` to stdout once ready (port 0 picks a free port). `key_ttl_days` is the
    lifetime of API keys created without `expires_at` (None: they never expire).
    """
    ledger = SQLiteLedger.open(db_path, key_ttl_ms=_ttl_ms(key_ttl_days))

    def ready(handle: ServerHandle) -> None:
        print(f"listening on http://{handle.host}:{handle.port}", flush=True)
        if db_path is None:
            print("warning: no --db given, the ledger lives in memory and is lost on exit", file=sys.stderr)

    try:
        run_foreground(ledger, host, port, admin_key, sweep_interval_s, ready)
    finally:
        ledger.close()


def _ttl_ms(days: float | None) -> int | None:
    if days is not None and days <= 0:
        raise ValueError("key_ttl_days must be positive, or None for keys that never expire")
    return None if days is None else int(days * _DAY_MS)
