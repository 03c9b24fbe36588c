"""API-key permissions: the names (the admin spec's `Permission` enum), what a new key gets, and who satisfies what.

A tenant key may do exactly what its permissions name; the admin key (`X-Admin-API-Key`) may do everything. New keys
are runtime-only (`DEFAULT_KEY_PERMISSIONS`), stricter than the admin spec's listed default (which adds
`budgets:write` and `policies:write`) and like the reference server: an agent's key must never be able to fund its
own budget. Operators grant more explicitly (`permissions` on `POST /v1/admin/api-keys`).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from otel_cycles.authority._errors import invalid

__all__ = ["DEFAULT_KEY_PERMISSIONS", "PERMISSIONS", "capabilities", "grants", "parse_permissions"]

PERMISSIONS = (
    "reservations:create",
    "reservations:commit",
    "reservations:release",
    "reservations:extend",
    "reservations:list",
    "balances:read",
    "budgets:read",
    "budgets:write",
    "policies:read",
    "policies:write",
    "webhooks:read",
    "webhooks:write",
    "events:read",
    "admin:read",
    "admin:write",
    "admin:tenants:read",
    "admin:tenants:write",
    "admin:budgets:read",
    "admin:budgets:write",
    "admin:policies:read",
    "admin:policies:write",
    "admin:apikeys:read",
    "admin:apikeys:write",
    "admin:webhooks:read",
    "admin:webhooks:write",
    "admin:events:read",
    "admin:audit:read",
)
"""Every permission name the admin spec defines (a tuple: membership by equality, safe for any JSON value)."""

DEFAULT_KEY_PERMISSIONS = (
    "reservations:create",
    "reservations:commit",
    "reservations:release",
    "reservations:extend",
    "reservations:list",
    "balances:read",
)
"""What a key created without `permissions` holds: the runtime plane only."""


def grants(held: Collection[str], needed: str) -> bool:
    """Whether a key holding `held` may act where `needed` is required.

    The admin spec's wildcards apply: `admin:write` satisfies any `*:write`, `admin:read` any `*:read` (but not a
    write), and a granular `admin:<resource>:<action>` satisfies `<resource>:<action>`. They never open the routes
    that take only the admin key (tenants, API keys, budget status and settings).
    """
    if needed in held:
        return True
    action = needed.rpartition(":")[2]
    return f"admin:{needed}" in held or (action in ("read", "write") and f"admin:{action}" in held)


def parse_permissions(value: Any) -> list[str]:
    """Validate a request's `permissions` (absent or empty: `DEFAULT_KEY_PERMISSIONS`); 400 names an unknown one."""
    if value is None or value == []:
        return list(DEFAULT_KEY_PERMISSIONS)
    if not isinstance(value, list):
        raise invalid("permissions must be an array of permission names")
    out: list[str] = []
    for item in value:
        if item not in PERMISSIONS:
            raise invalid(f"unknown permission {str(item)[:64]!r}; expected one of {', '.join(PERMISSIONS)}")
        if item not in out:
            out.append(item)
    return out


_RESERVATION_WRITES = ("reservations:create", "reservations:commit", "reservations:release", "reservations:extend")
# The admin spec's normative derivation table (AuthIntrospectResponse.capabilities) for tenant keys.
_CAPABILITIES = {
    "view_budgets": ("budgets:read", "admin:read", "admin:budgets:read"),
    "view_policies": ("policies:read", "admin:read", "admin:policies:read"),
    "view_webhooks": ("webhooks:read", "admin:read", "admin:webhooks:read"),
    "view_events": ("events:read", "admin:read", "admin:events:read"),
    "view_reservations": ("reservations:list", *_RESERVATION_WRITES, "admin:read"),
    "manage_budgets": ("budgets:write", "admin:write", "admin:budgets:write"),
    "manage_policies": ("policies:write", "admin:write", "admin:policies:write"),
    "manage_webhooks": ("webhooks:write", "admin:write", "admin:webhooks:write"),
    "manage_reservations": (*_RESERVATION_WRITES, "admin:write"),
}
_ADMIN_ONLY_CAPABILITIES = ("view_overview", "view_audit", "view_tenants", "view_api_keys", "manage_tenants",
                            "manage_api_keys")  # fmt: skip


def capabilities(held: Collection[str] | None) -> dict[str, bool]:
    """The `AuthIntrospectResponse.capabilities` of a tenant key holding `held`, or of the admin key (None: all true).

    Admin-plane capabilities are false for every tenant key, whatever `admin:*` permissions it carries (normative).
    """
    if held is None:
        return dict.fromkeys((*_CAPABILITIES, *_ADMIN_ONLY_CAPABILITIES), True)
    out = {name: any(p in held for p in needed) for name, needed in _CAPABILITIES.items()}
    return out | dict.fromkeys(_ADMIN_ONLY_CAPABILITIES, False)
