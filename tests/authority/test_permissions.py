# mypy: disable-error-code="index,union-attr"
"""API-key permissions are enforced on every runtime and admin route, over real HTTP with the runcycles client.

The oracle for "nothing happened" is the ledger read back after each refused call: balances, reservations, tenants
and keys are exactly as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from runcycles import CyclesClient

from otel_cycles.authority import DEFAULT_KEY_PERMISSIONS, LocalAuthority

from .conftest import UNIT, commit_body, config, key, reserve_body

SCOPE = "tenant:acme"
CREDIT = {"operation": "CREDIT", "amount": {"unit": UNIT, "amount": 10**12}}
BUDGET = {"scope": "tenant:acme/workspace:mint", "unit": UNIT, "allocated": {"unit": UNIT, "amount": 10**12}}
BUDGET_PARAMS = {"scope": SCOPE, "unit": UNIT, "tenant_id": "acme"}


def admin_routes(key_id: str, policy_id: str) -> list[tuple[str, str, dict[str, str] | None, Any]]:
    """Every admin-plane operation: (method, path, query, body)."""
    return [
        ("POST", "/v1/admin/policies", None, {"name": "loose", "scope_pattern": "*", "caps": {"max_tokens": 10**6}}),
        ("GET", "/v1/admin/policies", {"tenant_id": "acme"}, None),
        ("GET", f"/v1/admin/policies/{policy_id}", None, None),
        ("PATCH", f"/v1/admin/policies/{policy_id}", None, {"status": "DISABLED"}),
        ("POST", "/v1/admin/tenants", None, {"tenant_id": "evil-corp", "name": "evil"}),
        ("GET", "/v1/admin/tenants", None, None),
        ("GET", "/v1/admin/tenants/acme", None, None),
        ("PATCH", "/v1/admin/tenants/acme", None, {"status": "SUSPENDED"}),
        ("POST", "/v1/admin/api-keys", None, {"tenant_id": "acme", "name": "mine", "permissions": ["budgets:write"]}),
        ("GET", "/v1/admin/api-keys", {"tenant_id": "acme"}, None),
        ("DELETE", f"/v1/admin/api-keys/{key_id}", None, None),
        ("POST", "/v1/admin/budgets", None, BUDGET),
        ("GET", "/v1/admin/budgets", {"tenant_id": "acme"}, None),
        ("PATCH", "/v1/admin/budgets", BUDGET_PARAMS, {"overdraft_limit": {"unit": UNIT, "amount": 10**12}}),
        ("POST", "/v1/admin/budgets/fund", BUDGET_PARAMS, CREDIT),
        ("POST", "/v1/admin/budgets/freeze", BUDGET_PARAMS, None),
        ("POST", "/v1/admin/budgets/unfreeze", BUDGET_PARAMS, None),
        ("POST", "/v1/admin/budgets/close", BUDGET_PARAMS, None),
    ]


def snapshot(authority: LocalAuthority) -> dict[str, Any]:
    return {
        "balances": authority.balances("acme"),
        "settings": [
            (b.scope, b.status, b.overdraft_limit) for b in authority.ledger.list_budgets("acme", {}, 200, None)[0]
        ],
        "reservations": authority.reservations("acme"),
        "tenants": authority.ledger.list_tenants(),
        "keys": authority.list_api_keys(),
        "policies": authority.policies("acme"),
    }


@pytest.fixture
def funded(authority: LocalAuthority) -> None:
    authority.create_budget(SCOPE, 1_000_000)


def test_a_default_key_holds_the_runtime_permissions_only(authority: LocalAuthority) -> None:
    record = authority.create_api_key_record("acme")
    assert record["permissions"] == list(DEFAULT_KEY_PERMISSIONS)
    assert set(DEFAULT_KEY_PERMISSIONS) == {"reservations:create", "reservations:commit", "reservations:release",
                                            "reservations:extend", "reservations:list", "balances:read"}  # fmt: skip


@pytest.mark.usefixtures("funded")
def test_a_default_key_gets_403_on_every_admin_route(authority: LocalAuthority, api_key: str) -> None:
    victim = authority.create_api_key_record("acme", "victim")["key_id"]
    policy = authority.create_policy("acme", "agent:*", {"max_tokens": 100})["policy_id"]
    routes = admin_routes(victim, policy)
    with httpx.Client(base_url=authority.base_url, headers={"X-Admin-API-Key": authority.admin_key}) as admin:
        for path in {path for _, path, _, _ in routes}:  # the list covers every method each path answers
            allowed = admin.request("PUT", path).headers["allow"].split(", ")
            assert sorted(m for m, p, _, _ in routes if p == path) == sorted(allowed), path
    before = snapshot(authority)
    with httpx.Client(base_url=authority.base_url, headers={"X-Cycles-API-Key": api_key}) as http:
        for method, path, params, body in routes:
            resp = http.request(method, path, params=params, json=body)
            assert resp.status_code == 403, (method, path, resp.text)
            assert resp.json()["error"] == "INSUFFICIENT_PERMISSIONS", (method, path)
            assert resp.headers["x-cycles-tenant"] == "acme"
            assert snapshot(authority) == before, (method, path)  # read back after each refused call


@pytest.mark.usefixtures("funded")
def test_a_default_key_cannot_mint_budget_even_by_naming_another_tenant(
    authority: LocalAuthority, api_key: str
) -> None:
    before = snapshot(authority)
    with httpx.Client(base_url=authority.base_url, headers={"X-Cycles-API-Key": api_key}) as http:
        for params in (BUDGET_PARAMS, {"scope": SCOPE, "unit": UNIT}, {**BUDGET_PARAMS, "tenant_id": "other"}):
            for operation in ("CREDIT", "RESET", "REPAY_DEBT", "RESET_SPENT"):
                body = {**CREDIT, "operation": operation}
                resp = http.post("/v1/admin/budgets/fund", params=params, json=body)
                assert resp.status_code == 403 and resp.json()["error"] == "INSUFFICIENT_PERMISSIONS"
    assert snapshot(authority) == before


@pytest.mark.usefixtures("funded")
def test_granted_budget_permissions_work_in_the_own_tenant_only(authority: LocalAuthority) -> None:
    authority.create_budget("tenant:other", 5)
    writer = authority.create_api_key("acme", "ops", permissions=["budgets:write", "budgets:read"])
    with httpx.Client(base_url=authority.base_url, headers={"X-Cycles-API-Key": writer}) as http:
        assert http.post("/v1/admin/budgets", json=BUDGET).status_code == 201
        funded = http.post("/v1/admin/budgets/fund", params={"scope": SCOPE, "unit": UNIT}, json=CREDIT)
        assert funded.status_code == 200 and funded.json()["new_allocated"]["amount"] == 1_000_000 + 10**12
        foreign = http.post("/v1/admin/budgets/fund", params={"scope": "tenant:other", "unit": UNIT}, json=CREDIT)
        assert foreign.status_code == 403 and foreign.json()["error"] == "FORBIDDEN"
        assert [b["scope"] for b in http.get("/v1/admin/budgets").json()["ledgers"]] == [SCOPE, BUDGET["scope"]]
        # budgets:write is not a runtime permission, and never opens an admin-key route.
        assert http.post("/v1/reservations", json=reserve_body()).json()["error"] == "INSUFFICIENT_PERMISSIONS"
        assert http.post("/v1/admin/budgets/freeze", params=BUDGET_PARAMS).status_code == 403
    assert authority.balances("other")[0]["allocated"]["amount"] == 5


@pytest.mark.parametrize(
    ("held", "allowed", "refused"),
    [
        (["admin:write"], ["POST /v1/admin/budgets"], ["GET /v1/admin/budgets", "GET /v1/admin/tenants"]),
        (["admin:read"], ["GET /v1/admin/budgets", "GET /v1/balances"], ["POST /v1/admin/budgets"]),
        (["admin:budgets:write"], ["POST /v1/admin/budgets"], ["GET /v1/admin/budgets"]),
        (["budgets:read"], ["GET /v1/admin/budgets"], ["POST /v1/admin/budgets", "GET /v1/balances"]),
    ],
)
@pytest.mark.usefixtures("funded")
def test_admin_wildcards_follow_the_admin_spec(
    authority: LocalAuthority, held: list[str], allowed: list[str], refused: list[str]
) -> None:
    secret = authority.create_api_key("acme", "wild", permissions=held)
    params = {"tenant": "acme"}
    with httpx.Client(base_url=authority.base_url, headers={"X-Cycles-API-Key": secret}) as http:
        for route in allowed + refused:
            method, path = route.split(" ")
            body = {**BUDGET, "scope": f"tenant:acme/workspace:{key()[:20].lower()}"} if method == "POST" else None
            status = http.request(method, path, params=params, json=body).status_code
            assert (status != 403) if route in allowed else (status == 403), (route, status)


RUNTIME = ["reservations:create", "reservations:commit", "reservations:release", "reservations:extend",
           "reservations:list", "balances:read"]  # fmt: skip


@pytest.mark.parametrize("missing", RUNTIME)
@pytest.mark.usefixtures("funded")
def test_each_runtime_route_needs_its_permission(authority: LocalAuthority, api_key: str, missing: str) -> None:
    """A key lacking exactly one runtime permission is refused exactly where that permission is needed."""
    needs = {
        "reserve": "reservations:create", "decide": "reservations:create", "event": "reservations:commit",
        "commit": "reservations:commit", "release": "reservations:release", "extend": "reservations:extend",
        "list": "reservations:list", "get": "reservations:list", "balances": "balances:read",
    }  # fmt: skip
    with CyclesClient(config(authority, api_key)) as full:
        rid = full.create_reservation(reserve_body(100)).body["reservation_id"]
    secret = authority.create_api_key("acme", "partial", permissions=[p for p in RUNTIME if p != missing])
    subject = {"tenant": "acme"}
    action = {"kind": "tool.execution", "name": "t"}
    with CyclesClient(config(authority, secret)) as partial:
        calls = {
            "reserve": lambda: partial.create_reservation(reserve_body(1, dry_run=True)),
            "decide": lambda: partial.decide(
                {
                    "idempotency_key": key(),
                    "subject": subject,
                    "action": action,
                    "estimate": {"unit": UNIT, "amount": 1},
                }
            ),  # fmt: skip
            "event": lambda: partial.create_event(
                {"idempotency_key": key(), "subject": subject, "action": action, "actual": {"unit": UNIT, "amount": 0}}
            ),  # fmt: skip
            "extend": lambda: partial.extend_reservation(rid, {"idempotency_key": key(), "extend_by_ms": 1000}),
            "list": lambda: partial.list_reservations(tenant="acme"),
            "get": lambda: partial.get_reservation(rid),
            "balances": lambda: partial.get_balances(tenant="acme"),
        }
        # Last, the two that finalize the reservation: the one that must be refused first.
        finalize = {
            "commit": lambda: partial.commit_reservation(rid, commit_body(100)),
            "release": lambda: partial.release_reservation(rid, {"idempotency_key": key()}),
        }
        order = ["release", "commit"] if missing == "reservations:release" else ["commit", "release"]
        calls.update((name, finalize[name]) for name in order)
        for name, call in calls.items():
            before = (authority.balances("acme"), authority.reservations("acme", status="ACTIVE"))
            resp = call()
            if needs[name] == missing:
                assert resp.status == 403 and resp.body["error"] == "INSUFFICIENT_PERMISSIONS", name
                assert (authority.balances("acme"), authority.reservations("acme", status="ACTIVE")) == before
            else:
                assert resp.is_success, (name, resp.status, resp.body)
                if name in ("commit", "release"):
                    break  # the reservation is finalized: what follows would test finalization, not permissions


@pytest.mark.usefixtures("funded")
def test_the_admin_key_keeps_full_rights(admin: httpx.Client) -> None:
    assert admin.post("/v1/admin/budgets", json={**BUDGET, "tenant_id": "acme"}).status_code == 201
    assert admin.post("/v1/admin/budgets/fund", params=BUDGET_PARAMS, json=CREDIT).status_code == 200
    assert admin.get("/v1/admin/api-keys").status_code == 200
    assert admin.get("/v1/reservations", params={"tenant": "acme"}).status_code == 200


def test_unknown_permission_names_are_400(admin: httpx.Client) -> None:
    for permissions in (["budgets:mint"], ["*"], "budgets:write", [["budgets:write"]]):
        resp = admin.post("/v1/admin/api-keys", json={"tenant_id": "acme", "name": "k", "permissions": permissions})
        assert resp.status_code == 400 and resp.json()["error"] == "INVALID_REQUEST", permissions
    scoped = admin.post("/v1/admin/api-keys", json={"tenant_id": "acme", "name": "k", "scope_filter": ["agent:*"]})
    assert scoped.status_code == 400 and "scope_filter" in scoped.json()["message"]  # refused, never ignored


@pytest.fixture
def cached_key(authority: LocalAuthority) -> Iterator[tuple[dict[str, Any], httpx.Client]]:
    authority.create_budget(SCOPE, 1_000)
    record = authority.create_api_key_record("acme", "cached")
    with httpx.Client(base_url=authority.base_url, headers={"X-Cycles-API-Key": record["key_secret"]}) as http:
        assert http.get("/v1/balances", params={"tenant": "acme"}).status_code == 200  # now cached
        yield record, http


@pytest.mark.parametrize("via", ["http", "python"])
def test_revocation_takes_effect_at_once(
    authority: LocalAuthority, admin: httpx.Client, cached_key: tuple[dict[str, Any], httpx.Client], via: str
) -> None:
    record, http = cached_key
    if via == "http":
        revoked = admin.delete(f"/v1/admin/api-keys/{record['key_id']}", params={"reason": "leaked"})
        assert revoked.status_code == 200
        assert revoked.json()["status"] == "REVOKED" and revoked.json()["revoked_reason"] == "leaked"
    else:
        assert authority.revoke_api_key(record["key_id"])["status"] == "REVOKED"
    resp = http.get("/v1/balances", params={"tenant": "acme"})
    assert resp.status_code == 401 and resp.json()["error"] == "UNAUTHORIZED" and "revoked" in resp.json()["message"]
    again = admin.delete(f"/v1/admin/api-keys/{record['key_id']}")
    assert again.status_code == 409 and again.json()["error"] == "KEY_REVOKED"
    assert admin.delete("/v1/admin/api-keys/key_nope").status_code == 404


def test_expiry_takes_effect_on_a_cached_key(authority: LocalAuthority, clock: Any, cached_key: Any) -> None:
    record, http = cached_key
    clock.advance(90 * 86_400_000 - 1)
    assert http.get("/v1/balances", params={"tenant": "acme"}).status_code == 200
    clock.advance(1)
    resp = http.get("/v1/balances", params={"tenant": "acme"})
    assert resp.status_code == 401 and "expired" in resp.json()["message"]
    assert [k["status"] for k in authority.list_api_keys("acme") if k["key_id"] == record["key_id"]] == ["EXPIRED"]
