# mypy: disable-error-code="index,arg-type,operator,dict-item,union-attr"
"""Overage policies, debt and over-limit blocking, funding operations, frozen/closed budgets and closed tenants."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from runcycles import CyclesClient

from otel_cycles.authority import LocalAuthority

from .conftest import UNIT, amounts, balance_of, commit_body, key, reserve_body

SCOPE = "tenant:acme/workspace:prod"


@pytest.fixture(autouse=True)
def invariant_holds(authority: LocalAuthority):
    yield
    assert authority.check_invariants() == []


def _reserve(client: CyclesClient, amount: int, policy: str) -> str:
    resp = client.create_reservation(reserve_body(amount, overage_policy=policy))
    assert resp.status == 200, resp.body
    return str(resp.body["reservation_id"])


@pytest.mark.parametrize("actual", [801, 1_000, 10**12])  # within what the budget has left, exactly it, far over
def test_reject_policy_refuses_any_commit_above_the_estimate(
    client: CyclesClient, authority: LocalAuthority, actual: int
) -> None:
    authority.create_budget(SCOPE, 1_000)
    rid = _reserve(client, 800, "REJECT")
    held = balance_of(authority, SCOPE)
    resp = client.commit_reservation(rid, commit_body(actual))
    assert resp.status == 409 and resp.body["error"] == "BUDGET_EXCEEDED"
    assert resp.body["message"] == "Actual exceeds estimate and policy is REJECT"  # the reference server's words
    assert balance_of(authority, SCOPE) == held  # ledger unchanged
    assert client.get_reservation(rid).body["status"] == "ACTIVE"  # still held: commit within it, or release
    ok = client.commit_reservation(rid, commit_body(800))
    assert ok.status == 200 and ok.body["charged"]["amount"] == 800
    assert amounts(balance_of(authority, SCOPE)) == {"remaining": 200, "reserved": 0, "spent": 800,
                                                      "allocated": 1_000, "debt": 0}  # fmt: skip


def test_reject_policy_commit_below_the_estimate(client: CyclesClient, authority: LocalAuthority) -> None:
    authority.create_budget(SCOPE, 1_000)
    rid = _reserve(client, 800, "REJECT")
    ok = client.commit_reservation(rid, commit_body(300))
    assert ok.status == 200 and ok.body["charged"]["amount"] == 300 and ok.body["released"]["amount"] == 500


def test_reject_policy_on_events_refuses_only_a_shortfall(client: CyclesClient, authority: LocalAuthority) -> None:
    """Events have no estimate: the spec's REJECT rule for them is `actual > remaining` on any derived scope."""
    authority.create_budget(SCOPE, 1_000)
    event = {"subject": {"tenant": "acme", "workspace": "prod"}, "action": {"kind": "tool.execution", "name": "t"},
             "overage_policy": "REJECT"}  # fmt: skip
    short = client.create_event({**event, "idempotency_key": key(), "actual": {"unit": UNIT, "amount": 1_001}})
    assert short.status == 409 and short.body["error"] == "BUDGET_EXCEEDED"
    assert amounts(balance_of(authority, SCOPE))["spent"] == 0
    ok = client.create_event({**event, "idempotency_key": key(), "actual": {"unit": UNIT, "amount": 1_000}})
    assert ok.status == 201 and "charged" not in ok.body
    assert amounts(balance_of(authority, SCOPE)) == {"remaining": 0, "reserved": 0, "spent": 1_000,
                                                      "allocated": 1_000, "debt": 0}  # fmt: skip


def test_allow_if_available_caps_and_marks_over_limit(client: CyclesClient, authority: LocalAuthority) -> None:
    authority.create_budget(SCOPE, 1_000)
    rid = _reserve(client, 800, "ALLOW_IF_AVAILABLE")
    resp = client.commit_reservation(rid, commit_body(1_500))
    assert resp.status == 200 and resp.body["charged"]["amount"] == 1_000  # 800 + capped 200
    bal = balance_of(authority, SCOPE)
    assert amounts(bal)["remaining"] == 0 and amounts(bal)["debt"] == 0 and bal["is_over_limit"] is True
    blocked = client.create_reservation(reserve_body(0))
    assert blocked.status == 409 and blocked.body["error"] == "OVERDRAFT_LIMIT_EXCEEDED"
    dry = client.create_reservation(reserve_body(0, dry_run=True))
    assert dry.status == 200 and dry.body["reason_code"] == "OVERDRAFT_LIMIT_EXCEEDED"
    authority.fund(SCOPE, "CREDIT", 500)  # funding recomputes is_over_limit = debt > limit
    assert client.create_reservation(reserve_body(100)).status == 200


