# mypy: disable-error-code="index"
"""Hostile input on every route gets a spec-shaped 4xx, never a 500, and never changes the ledger.

Each case below reached a 500 (or produced a response that was not valid JSON) before it was fixed: a body nested
200,000 levels deep, `NaN`/`Infinity`/`1e400`, an unpaired UTF-16 surrogate, a JSON array where an enumeration value
belongs, an amount that overflows a 64-bit balance, a forged list cursor, an API-key expiry no date can render.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from runcycles.models import ErrorResponse

from otel_cycles.authority import PERMISSIONS, LocalAuthority

from .conftest import UNIT, reserve_body

SCOPE = "tenant:acme"
INT64_MAX = 2**63 - 1


@pytest.fixture
def env(authority: LocalAuthority) -> Iterator[tuple[httpx.Client, httpx.Client, str]]:
    """A tenant client holding every tenant permission, the admin client, and one ACTIVE reservation id."""
    authority.create_budget(SCOPE, 1_000_000)
    key = authority.create_api_key("acme", permissions=[p for p in PERMISSIONS if not p.startswith("admin")])
    with (
        httpx.Client(base_url=authority.base_url, headers={"X-Cycles-API-Key": key}) as tenant,
        httpx.Client(base_url=authority.base_url, headers={"X-Admin-API-Key": authority.admin_key}) as admin,
    ):
        rid = tenant.post("/v1/reservations", json=reserve_body(10, subject={"tenant": "acme"})).json()
        yield tenant, admin, rid["reservation_id"]
    assert authority.check_invariants() == []


def routes(rid: str) -> list[tuple[str, str]]:
    return [
        ("POST", "/v1/reservations"),
        ("GET", "/v1/reservations"),
        ("GET", f"/v1/reservations/{rid}"),
        ("POST", f"/v1/reservations/{rid}/commit"),
        ("POST", f"/v1/reservations/{rid}/release"),
        ("POST", f"/v1/reservations/{rid}/extend"),
        ("POST", "/v1/decide"),
        ("POST", "/v1/events"),
        ("GET", "/v1/balances"),
        ("POST", "/v1/admin/tenants"),
        ("GET", "/v1/admin/tenants"),
        ("GET", "/v1/admin/tenants/acme"),
        ("PATCH", "/v1/admin/tenants/acme"),
        ("POST", "/v1/admin/api-keys"),
        ("GET", "/v1/admin/api-keys"),
        ("DELETE", "/v1/admin/api-keys/key_unknown"),
        ("POST", "/v1/admin/budgets"),
        ("GET", "/v1/admin/budgets"),
        ("PATCH", "/v1/admin/budgets"),
        ("POST", "/v1/admin/budgets/fund"),
        ("POST", "/v1/admin/budgets/freeze"),
        ("POST", "/v1/admin/budgets/unfreeze"),
        ("POST", "/v1/admin/budgets/close"),
        ("POST", "/v1/admin/policies"),
        ("GET", "/v1/admin/policies"),
        ("GET", "/v1/admin/policies/pol_unknown"),
        ("PATCH", "/v1/admin/policies/pol_unknown"),
        ("GET", "/v1/auth/introspect"),
    ]


def assert_4xx(resp: httpx.Response) -> None:
    assert 400 <= resp.status_code < 500, (resp.request.method, resp.request.url, resp.status_code, resp.text[:300])
    ErrorResponse.model_validate(resp.json(), strict=True)


RAW_BODIES = [
    pytest.param(b"[" * 200_000, id="nested-200k"),
    pytest.param(b'{"a":' * 65 + b"1" + b"}" * 65, id="nested-65"),
    pytest.param(b'{"metadata": {"a": NaN}}', id="nan"),
    pytest.param(b'{"metadata": {"a": -Infinity}}', id="infinity"),
    pytest.param(b'{"metadata": {"a": 1e400}}', id="float-overflow"),
    pytest.param(b'{"metadata": {"a": ' + b"9" * 5000 + b"}}", id="5000-digits"),
    pytest.param(b'{"idempotency_key": "\\ud800"}', id="lone-surrogate"),
    pytest.param(b'{"metadata": {"\\udfff": 1}}', id="lone-surrogate-key"),
    pytest.param(b'{"a": "\xff\xfe"}', id="invalid-utf8"),
    pytest.param(b"\x00\x01", id="binary"),
]


@pytest.mark.parametrize("content", RAW_BODIES)
def test_malformed_bodies_on_every_route(env: Any, authority: LocalAuthority, content: bytes) -> None:
    tenant, admin, rid = env
    before = authority.balances("acme")
    params = {"scope": SCOPE, "unit": UNIT, "tenant_id": "acme", "tenant": "acme"}
    for method, path in routes(rid):
        for client in (tenant, admin):
            resp = client.request(method, path, content=content, params=params)
            if method != "GET" and "/api-keys/" not in path:
                assert_4xx(resp)  # every body-taking route reads and rejects it
            else:
                assert resp.status_code < 500, (method, path, resp.text[:300])
    assert authority.balances("acme") == before


def test_deeply_nested_json_is_400_invalid_request(env: Any) -> None:
    tenant, _, _ = env
    resp = tenant.post("/v1/reservations", content=b"[" * 200_000)
    assert resp.status_code == 400 and resp.json()["error"] == "INVALID_REQUEST"
    assert "nested deeper than" in resp.json()["message"]
    legal = reserve_body(metadata={"a": {"b": {"c": {"d": [[[[1]]]]}}}})  # ordinary nesting still works
    assert tenant.post("/v1/reservations", json=legal).status_code == 200


# Wrong JSON types where an enumeration (looked up in a set before the fix) or a string is expected.
HOSTILE_VALUES: list[Any] = [[1], {"a": 1}, None, 10**30, "\u0000é"]
FIELDS = ["idempotency_key", "subject", "action", "estimate", "actual", "overage_policy", "metadata", "tenant_id",
          "name", "status", "permissions", "expires_at", "scope", "unit", "allocated", "overdraft_limit",
          "commit_overage_policy", "operation", "amount", "spent", "extend_by_ms", "reason", "metrics", "ttl_ms",
          "dry_run", "default_commit_overage_policy", "parent_tenant_id", "scope_filter", "scope_pattern", "caps",
          "priority", "reservation_ttl_override", "effective_from"]  # fmt: skip
VALID = {
    "idempotency_key": "k1", "subject": {"tenant": "acme"}, "action": {"kind": "k", "name": "n"},
    "estimate": {"unit": UNIT, "amount": 1}, "actual": {"unit": UNIT, "amount": 1}, "tenant_id": "acme",
    "name": "n", "scope": SCOPE, "unit": UNIT, "allocated": {"unit": UNIT, "amount": 1}, "operation": "CREDIT",
    "amount": {"unit": UNIT, "amount": 1}, "status": "ACTIVE", "extend_by_ms": 1000,
}  # fmt: skip


@pytest.mark.parametrize("field", FIELDS)
def test_hostile_field_values_on_every_route(env: Any, authority: LocalAuthority, field: str) -> None:
    tenant, admin, rid = env
    params = {"scope": SCOPE, "unit": UNIT, "tenant_id": "acme", "tenant": "acme"}
    for value in HOSTILE_VALUES:
        before = authority.balances("acme")
        for method, path in routes(rid):
            if method == "GET" or path.startswith("/v1/admin/budgets") and path != "/v1/admin/budgets":
                continue  # no body / a body that would legitimately change the budget (status, funding)
            client = admin if path.startswith("/v1/admin") else tenant
            resp = client.request(method, path, json={**VALID, field: value}, params=params)
            assert resp.status_code < 500, (method, path, field, value, resp.text[:300])
        if field not in ("allocated", "scope", "unit", "tenant_id"):  # those may create a budget: fine
            assert [b for b in authority.balances("acme") if b["scope_path"] == SCOPE] == [
                b for b in before if b["scope_path"] == SCOPE
            ]


def test_enumeration_fields_given_arrays_are_400(env: Any, authority: LocalAuthority) -> None:
    tenant, admin, rid = env
    for body in (reserve_body(estimate={"unit": [], "amount": 1}), reserve_body(overage_policy=["REJECT"])):
        assert_4xx(tenant.post("/v1/reservations", json=body))
    fund = {"operation": ["CREDIT"], "amount": {"unit": UNIT, "amount": 1}}
    assert_4xx(admin.post("/v1/admin/budgets/fund", params={"scope": SCOPE, "unit": UNIT}, json=fund))
    assert_4xx(admin.patch("/v1/admin/tenants/acme", json={"status": {"ACTIVE": 1}}))


def test_an_overflowing_balance_is_400_and_changes_nothing(env: Any, authority: LocalAuthority) -> None:
    _, admin, _ = env
    before = authority.balances("acme")
    credit = {"operation": "CREDIT", "amount": {"unit": UNIT, "amount": INT64_MAX}}
    resp = admin.post("/v1/admin/budgets/fund", params={"scope": SCOPE, "unit": UNIT}, json=credit)
    assert resp.status_code == 400 and "overflow" in resp.json()["message"]
    assert authority.balances("acme") == before


def test_forged_list_cursors_are_400(env: Any) -> None:
    tenant, _, _ = env
    # The cursor binds a hash of the query's filters; forge a matching one whose sort value cannot be bound to SQL.
    binding = ["created_at_ms", "desc", "status=", "idempotency_key=", *[f"{k}=" for k in
               ("workspace", "app", "workflow", "agent", "toolset", "from", "to", "expires_from", "expires_to",
                "finalized_from", "finalized_to")]]  # fmt: skip
    filter_hash = hashlib.sha256("\x1f".join(binding).encode()).hexdigest()[:16]
    for value in ([1], {"a": 1}, 2**70, None, True):
        raw = json.dumps({"f": filter_hash, "v": value, "id": "x"}).encode()
        cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        resp = tenant.get("/v1/reservations", params={"cursor": cursor})
        assert resp.status_code == 400, (value, resp.text)
    assert_4xx(tenant.get("/v1/reservations", params={"cursor": "%%%"}))


@pytest.mark.parametrize(
    "params",
    [{"limit": "abc"}, {"limit": "9" * 5000}, {"limit": "-1"}, {"limit": "0"}, {"cursor": "W10"}, {"cursor": "e30"},
     {"cursor": "eyJ2IjpbMV19"}, {"status": "x"}, {"from": "0001-01-01T00:00:00+23:59"}, {"sort_by": "x"},
     {"reason": "r" * 600}, {"unit": "X"}, {"scope": "x"}, {"scope": "tenant:acme", "unit": "X"}],
)  # fmt: skip
def test_bad_query_parameters_on_every_route(env: Any, authority: LocalAuthority, params: dict[str, str]) -> None:
    tenant, admin, rid = env
    before = authority.balances("acme")
    for method, path in routes(rid):
        for client in (tenant, admin):
            resp = client.request(method, path, params={"tenant": "acme", "tenant_id": "acme", **params}, json=VALID)
            assert resp.status_code < 500, (method, path, params, resp.text[:300])
    assert authority.balances("acme") == before


@pytest.mark.parametrize("expires_at", ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "2000-01-01T00:00Z"])
def test_api_key_expiry_outside_the_representable_future_is_400(env: Any, expires_at: str) -> None:
    _, admin, _ = env
    resp = admin.post("/v1/admin/api-keys", json={"tenant_id": "acme", "name": "k", "expires_at": expires_at})
    assert resp.status_code == 400 and "expires_at" in resp.json()["message"]
    assert admin.get("/v1/admin/api-keys", params={"tenant_id": "acme"}).status_code == 200  # still listable
