"""The admin plane (reference shapes) against a running server; the CLI is tested in `test_authority_cli.py`."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from otel_cycles.authority import LocalAuthority

from .conftest import UNIT, reserve_body


def test_quickstart_flow_over_admin_plane(authority: LocalAuthority, admin: httpx.Client) -> None:
    r = admin.post("/v1/admin/tenants", json={"tenant_id": "acme-corp", "name": "Acme Corp"})
    assert r.status_code == 201 and r.json()["tenant_id"] == "acme-corp" and r.json()["status"] == "ACTIVE"
    assert admin.post("/v1/admin/tenants", json={"tenant_id": "acme-corp", "name": "Acme Corp"}).status_code == 200
    r = admin.post("/v1/admin/api-keys", json={"tenant_id": "acme-corp", "name": "quickstart"})
    assert r.status_code == 201
    secret = r.json()["key_secret"]
    assert secret.startswith("cyc_live_") and r.json()["key_prefix"] == secret[:14]
    body = {"scope": "tenant:acme-corp", "unit": UNIT, "allocated": {"amount": 100_000_000, "unit": UNIT},
            "tenant_id": "acme-corp"}  # fmt: skip
    r = admin.post("/v1/admin/budgets", json=body)
    assert r.status_code == 201 and r.json()["allocated"]["amount"] == 100_000_000
    assert admin.post("/v1/admin/budgets", json=body).status_code == 409
    res = httpx.post(f"{authority.base_url}/v1/reservations", headers={"X-Cycles-API-Key": secret},
                     json=reserve_body(subject={"tenant": "acme-corp"}))  # fmt: skip
    assert res.status_code == 200
    ledgers = admin.get("/v1/admin/budgets", params={"tenant_id": "acme-corp"}).json()["ledgers"]
    assert ledgers[0]["reserved"]["amount"] == 1000
    listed = admin.get("/v1/reservations", params={"tenant": "acme-corp"})
    assert listed.status_code == 200 and len(listed.json()["reservations"]) == 1
    assert admin.get("/v1/reservations").status_code == 400  # admin needs the tenant filter
    rid = res.json()["reservation_id"]
    assert admin.get(f"/v1/reservations/{rid}").status_code == 200
    assert admin.post(f"/v1/reservations/{rid}/release", json={"idempotency_key": "admin-1"}).status_code == 200
    assert admin.get("/v1/admin/tenants/acme-corp").json()["name"] == "Acme Corp"
    # A default (runtime-only) key may not create budgets; one granted budgets:write may, in its own tenant only.
    own = {"scope": "tenant:acme-corp/workspace:w", "unit": UNIT, "allocated": {"amount": 5, "unit": UNIT}}
    refused = httpx.post(f"{authority.base_url}/v1/admin/budgets", json=own, headers={"X-Cycles-API-Key": secret})
    assert refused.status_code == 403 and refused.json()["error"] == "INSUFFICIENT_PERMISSIONS"
    grant = {"tenant_id": "acme-corp", "name": "ops", "permissions": ["budgets:write"]}
    r = admin.post("/v1/admin/api-keys", json=grant)
    assert r.status_code == 201 and r.json()["permissions"] == ["budgets:write"]
    writer = httpx.Client(base_url=authority.base_url, headers={"X-Cycles-API-Key": r.json()["key_secret"]})
    assert writer.post("/v1/admin/budgets", json=own).status_code == 201
    other = writer.post("/v1/admin/budgets", json={**own, "scope": "tenant:acme/workspace:w"})
    assert other.status_code == 403 and other.json()["error"] == "FORBIDDEN"
    assert authority.check_invariants() == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/admin/tenants", {"tenant_id": "x", "name": "n"}),
        ("POST", "/v1/admin/tenants", {"tenant_id": "UPPER", "name": "n"}),
        ("POST", "/v1/admin/tenants", {"tenant_id": "fine-id"}),
        ("POST", "/v1/admin/api-keys", {"name": "n"}),
        ("POST", "/v1/admin/budgets", {"scope": "workspace:x", "unit": UNIT, "allocated": {"unit": UNIT, "amount": 1}}),
        ("POST", "/v1/admin/budgets", {"scope": "tenant:acme/agent:a/workspace:b", "unit": UNIT,
                                       "allocated": {"unit": UNIT, "amount": 1}}),
        ("POST", "/v1/admin/budgets", {"scope": "tenant:acme", "unit": UNIT,
                                       "allocated": {"unit": UNIT, "amount": -1}}),
        ("POST", "/v1/admin/budgets", {"scope": "tenant:acme", "unit": "EUR",
                                       "allocated": {"unit": "EUR", "amount": 1}}),
        ("POST", "/v1/admin/budgets/fund?scope=tenant:acme", {"operation": "CREDIT"}),
        ("PATCH", "/v1/admin/tenants/acme", {"status": "ASLEEP"}),
    ],
)  # fmt: skip
def test_admin_bad_input(admin: httpx.Client, method: str, path: str, body: Any) -> None:
    resp = admin.request(method, path, json=body)
    assert resp.status_code == 400, resp.text
    assert set(resp.json()) == {"error", "message", "request_id"}


def test_admin_requires_admin_key(authority: LocalAuthority, api_key: str) -> None:
    for headers in ({}, {"X-Admin-API-Key": "wrong"}, {"X-Cycles-API-Key": "cyc_live_unknown"}):
        r = httpx.post(
            f"{authority.base_url}/v1/admin/tenants", json={"tenant_id": "abc", "name": "n"}, headers=headers
        )
        assert r.status_code == 401 and r.json()["error"] == "UNAUTHORIZED"
    r = httpx.post(f"{authority.base_url}/v1/admin/tenants", json={"tenant_id": "abc", "name": "n"},
                   headers={"X-Cycles-API-Key": api_key})  # fmt: skip
    assert r.status_code == 403 and r.json()["error"] == "INSUFFICIENT_PERMISSIONS"  # authenticated, not allowed
    assert httpx.get(f"{authority.base_url}/v1/admin/tenants/nope",
                     headers={"X-Admin-API-Key": authority.admin_key}).status_code == 404  # fmt: skip