def test_default_policy_is_allow_if_available(client: CyclesClient, authority: LocalAuthority) -> None:
    authority.create_budget(SCOPE, 100)
    body = reserve_body(50)
    rid = client.create_reservation(body).body["reservation_id"]
    assert client.commit_reservation(rid, commit_body(400)).body["charged"]["amount"] == 100


def test_overdraft_creates_debt_within_limit(client: CyclesClient, authority: LocalAuthority) -> None:
    authority.create_budget(SCOPE, 1_000, overdraft_limit=500)
    rid = _reserve(client, 900, "ALLOW_WITH_OVERDRAFT")
    resp = client.commit_reservation(rid, commit_body(1_300))  # delta 400, remaining 100 → debt 300
    assert resp.status == 200 and resp.body["charged"]["amount"] == 1_300
    bal = balance_of(authority, SCOPE)
    assert amounts(bal) == {"remaining": -300, "reserved": 0, "spent": 1_000, "allocated": 1_000, "debt": 300}
    assert bal["overdraft_limit"]["amount"] == 500 and "is_over_limit" not in bal
    # Debt with a non-zero overdraft limit does not block (reference Lua); remaining does.
    assert client.create_reservation(reserve_body(1)).body["error"] == "BUDGET_EXCEEDED"
    authority.fund(SCOPE, "CREDIT", 400)  # CREDIT does not repay debt (reference fund Lua): remaining 100
    rid2 = _reserve(client, 100, "ALLOW_WITH_OVERDRAFT")
    over = client.commit_reservation(rid2, commit_body(301))  # debt 300 + 201 > 500
    assert over.status == 409 and over.body["error"] == "OVERDRAFT_LIMIT_EXCEEDED"
    assert client.commit_reservation(rid2, commit_body(300)).status == 200  # debt exactly 500
    repaid = authority.fund(SCOPE, "REPAY_DEBT", 2_000)
    assert repaid["new_debt"]["amount"] == 0
    assert amounts(balance_of(authority, SCOPE)) == {"remaining": 1_800, "reserved": 0, "spent": 1_100,
                                                      "allocated": 2_900, "debt": 0}  # fmt: skip


def test_debt_outstanding_and_over_limit(client: CyclesClient, authority: LocalAuthority, admin: httpx.Client) -> None:
    authority.create_budget(SCOPE, 1_000, overdraft_limit=300)
    rid = _reserve(client, 1_000, "ALLOW_WITH_OVERDRAFT")
    assert client.commit_reservation(rid, commit_body(1_200)).status == 200  # debt 200
    # Lowering the limit to 0 turns the debt into DEBT_OUTSTANDING... and over-limit (debt > limit) wins.
    patched = admin.patch("/v1/admin/budgets", params={"scope": SCOPE, "unit": UNIT},
                          json={"overdraft_limit": {"unit": UNIT, "amount": 0}})  # fmt: skip
    assert patched.status_code == 200 and patched.json()["is_over_limit"] is True
    assert client.create_reservation(reserve_body(0)).body["error"] == "OVERDRAFT_LIMIT_EXCEEDED"
    decide = client.decide(reserve_body(0))
    assert decide.status == 200
    assert decide.body == {"decision": "DENY", "affected_scopes": decide.body["affected_scopes"],
                           "reason_code": "OVERDRAFT_LIMIT_EXCEEDED"}  # fmt: skip
    authority.fund(SCOPE, "CREDIT", 1_000)  # debt 200 > limit 0 still: over-limit stays
    assert balance_of(authority, SCOPE)["is_over_limit"] is True
    assert client.create_reservation(reserve_body(0)).body["error"] == "OVERDRAFT_LIMIT_EXCEEDED"
    # Raising the limit to the debt clears over-limit (200 > 200 is false); with a limit > 0 debt does not block.
    authority.ledger.update_budget(SCOPE, UNIT, {"overdraft_limit": {"unit": UNIT, "amount": 200}})
    assert "is_over_limit" not in balance_of(authority, SCOPE)
    allowed = client.create_reservation(reserve_body(10))
    assert allowed.status == 200, allowed.body
    assert client.release_reservation(allowed.body["reservation_id"], {"idempotency_key": key()}).status == 200
    authority.ledger.update_budget(SCOPE, UNIT, {"overdraft_limit": {"unit": UNIT, "amount": 0}})
    assert balance_of(authority, SCOPE)["is_over_limit"] is True
    repaid = authority.fund(SCOPE, "REPAY_DEBT", 100)  # debt 100, limit 0: still over-limit (100 > 0)
    assert repaid["new_debt"]["amount"] == 100
    assert client.create_reservation(reserve_body(0)).body["error"] == "OVERDRAFT_LIMIT_EXCEEDED"
    authority.ledger.update_budget(SCOPE, UNIT, {"overdraft_limit": {"unit": UNIT, "amount": 100}})
    assert "is_over_limit" not in balance_of(authority, SCOPE)
    assert client.create_reservation(reserve_body(0)).status == 200
    authority.ledger.update_budget(SCOPE, UNIT, {"overdraft_limit": {"unit": UNIT, "amount": 0}})
    # Every admin change recomputes is_over_limit = debt > limit, so debt with a zero limit is always over-limit
    # here: OVERDRAFT_LIMIT_EXCEEDED wins over DEBT_OUTSTANDING (see the next test for DEBT_OUTSTANDING itself).
    assert client.create_reservation(reserve_body(0)).body["error"] == "OVERDRAFT_LIMIT_EXCEEDED"


