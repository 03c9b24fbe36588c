# mypy: disable-error-code="index"
"""API-key expiry, listing and revocation, tenants' default overage policy, and the liveness probe, over real HTTP."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from runcycles import CyclesClient

from otel_cycles.authority import LocalAuthority

from .conftest import FakeClock, commit_body, config, reserve_body

DAY_MS = 86_400_000


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def test_keys_expire_after_90_days_by_default(authority: LocalAuthority, admin: httpx.Client, clock: FakeClock) -> None:
    created = admin.post("/v1/admin/api-keys", json={"tenant_id": "acme", "name": "k"}).json()
    assert _ms(created["expires_at"]) - _ms(created["created_at"]) == 90 * DAY_MS
    authority.create_budget("tenant:acme", 1_000)
    with CyclesClient(config(authority, created["key_secret"])) as client:
        clock.advance(90 * DAY_MS - 1)
        assert client.get_balances(tenant="acme").status == 200
        clock.advance(1)
        expired = client.get_balances(tenant="acme")
        assert expired.status == 401 and expired.body["error"] == "UNAUTHORIZED"


def test_expires_at_is_honoured(authority: LocalAuthority, admin: httpx.Client, clock: FakeClock) -> None:
    when = datetime.fromtimestamp(clock.now / 1000, tz=timezone.utc) + timedelta(hours=1)
    body = {"tenant_id": "acme", "name": "short", "expires_at": when.isoformat()}
    created = admin.post("/v1/admin/api-keys", json=body).json()
    assert created["expires_at"].endswith("Z") and _ms(created["expires_at"]) == int(when.timestamp() * 1000)
    http = httpx.Client(base_url=authority.base_url, headers={"X-Cycles-API-Key": created["key_secret"]})
    authority.create_budget("tenant:acme", 1)
    assert http.get("/v1/balances", params={"tenant": "acme"}).status_code == 200
    clock.advance(3_600_000)
    assert http.get("/v1/balances", params={"tenant": "acme"}).status_code == 401


def test_the_server_wide_default_lifetime_is_configurable(clock: FakeClock) -> None:
    with LocalAuthority(clock=clock, sweep_interval_s=3600, key_ttl_days=1) as short:
        short.create_tenant("acme")
        record = short.create_api_key_record("acme")
        assert _ms(record["expires_at"]) - _ms(record["created_at"]) == DAY_MS
    with LocalAuthority(clock=clock, sweep_interval_s=3600, key_ttl_days=None) as forever:
        forever.create_tenant("acme")
        secret = forever.create_api_key("acme")
        forever.create_budget("tenant:acme", 1)
        clock.advance(10 * 365 * DAY_MS)
        headers = {"X-Cycles-API-Key": secret}
        assert httpx.get(f"{forever.base_url}/v1/balances?tenant=acme", headers=headers).status_code == 200
    with pytest.raises(ValueError):
        LocalAuthority(key_ttl_days=0)


def test_list_api_keys(authority: LocalAuthority, admin: httpx.Client, clock: FakeClock) -> None:
    made = []
    for i in range(5):
        clock.advance(1)
        made.append(authority.create_api_key_record("acme", f"k{i}"))
    authority.create_api_key_record("other", "theirs")
    authority.revoke_api_key(made[0]["key_id"], "rotated")
    page = admin.get("/v1/admin/api-keys", params={"tenant_id": "acme", "limit": "2"}).json()
    assert [k["name"] for k in page["keys"]] == ["k4", "k3"] and page["has_more"] is True  # newest first
    rest = admin.get("/v1/admin/api-keys", params={"tenant_id": "acme", "cursor": page["next_cursor"]}).json()
    assert [k["name"] for k in rest["keys"]] == ["k2", "k1", "k0"] and rest["has_more"] is False
    key = rest["keys"][-1]
    assert key["status"] == "REVOKED" and key["revoked_reason"] == "rotated" and "revoked_at" in key
    assert set(key) == {"key_id", "tenant_id", "key_prefix", "name", "permissions", "status", "created_at",
                        "expires_at", "revoked_at", "revoked_reason"}  # fmt: skip
    assert made[4]["key_secret"] not in str(page) and all("key_secret" not in k for k in page["keys"])
    assert len(admin.get("/v1/admin/api-keys").json()["keys"]) == 6  # every tenant: 5 + 1
    revoked = admin.get("/v1/admin/api-keys", params={"tenant_id": "acme", "status": "REVOKED"}).json()["keys"]
    assert [k["name"] for k in revoked] == ["k0"]
    clock.advance(90 * DAY_MS)
    assert {k["status"] for k in authority.list_api_keys("acme")} == {"EXPIRED", "REVOKED"}
    assert admin.get("/v1/admin/api-keys", params={"status": "GONE"}).status_code == 400
    assert admin.get("/v1/admin/api-keys", params={"limit": "101"}).status_code == 400


@pytest.mark.parametrize(("policy", "shown"), [(None, "ALLOW_IF_AVAILABLE"), ("REJECT", "REJECT")])
def test_tenants_report_their_default_overage_policy(admin: httpx.Client, policy: str | None, shown: str) -> None:
    body: dict[str, Any] = {"tenant_id": "policy-t", "name": "P"}
    if policy:
        body["default_commit_overage_policy"] = policy
    assert admin.post("/v1/admin/tenants", json=body).json()["default_commit_overage_policy"] == shown
    assert admin.get("/v1/admin/tenants/policy-t").json()["default_commit_overage_policy"] == shown
    listed = {t["tenant_id"]: t for t in admin.get("/v1/admin/tenants").json()["tenants"]}
    assert listed["policy-t"]["default_commit_overage_policy"] == shown


def test_a_tenant_default_policy_applies_when_the_reservation_names_none(
    authority: LocalAuthority, admin: httpx.Client
) -> None:
    strict = {"tenant_id": "strict", "name": "S", "default_commit_overage_policy": "REJECT"}
    assert admin.post("/v1/admin/tenants", json=strict).status_code == 201
    authority.create_budget("tenant:strict", 1_000)
    with CyclesClient(config(authority, authority.create_api_key("strict"))) as client:
        rid = client.create_reservation(reserve_body(100, subject={"tenant": "strict"})).body["reservation_id"]
        refused = client.commit_reservation(rid, commit_body(101))
        assert refused.status == 409 and refused.body["error"] == "BUDGET_EXCEEDED"
        assert client.commit_reservation(rid, commit_body(100)).status == 200


def test_liveness_needs_no_key(authority: LocalAuthority) -> None:
    resp = httpx.get(f"{authority.base_url}/actuator/health/liveness")
    assert resp.status_code == 200 and resp.json() == {"status": "UP"}
    assert resp.headers["x-request-id"] and resp.headers["x-cycles-trace-id"]
    assert httpx.post(f"{authority.base_url}/actuator/health/liveness").status_code == 405
    assert httpx.get(f"{authority.base_url}/actuator/health/other").status_code == 404


def test_introspect_tells_a_key_its_tenant_and_permissions(authority: LocalAuthority, api_key: str) -> None:
    """`GET /v1/auth/introspect` (admin spec): what `otel-cycles doctor` can ask with only the agent's key."""
    resp = httpx.get(f"{authority.base_url}/v1/auth/introspect", headers={"X-Cycles-API-Key": api_key})
    body = resp.json()
    assert resp.status_code == 200 and body["auth_type"] == "tenant" and body["tenant_id"] == "acme"
    assert body["permissions"] == ["reservations:create", "reservations:commit", "reservations:release",
                                   "reservations:extend", "reservations:list", "balances:read"]  # fmt: skip
    caps = body["capabilities"]
    assert caps["view_reservations"] and caps["manage_reservations"]
    assert not any(caps[c] for c in ("view_budgets", "manage_budgets", "view_tenants", "manage_api_keys"))
    legacy = authority.create_api_key("acme", "legacy", permissions=["admin:write"])
    caps = httpx.get(f"{authority.base_url}/v1/auth/introspect", headers={"X-Cycles-API-Key": legacy}).json()
    assert caps["capabilities"]["manage_budgets"] and not caps["capabilities"]["manage_tenants"]  # normative
    admin = httpx.get(f"{authority.base_url}/v1/auth/introspect", headers={"X-Admin-API-Key": authority.admin_key})
    assert admin.json()["permissions"] == ["*"] and all(admin.json()["capabilities"].values())
    assert "tenant_id" not in admin.json()
    for headers in ({}, {"X-Cycles-API-Key": "cyc_live_nope"}, {"X-Admin-API-Key": "nope"}):
        assert httpx.get(f"{authority.base_url}/v1/auth/introspect", headers=headers).status_code == 401


