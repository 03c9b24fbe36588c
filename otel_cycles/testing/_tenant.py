"""`CyclesTenant`: a tenant on a test authority, with an API key, a bound client and ledger read helpers."""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runcycles import CyclesClient, CyclesConfig

from otel_cycles.testing._authority import AuthorityUnderTest

__all__ = ["DEFAULT_TENANT_BUDGET", "CyclesTenant", "make_tenant"]

DEFAULT_TENANT_BUDGET = 100_000_000
"""USD_MICROCENTS given to every test tenant at tenant level unless a `cycles_budget` marker says otherwise: $1."""

_ids = itertools.count(1)
_RUN = secrets.token_hex(3)  # tenant ids stay unique on an external server that outlives this run


@dataclass
class CyclesTenant:
    """A tenant on the test authority, with an API key, a client bound to it and helpers to read its ledger.

    Scopes are given below the tenant (`"workflow:w/agent:a"`); `""` is the tenant itself.
    """

    id: str
    """The tenant id (unique per test)."""
    api_key: str
    """The tenant's API key secret."""
    client: CyclesClient
    """A runcycles client for `authority.base_url` with `api_key` (journal disabled)."""
    authority: AuthorityUnderTest
    """The authority the tenant lives on."""

    def scope(self, scope: str = "") -> str:
        """The full scope path of `scope`, e.g. `tenant:t1/agent:bot`."""
        return f"tenant:{self.id}" + (f"/{scope}" if scope else "")

    def budget(self, amount: int, scope: str = "", **kwargs: Any) -> None:
        """Create a budget of `amount` USD_MICROCENTS at `scope` (kwargs: `overdraft_limit`, ...)."""
        self.authority.create_budget(self.scope(scope), amount, **kwargs)

    def create_policy(
        self, scope_pattern: str, caps: Mapping[str, Any] | None = None, priority: int = 0
    ) -> dict[str, Any]:
        """Create a policy for this tenant (see `LocalAuthority.create_policy`) and return its `Policy`.

        `scope_pattern` is taken as is: `agent:*`, `*/agent:bot`, or a full path such as `tenant.scope("agent:bot")`.
        """
        return self.authority.create_policy(self.id, scope_pattern, caps, priority=priority)

    def balance(self, scope: str = "") -> dict[str, Any]:
        """The wire `Balance` of `scope`; KeyError if it has no budget."""
        path = self.scope(scope)
        for item in self.authority.balances(self.id):
            if item["scope_path"] == path:
                return item
        raise KeyError(path)

    def spent(self, scope: str = "") -> int:
        """USD_MICROCENTS spent at `scope`."""
        return int(self.balance(scope)["spent"]["amount"])

    def remaining(self, scope: str = "") -> int:
        """USD_MICROCENTS remaining at `scope`."""
        return int(self.balance(scope)["remaining"]["amount"])

    def reservations(self, status: str | None = None) -> list[dict[str, Any]]:
        """The tenant's reservations, newest first (`status`: `ACTIVE`, `COMMITTED`, `RELEASED`, `EXPIRED`)."""
        return self.authority.reservations(self.id, status=status)


def make_tenant(authority: AuthorityUnderTest, budgets: Mapping[str, int]) -> CyclesTenant:
    """Create a fresh tenant (unique id), its API key and `budgets` ({scope below the tenant: amount})."""
    tenant_id = f"test-{os.getpid()}-{_RUN}-{next(_ids)}"
    authority.create_tenant(tenant_id)
    api_key = authority.create_api_key(tenant_id)
    client = CyclesClient(CyclesConfig(base_url=authority.base_url, api_key=api_key, journal_enabled=False))
    tenant = CyclesTenant(tenant_id, api_key, client, authority)
    for scope, amount in sorted(budgets.items(), key=lambda item: item[0].count("/") + bool(item[0])):
        tenant.budget(amount, scope)
    return tenant