def test_debt_outstanding_with_zero_limit(client: CyclesClient, authority: LocalAuthority) -> None:
    """Debt with a zero overdraft limit on a scope not flagged over-limit: reserve 409 DEBT_OUTSTANDING, decide DENY.

    The embedded admin plane cannot produce this state (it recomputes `is_over_limit = debt > limit` on every change,
    as the reference's funding path does); a ledger written by a server whose limit change does not recompute the
    flag can. The row is written directly, as such a server would leave it.
    """
    authority.create_budget(SCOPE, 1_000, overdraft_limit=300)
    rid = _reserve(client, 1_000, "ALLOW_WITH_OVERDRAFT")
    assert client.commit_reservation(rid, commit_body(1_100)).status == 200  # debt 100, limit 300: not over-limit
    assert "is_over_limit" not in balance_of(authority, SCOPE)
    with authority.ledger._tx() as conn:
        conn.execute("UPDATE budgets SET overdraft_limit = 0 WHERE scope = ? AND unit = ?", (SCOPE, UNIT))
    assert amounts(balance_of(authority, SCOPE))["debt"] == 100
    denied = client.create_reservation(reserve_body(10))
    assert denied.status == 409 and denied.body["error"] == "DEBT_OUTSTANDING", denied.body
    decided = client.decide(reserve_body(10))
    assert decided.status == 200
    assert (decided.body["decision"], decided.body["reason_code"]) == ("DENY", "DEBT_OUTSTANDING")
    # Repaying the debt lifts the block (and funding leaves room for the call).
    assert authority.fund(SCOPE, "REPAY_DEBT", 100)["new_debt"]["amount"] == 0
    authority.fund(SCOPE, "CREDIT", 1_000)
    assert client.create_reservation(reserve_body(10)).status == 200


def test_fund_operations(authority: LocalAuthority, admin: httpx.Client) -> None:
    authority.create_budget(SCOPE, 1_000)
    r = admin.post("/v1/admin/budgets/fund", params={"scope": SCOPE, "unit": UNIT, "tenant_id": "acme"},
                   json={"operation": "CREDIT", "amount": {"unit": UNIT, "amount": 500}})  # fmt: skip
    assert r.status_code == 200 and r.json()["new_allocated"]["amount"] == 1_500
    assert authority.fund(SCOPE, "DEBIT", 200)["new_remaining"]["amount"] == 1_300
    with pytest.raises(Exception, match="BUDGET_EXCEEDED"):
        authority.fund(SCOPE, "DEBIT", 10_000)
    assert authority.fund(SCOPE, "RESET", 700)["new_remaining"]["amount"] == 700
    assert authority.ledger.fund(SCOPE, UNIT, {"operation": "RESET_SPENT", "amount": {"unit": UNIT, "amount": 900},
                                               "spent": {"unit": UNIT, "amount": 100}}, None)["new_remaining"][
        "amount"] == 800  # fmt: skip
    bad = admin.post("/v1/admin/budgets/fund", params={"scope": SCOPE, "unit": UNIT},
                     json={"operation": "STEAL", "amount": {"unit": UNIT, "amount": 1}})  # fmt: skip
    assert bad.status_code == 400


