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

__all__ = ["DEFAULT_KEY_PERMISSIONS", "PERMISSIONS", "grants", "parse_permissions"]

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
