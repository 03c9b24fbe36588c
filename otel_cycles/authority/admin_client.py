"""A small HTTP client for a Cycles server's admin plane and the admin-key reads of its runtime plane.

Used by the `otel-cycles authority` CLI and by the test suite's external-server mode, so both talk to any Cycles
server (the embedded one or a reference deployment) only over HTTP. A refusal raises `AdminError` (status, error
code, message); a transport failure raises `Unreachable`. List methods follow `next_cursor` to the end.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

__all__ = [
    "AdminClient",
    "AdminError",
    "InvalidScope",
    "MissingAdminKey",
    "Unreachable",
    "budget_create_body",
    "scope_tenant",
]

_PAGE = 100  # the smallest maximum page size among the list endpoints (API keys)


class AdminError(Exception):
    """The server answered with an error status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class Unreachable(Exception):
    """No HTTP answer from the server (connection refused, timeout, DNS, bad URL)."""


class MissingAdminKey(Exception):
    """An admin call was attempted without an admin key."""


class InvalidScope(ValueError):
    """A scope that does not start with `tenant:<id>`."""


def scope_tenant(scope: str) -> str:
    """The tenant of a scope path: `tenant:acme/agent:x` -> `acme`; InvalidScope if it does not start with one."""
    first = scope.split("/")[0]
    level, sep, tenant = first.partition(":")
    if level != "tenant" or not sep or not tenant:
        raise InvalidScope(f"scope must start with tenant:<id>, got {scope!r}")
    return tenant.lower()


def budget_create_body(
    scope: str, allocated: int, *, unit: str, overdraft_limit: int, commit_overage_policy: str | None
) -> dict[str, Any]:
    """The `BudgetCreateRequest` body for a budget of `allocated` (and `overdraft_limit`) `unit` at `scope`.

    Built in this one place for `AdminClient.create_budget` and the in-process `LocalAuthority.create_budget`, so the
    two send the same request. Without `tenant_id`: the admin plane adds it, while the in-process ledger derives the
    owner from the scope itself. A zero overdraft limit and no overage policy are left out: the server's defaults
    apply.
    """
    body: dict[str, Any] = {"scope": scope, "unit": unit, "allocated": {"unit": unit, "amount": allocated}}
    if overdraft_limit:
        body["overdraft_limit"] = {"unit": unit, "amount": overdraft_limit}
    if commit_overage_policy:
        body["commit_overage_policy"] = commit_overage_policy
    return body


