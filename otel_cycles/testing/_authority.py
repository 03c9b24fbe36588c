"""Which Cycles server the tests provision their tenants on: the embedded one, or an external one over HTTP.

By default a `LocalAuthority` runs in-process. With `CYCLES_TEST_BASE_URL` set, `RemoteAuthority` provisions tenants,
API keys and budgets on that server through its admin HTTP API (`CYCLES_TEST_ADMIN_URL`, default the base URL, with
`CYCLES_TEST_ADMIN_KEY`), and reads balances and reservations with each tenant's own API key, as an agent would. A
pre-provisioned tenant is not supported: every test needs a fresh tenant, so the admin key is required.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

from otel_cycles.authority import LocalAuthority
from otel_cycles.authority.admin_client import AdminClient, scope_tenant

__all__ = [
    "CYCLES_TEST_ADMIN_KEY",
    "CYCLES_TEST_ADMIN_URL",
    "CYCLES_TEST_BASE_URL",
    "RemoteAuthority",
    "AuthorityUnderTest",
    "open_test_authority",
]

CYCLES_TEST_BASE_URL = "CYCLES_TEST_BASE_URL"
"""Runtime URL of an external Cycles server to run the tests against; unset = the embedded authority."""
CYCLES_TEST_ADMIN_URL = "CYCLES_TEST_ADMIN_URL"
"""Admin-plane URL of that server (the reference deployment serves it on its own port). Default: the base URL."""
CYCLES_TEST_ADMIN_KEY = "CYCLES_TEST_ADMIN_KEY"
"""Admin key (`X-Admin-API-Key`) of that server; required with `CYCLES_TEST_BASE_URL`."""


class AuthorityUnderTest(Protocol):
    """What the test fixtures need from a Cycles server: `LocalAuthority` and `RemoteAuthority` both provide it."""

    base_url: str

    def create_tenant(self, tenant_id: str, name: str | None = None) -> dict[str, Any]: ...

    def create_api_key(self, tenant_id: str, name: str = "default") -> str: ...

    def create_budget(
        self,
        scope: str,
        allocated: int,
        unit: str = "USD_MICROCENTS",
        overdraft_limit: int = 0,
        commit_overage_policy: str | None = None,
    ) -> dict[str, Any]: ...

    def fund(self, scope: str, operation: str, amount: int, unit: str = "USD_MICROCENTS") -> dict[str, Any]: ...

    def create_policy(
        self, tenant_id: str, scope_pattern: str, caps: Mapping[str, Any] | None = None, *, priority: int = 0
    ) -> dict[str, Any]: ...

    def balances(self, tenant_id: str) -> list[dict[str, Any]]: ...

    def reservations(self, tenant_id: str, status: str | None = None) -> list[dict[str, Any]]: ...

    def check_invariants(self) -> list[str]: ...


class RemoteAuthority:
    """An external Cycles server driven over HTTP only: admin API for provisioning, tenant keys for reads.

    Args:
        base_url: The runtime plane (`runcycles` clients are pointed here).
        admin_url: The admin plane.
        admin_key: The admin secret.
    """

    def __init__(self, base_url: str, admin_url: str, admin_key: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._admin = AdminClient(admin_url, admin_key)
        self._runtime = AdminClient(self.base_url, None)
        self._keys: dict[str, str] = {}  # tenant -> the API key created for it, used for its reads
        self._unchecked: set[str] = set()  # tenants touched since the last check_invariants

    def stop(self) -> None:
        """Close the HTTP clients (the server itself is not ours to stop)."""
        self._admin.close()
        self._runtime.close()

    def create_tenant(self, tenant_id: str, name: str | None = None) -> dict[str, Any]:
        """Create tenant `tenant_id` (idempotent) and return its `Tenant` record."""
        return self._admin.create_tenant(tenant_id, name)[0]

    def create_api_key(self, tenant_id: str, name: str = "default") -> str:
        """Create an API key with the server's default (runtime) permissions and return its secret."""
        secret: str = self._admin.create_api_key(tenant_id, name)["key_secret"]
        self._keys.setdefault(tenant_id, secret)
        return secret

    def create_budget(
        self,
        scope: str,
        allocated: int,
        unit: str = "USD_MICROCENTS",
        overdraft_limit: int = 0,
        commit_overage_policy: str | None = None,
    ) -> dict[str, Any]:
        """Create a budget at `scope` over the admin API and return its `BudgetLedger`."""
        body = self._admin.create_budget(
            scope, allocated, unit=unit, overdraft_limit=overdraft_limit, commit_overage_policy=commit_overage_policy
        )
        self._unchecked.add(scope_tenant(scope))
        return body

    def fund(self, scope: str, operation: str, amount: int, unit: str = "USD_MICROCENTS") -> dict[str, Any]:
        """Apply a funding operation over the admin API."""
        return self._admin.fund(scope, operation, amount, unit)

    def create_policy(
        self, tenant_id: str, scope_pattern: str, caps: Mapping[str, Any] | None = None, *, priority: int = 0
    ) -> dict[str, Any]:
        """Create a policy over the admin API (`POST /v1/admin/policies`) and return its `Policy`."""
        body: dict[str, Any] = {
            "tenant_id": tenant_id,
            "scope_pattern": scope_pattern,
            "priority": priority,
            "name": f"{scope_pattern} @{priority}",
        }
        if caps is not None:
            body["caps"] = dict(caps)
        created: dict[str, Any] = self._admin.request("POST", "/v1/admin/policies", body=body)[1]
        return created

    def _key(self, tenant_id: str) -> str:
        try:
            return self._keys[tenant_id]
        except KeyError:
            raise KeyError(f"no API key was created for tenant {tenant_id} through this RemoteAuthority") from None

    def balances(self, tenant_id: str) -> list[dict[str, Any]]:
        """Every `Balance` of `tenant_id`, read with its API key (`GET /v1/balances`)."""
        return self._runtime.balances(tenant_id, self._key(tenant_id))

    def reservations(self, tenant_id: str, status: str | None = None) -> list[dict[str, Any]]:
        """`tenant_id`'s reservations, newest first, read with its API key (`GET /v1/reservations`)."""
        return self._runtime.reservations(tenant_id, status, api_key=self._key(tenant_id))

    def check_invariants(self) -> list[str]:
        """Check `allocated = remaining + spent + reserved + debt` on every budget of the tenants touched since the
        last call (what the server exposes; its internal holds are not visible over HTTP)."""
        problems: list[str] = []
        for tenant in sorted(self._unchecked):
            for b in self.balances(tenant):
                amounts = {
                    k: int(b[k]["amount"]) if b.get(k) else 0
                    for k in ("allocated", "remaining", "spent", "reserved", "debt")
                }
                held = amounts["remaining"] + amounts["spent"] + amounts["reserved"] + amounts["debt"]
                if amounts["allocated"] != held:
                    problems.append(f"{b['scope_path']}: allocated != remaining + spent + reserved + debt: {amounts}")
        self._unchecked.clear()
        return problems


@contextmanager
def open_test_authority() -> Iterator[AuthorityUnderTest]:
    """The server for a test session: `RemoteAuthority` when `CYCLES_TEST_BASE_URL` is set, else a `LocalAuthority`."""
    base_url = os.environ.get(CYCLES_TEST_BASE_URL, "").strip()
    if not base_url:
        with LocalAuthority() as local:
            yield local
        return
    admin_key = os.environ.get(CYCLES_TEST_ADMIN_KEY, "").strip()
    if not admin_key:
        raise RuntimeError(f"{CYCLES_TEST_BASE_URL} is set but {CYCLES_TEST_ADMIN_KEY} is not: tests create tenants")
    remote = RemoteAuthority(base_url, os.environ.get(CYCLES_TEST_ADMIN_URL, "").strip() or base_url, admin_key)
    try:
        yield remote
    finally:
        remote.stop()
