"""HTTP handlers of the admin plane (`/v1/admin/…`): tenants, API keys, budgets and funding, policies.

Tenants, API keys and budget status or settings need the admin key. Creating, funding and listing budgets also
accept a tenant API key holding `budgets:write` / `budgets:read`, scoped to its own tenant (a new key holds neither:
see `_permissions`). Policy endpoints accept the admin key or a tenant key holding `policies:read` /
`policies:write`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from otel_cycles.authority import _validation as v
from otel_cycles.authority._errors import invalid
from otel_cycles.authority._http_auth import CallerAuth
from otel_cycles.authority._http_messages import Request, body_object, budget_page, int_param, subject_filters
from otel_cycles.authority._permissions import PERMISSIONS, capabilities
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
        return 200, self.ledger.update_tenant(_path_tenant(req), body_object(req.json()))

    def _admin_create_key(self, req: Request) -> tuple[int, Any]:
        self._require_admin(req)
        return 201, self.ledger.create_api_key(body_object(req.json()))

    def _admin_list_keys(self, req: Request) -> tuple[int, Any]:
        self._require_admin(req)
        params = req.params
        limit = int_param(params, "limit", 50, 1, 100)
        tenant, status = params.get("tenant_id") or None, params.get("status") or None
        return 200, self.ledger.list_api_keys(tenant, status, limit, params.get("cursor") or None)

    def _admin_revoke_key(self, req: Request) -> tuple[int, Any]:
        self._require_admin(req)
        return 200, self.ledger.revoke_api_key(unquote(req.path.split("/")[4]), req.params.get("reason") or None)

    def _introspect(self, req: Request) -> tuple[int, Any]:
        """`GET /v1/auth/introspect`: who the caller is and what it may do (either key; no permission needed)."""
        secret = req.headers.get("x-cycles-api-key")
        if not secret:
            self._require_admin(req)
            return 200, {"authenticated": True, "auth_type": "admin", "permissions": ["*"],
                         "capabilities": capabilities(None)}  # fmt: skip
        record = self._key(secret)
        req.tenant = record.tenant_id
        permissions = [p for p in PERMISSIONS if p in record.permissions]
        return 200, {"authenticated": True, "auth_type": "tenant", "permissions": permissions,
                     "capabilities": capabilities(record.permissions), "tenant_id": record.tenant_id}  # fmt: skip

    def _admin_create_budget(self, req: Request) -> tuple[int, Any]:
        tenant = self._require_permission(req, "budgets:write")
        return 201, self.ledger.create_budget(body_object(req.json()), tenant)

    def _admin_fund(self, req: Request) -> tuple[int, Any]:
        # The admin key may name the tenant (`tenant_id`); the scope must then belong to it.
        tenant = self._require_permission(req, "budgets:write") or req.params.get("tenant_id") or None
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
        tenant = self._require_permission(req, "budgets:read") or req.params.get("tenant_id")
        if not tenant:
            raise invalid("tenant_id query parameter is required when using admin key authentication")
        return 200, budget_page(self.ledger, tenant, subject_filters(req.params), req.params, "ledgers", ledger_view)

    def _admin_create_policy(self, req: Request) -> tuple[int, Any]:
        tenant = self._require_permission(req, "policies:write")
        return 201, self.ledger.create_policy(body_object(req.json()), tenant)

    def _admin_list_policies(self, req: Request) -> tuple[int, Any]:
        tenant = self._require_permission(req, "policies:read")
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
        tenant = self._require_permission(req, "policies:read")
        return 200, self.ledger.get_policy(_path_policy(req), tenant)

    def _admin_patch_policy(self, req: Request) -> tuple[int, Any]:
        tenant = self._require_permission(req, "policies:write")
        return 200, self.ledger.update_policy(_path_policy(req), body_object(req.json()), tenant)