def test_events_policies(client: CyclesClient, authority: LocalAuthority) -> None:
    authority.create_budget(SCOPE, 1_000, overdraft_limit=100)

    def event(amount: int, policy: str) -> tuple[int, Any]:
        resp = client.create_event({"idempotency_key": key(), "subject": {"tenant": "acme", "workspace": "prod"},
                                    "action": {"kind": "tool", "name": "t"}, "actual": {"unit": UNIT, "amount": amount},
                                    "overage_policy": policy})  # fmt: skip
        return resp.status, resp.body

    assert event(1_001, "REJECT")[1]["error"] == "BUDGET_EXCEEDED"
    assert event(900, "REJECT")[0] == 201
    status, body = event(150, "ALLOW_WITH_OVERDRAFT")  # remaining 100, debt 50
    assert status == 201 and "charged" not in body
    assert event(51, "ALLOW_WITH_OVERDRAFT")[1]["error"] == "OVERDRAFT_LIMIT_EXCEEDED"
    authority.fund(SCOPE, "REPAY_DEBT", 250)  # debt 0, remaining 200
    status, body = event(500, "ALLOW_IF_AVAILABLE")
    assert status == 201 and body["charged"]["amount"] == 200
    assert balance_of(authority, SCOPE)["is_over_limit"] is True


def test_frozen_and_closed_budgets(client: CyclesClient, authority: LocalAuthority, admin: httpx.Client) -> None:
    authority.create_budget(SCOPE, 1_000)
    rid = client.create_reservation(reserve_body(100)).body["reservation_id"]
    r = admin.post("/v1/admin/budgets/freeze", params={"scope": SCOPE, "unit": UNIT})
    assert r.status_code == 200 and r.json()["status"] == "FROZEN"
    assert client.create_reservation(reserve_body(1)).body["error"] == "BUDGET_FROZEN"
    assert client.decide(reserve_body(1)).body["reason_code"] == "BUDGET_FROZEN"
    assert client.commit_reservation(rid, commit_body(100)).status == 200  # existing holds settle normally
    admin.post("/v1/admin/budgets/unfreeze", params={"scope": SCOPE, "unit": UNIT}).raise_for_status()
    assert client.create_reservation(reserve_body(1)).status == 200
    admin.post("/v1/admin/budgets/close", params={"scope": SCOPE, "unit": UNIT}).raise_for_status()
    resp = client.create_reservation(reserve_body(1))
    assert resp.status == 409 and resp.body["error"] == "BUDGET_CLOSED"
    ev = client.create_event({"idempotency_key": key(), "subject": {"tenant": "acme", "workspace": "prod"},
                              "action": {"kind": "t", "name": "t"}, "actual": {"unit": UNIT, "amount": 1}})  # fmt: skip
    assert ev.status == 409 and ev.body["error"] == "BUDGET_CLOSED"


def test_closed_tenant(client: CyclesClient, authority: LocalAuthority, admin: httpx.Client) -> None:
    authority.create_budget(SCOPE, 1_000)
    body = reserve_body(10)
    rid = client.create_reservation(body).body["reservation_id"]
    r = admin.patch("/v1/admin/tenants/acme", json={"status": "CLOSED"})
    assert r.status_code == 200 and r.json()["status"] == "CLOSED"
    assert client.create_reservation(reserve_body(1)).body["error"] == "TENANT_CLOSED"
    assert client.create_reservation(body).status == 200  # replays are not overridden
    assert client.create_reservation(reserve_body(1, dry_run=True)).body["reason_code"] == "TENANT_CLOSED"
    assert client.decide(reserve_body(1)).body["reason_code"] == "TENANT_CLOSED"
    for resp in (client.commit_reservation(rid, commit_body(1)),
                 client.release_reservation(rid, {"idempotency_key": key()}),
                 client.extend_reservation(rid, {"idempotency_key": key(), "extend_by_ms": 10})):  # fmt: skip
        assert resp.status == 409 and resp.body["error"] == "TENANT_CLOSED"
    authority.set_tenant_status("acme", "ACTIVE")
    assert client.release_reservation(rid, {"idempotency_key": key()}).status == 200


def test_reserve_is_atomic_across_scopes(client: CyclesClient, authority: LocalAuthority) -> None:
    authority.create_budget("tenant:acme", 10_000)
    authority.create_budget(SCOPE, 500)
    before = authority.balances("acme")
    assert client.create_reservation(reserve_body(600)).body["error"] == "BUDGET_EXCEEDED"
    assert authority.balances("acme") == before  # the tenant scope was not touched either
