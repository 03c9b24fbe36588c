"""HTTP handlers of the admin plane (`/v1/admin/…`): tenants, API keys, budgets and funding, policies.

Tenant and key management needs the admin key; budget endpoints also accept a tenant API key, scoped to its tenant;
policy endpoints accept the admin key or a tenant API key holding `policies:read` / `policies:write`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from otel_cycles.authority import _validation as v
from otel_cycles.authority._errors import CyclesProtocolError, invalid
from otel_cycles.authority._http_auth import CallerAuth
from otel_cycles.authority._http_messages import Request, body_object, budget_page, int_param, subject_filters
from otel_cycles.authority._views import ledger_view

__all__ = ["AdminHandlers"]


def _path_tenant(req: Request) -> str:
    return unquote(req.path.split("/")[4])


def _scope_unit(req: Request) -> tuple[str, str]:
    scope, unit = req.params.get("scope"), req.params.get("unit")
    if not scope or not unit:
        raise invalid("scope and unit query parameters are required")
    if unit not in v.UNITS:
        raise invalid("unit is not a UnitEnum value")
    return scope, unit


def _path_policy(req: Request) -> str:
    policy_id = unquote(req.path.split("/")[4])
    if not 1 <= len(policy_id) <= 128:
        raise invalid("policy_id must be 1-128 characters")
    return policy_id


def _granted(permissions: list[str], permission: str) -> bool:
    # Spec `Permission` wildcards: admin:write satisfies any *:write, admin:read any *:read (never a write).
    wildcard = "admin:write" if permission.endswith(":write") else "admin:read"
    return permission in permissions or wildcard in permissions


class AdminHandlers(CallerAuth):
    """Handlers for `/v1/admin/tenants…`, `/v1/admin/api-keys`, `/v1/admin/budgets…` and `/v1/admin/policies…`."""

    def _admin_create_tenant(self, req: Request) -> tuple[int, Any]:
        self._require_admin(req)
        body, created = self.ledger.create_tenant(body_object(req.json()))
        return (201 if created else 200), body

    def _admin_list_tenants(self, req: Request) -> tuple[int, Any]:
        self._require_admin(req)
        return 200, {"tenants": self.ledger.list_tenants(), "has_more": False}

    def _admin_get_tenant(self, req: Request) -> tuple[int, Any]:
        self._require_admin(req)
        return 200, self.ledger.get_tenant(_path_tenant(req))

    def _admin_patch_tenant(self, req: Request) -> tuple[int, Any]:
        self._require_admin(req)
        body = body_object(req.json())
        if set(body) - {"status", "name", "metadata"} or "status" not in body:
            raise invalid("only status can be updated here")
        return 200, self.ledger.set_tenant_status(_path_tenant(req), body["status"])

    def _admin_create_key(self, req: Request) -> tuple[int, Any]:
        self._require_admin(req)
        return 201, self.ledger.create_api_key(body_object(req.json()))

    def _admin_create_budget(self, req: Request) -> tuple[int, Any]:
        body = body_object(req.json())
        tenant = self._budget_tenant(req, body.get("tenant_id") if isinstance(body.get("tenant_id"), str) else None)
        return 201, self.ledger.create_budget(body, tenant)

    def _admin_fund(self, req: Request) -> tuple[int, Any]:
        tenant = self._budget_tenant(req, req.params.get("tenant_id"))
        scope, unit = _scope_unit(req)
        return 200, self.ledger.fund(scope, unit, body_object(req.json()), tenant)

    def _admin_budget_status(self, req: Request, status: str) -> tuple[int, Any]:
        self._require_admin(req)
        scope, unit = _scope_unit(req)
        if req.body:
            body_object(req.json())
        return 200, self.ledger.set_budget_status(scope, unit, status)

    def _admin_patch_budget(self, req: Request) -> tuple[int, Any]:
        self._require_admin(req)
        scope, unit = _scope_unit(req)
        return 200, self.ledger.update_budget(scope, unit, body_object(req.json()))

    def _admin_list_budgets(self, req: Request) -> tuple[int, Any]:
        tenant = self._budget_tenant(req, req.params.get("tenant_id"))
        if tenant is None:
            raise invalid("tenant_id query parameter is required when using admin key authentication")
        return 200, budget_page(self.ledger, tenant, subject_filters(req.params), req.params, "ledgers", ledger_view)

    def _policy_caller(self, req: Request, permission: str) -> str | None:
        """Dual auth for policies: the tenant of an API key holding `permission` (403 otherwise), None for admin."""
        secret = req.headers.get("x-cycles-api-key")
        if not secret:
            self._require_admin(req)
            return None
        tenant = self._authed(req)
        if not _granted(self.ledger.api_key_permissions(secret), permission):
            raise CyclesProtocolError(403, "INSUFFICIENT_PERMISSIONS", f"API key lacks the {permission} permission")
        return tenant

    def _admin_create_policy(self, req: Request) -> tuple[int, Any]:
        tenant = self._policy_caller(req, "policies:write")
        return 201, self.ledger.create_policy(body_object(req.json()), tenant)

    def _admin_list_policies(self, req: Request) -> tuple[int, Any]:
        tenant = self._policy_caller(req, "policies:read")
        params = req.params
        if tenant is None:  # admin: the tenant_id filter is required (a tenant key's own tenant always wins)
            tenant = params.get("tenant_id")
            if not tenant:
                raise invalid("tenant_id query parameter is required when using admin key authentication")
        limit = int_param(params, "limit", 50, 1, 200)
        return 200, self.ledger.list_policies(
            tenant,
            status=params.get("status") or None,
            scope_pattern=params.get("scope_pattern") or None,
            limit=limit,
            cursor=params.get("cursor") or None,
        )

    def _admin_get_policy(self, req: Request) -> tuple[int, Any]:
        tenant = self._policy_caller(req, "policies:read")
        return 200, self.ledger.get_policy(_path_policy(req), tenant)

    def _admin_patch_policy(self, req: Request) -> tuple[int, Any]:
        tenant = self._policy_caller(req, "policies:write")
        return 200, self.ledger.update_policy(_path_policy(req), body_object(req.json()), tenant)
