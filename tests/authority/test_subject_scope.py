# mypy: disable-error-code="index"
"""A subject without `tenant` derives its scopes from its own fields only, as the reference server does.

`{"agent": "x"}` is the scope `agent:x`: no budget can live there (budgets sit under a tenant), so reserve and events
answer 404 NOT_FOUND, dry-run and decide DENY `BUDGET_NOT_FOUND`, and the key's tenant is never charged. otel-cycles'
callback always names the tenant (`tests/core/test_governance.py` sees its denials at `tenant:<id>/agent:poor`).
"""

from __future__ import annotations

from runcycles import CyclesClient

from otel_cycles.authority import LocalAuthority

from .conftest import UNIT, key, reserve_body

ACTION = {"kind": "llm.completion", "name": "m"}


def test_a_subject_without_tenant_finds_no_budget(client: CyclesClient, authority: LocalAuthority) -> None:
    authority.create_budget("tenant:acme", 1_000_000)
    authority.create_budget("tenant:acme/agent:x", 1_000_000)  # the tenant's own agent:x budget is not agent:x
    before = authority.balances("acme")
    subject = {"agent": "x"}
    resp = client.create_reservation(reserve_body(10, subject=subject))
    assert resp.status == 404 and resp.body["error"] == "NOT_FOUND"
    assert resp.body["message"] == "Budget not found for provided scope: agent:x"
    dry = client.create_reservation(reserve_body(10, subject=subject, dry_run=True))
    assert dry.status == 200 and dry.body["decision"] == "DENY" and dry.body["reason_code"] == "BUDGET_NOT_FOUND"
    assert dry.body["affected_scopes"] == ["agent:x"]
    decided = client.decide({"idempotency_key": key(), "subject": subject, "action": ACTION,
                             "estimate": {"unit": UNIT, "amount": 10}})  # fmt: skip
    assert decided.body["decision"] == "DENY" and decided.body["affected_scopes"] == ["agent:x"]
    event = client.create_event({"idempotency_key": key(), "subject": {"workspace": "prod", "agent": "x"},
                                 "action": ACTION, "actual": {"unit": UNIT, "amount": 10}})  # fmt: skip
    assert event.status == 404 and event.body["message"].endswith("workspace:prod/agent:x")
    assert authority.balances("acme") == before and authority.reservations("acme") == []