def test_patch_tenant_updates_its_settings(authority: LocalAuthority, admin: httpx.Client) -> None:
    patch = {"name": "Acme Inc", "default_commit_overage_policy": "REJECT", "default_reservation_ttl_ms": 5_000,
             "metadata": {"team": "ml"}}  # fmt: skip
    updated = admin.patch("/v1/admin/tenants/acme", json=patch).json()
    assert updated["name"] == "Acme Inc" and updated["default_commit_overage_policy"] == "REJECT"
    assert updated["default_reservation_ttl_ms"] == 5_000 and updated["metadata"] == {"team": "ml"}
    assert updated["status"] == "ACTIVE" and admin.get("/v1/admin/tenants/acme").json() == updated
    authority.create_budget("tenant:acme", 1_000)
    with CyclesClient(config(authority, authority.create_api_key("acme"))) as client:
        created = client.create_reservation(reserve_body(10, subject={"tenant": "acme"})).body
        assert created["remaining_ttl_ms"] == 5_000  # the new default applies
        assert client.commit_reservation(created["reservation_id"], commit_body(11)).status == 409  # REJECT
    reset = admin.patch("/v1/admin/tenants/acme", json={"default_commit_overage_policy": None}).json()
    assert reset["default_commit_overage_policy"] == "ALLOW_IF_AVAILABLE" and reset["name"] == "Acme Inc"
    for bad in ({"tenant_id": "x"}, {"name": ""}, {"max_reservation_extensions": -1}, {"status": "ASLEEP"}):
        assert admin.patch("/v1/admin/tenants/acme", json=bad).status_code == 400, bad
    assert admin.patch("/v1/admin/tenants/nope", json={"name": "n"}).status_code == 404