class AdminClient:
    """Admin-key calls to the server at `url` (`X-Admin-API-Key`); tenant-key reads via `api_key=` per call.

    Args:
        url: Base URL of the server (the admin plane; the embedded authority serves both planes on one port).
        admin_key: The admin secret; may be None for commands that only use a tenant API key.
        timeout: Seconds per request (connect and read).
    """

    def __init__(self, url: str, admin_key: str | None, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._admin_key = admin_key
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        api_key: str | None = None,
    ) -> tuple[int, Any]:
        """Send one request and return `(status, decoded body)` for a 2xx answer; raise otherwise."""
        if api_key is not None:
            headers = {"X-Cycles-API-Key": api_key}
        elif self._admin_key:
            headers = {"X-Admin-API-Key": self._admin_key}
        else:
            raise MissingAdminKey("an admin key is required: --admin-key or CYCLES_ADMIN_API_KEY")
        try:
            resp = self._http.request(method, path, json=body, params=params, headers=headers)
        except (httpx.HTTPError, ValueError) as exc:  # ValueError: a URL httpx cannot use
            raise Unreachable(f"cannot reach {self.url}: {exc or type(exc).__name__}") from None
        try:
            decoded: Any = resp.json()
        except ValueError:
            decoded = None
        if resp.is_success:
            return resp.status_code, decoded
        if isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
            raise AdminError(resp.status_code, decoded["error"], str(decoded.get("message", "")))
        raise AdminError(resp.status_code, "HTTP_ERROR", resp.reason_phrase or resp.text[:200])

    def pages(self, path: str, field: str, params: dict[str, str], api_key: str | None = None) -> list[Any]:
        out: list[Any] = []
        query = {"limit": str(_PAGE), **params}
        while True:
            _, body = self.request("GET", path, params=query, api_key=api_key)
            out.extend(body.get(field) or [])
            cursor = body.get("next_cursor")
            if not cursor or not body.get("has_more", True):
                return out
            query["cursor"] = cursor

    # ---- tenants

    def create_tenant(self, tenant_id: str, name: str | None = None) -> tuple[dict[str, Any], bool]:
        """Create a tenant; returns `(Tenant, created)` (`created` is False when it already existed)."""
        status, body = self.request(
            "POST", "/v1/admin/tenants", body={"tenant_id": tenant_id, "name": name or tenant_id}
        )
        return body, status == 201

    def list_tenants(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every tenant (optionally with `status`)."""
        tenants = self.pages("/v1/admin/tenants", "tenants", {"status": status} if status else {})
        return [t for t in tenants if status is None or t.get("status") == status]

    def get_tenant(self, tenant_id: str) -> dict[str, Any]:
        """One tenant."""
        return dict(self.request("GET", f"/v1/admin/tenants/{quote(tenant_id, safe='')}")[1])

    # ---- API keys

    def create_api_key(
        self, tenant_id: str, name: str = "default", permissions: list[str] | None = None
    ) -> dict[str, Any]:
        """Create an API key (`key_secret` is in the answer, once); the server's default permissions when None."""
        body: dict[str, Any] = {"tenant_id": tenant_id, "name": name}
        if permissions:
            body["permissions"] = permissions
        return dict(self.request("POST", "/v1/admin/api-keys", body=body)[1])

    def list_api_keys(self, tenant_id: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """API keys (never their secrets), optionally of one tenant and/or with one status."""
        params = {k: v for k, v in (("tenant_id", tenant_id), ("status", status)) if v}
        keys = self.pages("/v1/admin/api-keys", "keys", params)
        return [
            k
            for k in keys
            if (status is None or k.get("status") == status) and (tenant_id is None or k.get("tenant_id") == tenant_id)
        ]

    def revoke_api_key(self, key_id: str, reason: str | None = None) -> dict[str, Any]:
        """Revoke an API key (permanent)."""
        params = {"reason": reason} if reason else None
        return dict(self.request("DELETE", f"/v1/admin/api-keys/{quote(key_id, safe='')}", params=params)[1])

    # ---- budgets

    def create_budget(
        self,
        scope: str,
        allocated: int,
        *,
        unit: str = "USD_MICROCENTS",
        overdraft_limit: int = 0,
        commit_overage_policy: str | None = None,
    ) -> dict[str, Any]:
        """Create the budget of `(scope, unit)` on behalf of the scope's tenant."""
        body = budget_create_body(
            scope, allocated, unit=unit, overdraft_limit=overdraft_limit, commit_overage_policy=commit_overage_policy
        )
        body["tenant_id"] = scope_tenant(scope)
        return dict(self.request("POST", "/v1/admin/budgets", body=body)[1])

    def fund(self, scope: str, operation: str, amount: int, unit: str = "USD_MICROCENTS") -> dict[str, Any]:
        """Apply a funding operation (CREDIT, DEBIT, RESET, REPAY_DEBT, RESET_SPENT)."""
        params = {"scope": scope, "unit": unit, "tenant_id": scope_tenant(scope)}
        body = {"operation": operation, "amount": {"unit": unit, "amount": amount}}
        return dict(self.request("POST", "/v1/admin/budgets/fund", body=body, params=params)[1])

    def set_budget_status(self, scope: str, action: str, unit: str = "USD_MICROCENTS") -> dict[str, Any]:
        """`action` is `freeze`, `unfreeze` or `close` (close is an embedded-authority route; irreversible)."""
        params = {"scope": scope, "unit": unit, "tenant_id": scope_tenant(scope)}
        return dict(self.request("POST", f"/v1/admin/budgets/{action}", params=params)[1])

    def list_budgets(self, tenant_id: str, *, api_key: str | None = None) -> list[dict[str, Any]]:
        """Every budget ledger of `tenant_id` (admin key, or the tenant's own key if given)."""
        params = {} if api_key else {"tenant_id": tenant_id}
        return self.pages("/v1/admin/budgets", "ledgers", params, api_key)

    # ---- runtime-plane reads

    def balances(self, tenant_id: str, api_key: str) -> list[dict[str, Any]]:
        """Every `Balance` of the tenant, read with its own API key (`GET /v1/balances`)."""
        return self.pages("/v1/balances", "balances", {"tenant": tenant_id}, api_key)

    def get_reservation(self, reservation_id: str) -> dict[str, Any]:
        """One reservation (`ReservationDetail`), read with the admin key."""
        return dict(self.request("GET", f"/v1/reservations/{quote(reservation_id, safe='')}")[1])

    def reservations(
        self, tenant_id: str, status: str | None = None, *, api_key: str | None = None
    ) -> list[dict[str, Any]]:
        """The tenant's reservations, newest first (admin key, or the tenant's own key if given)."""
        params = {"tenant": tenant_id} | ({"status": status} if status else {})
        return self.pages("/v1/reservations", "reservations", params, api_key)
