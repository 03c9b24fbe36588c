# mypy: disable-error-code="index,union-attr"
"""A commit the authority refuses for its overage still settles its reservation, at the reserved estimate.

Under `overage_policy=REJECT` the authority answers a commit above the estimate with 409 BUDGET_EXCEEDED and keeps
the reservation ACTIVE (the reference server's behaviour); runcycles' commit path drops such a commit without
releasing, so without `otel_cycles._overage` the reservation would expire and charge nothing. Real agents, the real
authority over loopback HTTP, prices from genai-prices as the oracle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from runcycles import CyclesClient

from otel_cycles import CyclesBudgetCallback
from otel_cycles._settlement import Settlement
from otel_cycles.testing import ScriptedModel
from tests.conftest import Tenant
from tests.core.agents import make_agent
from tests.oracle import Oracle
from tests.reliability.fault_proxy import FaultProxy

LLM_ESTIMATE = 1_000  # far below what a gpt-4o call costs, so every LLM commit is an overage
TOOL_COST = 500
UNIT = "USD_MICROCENTS"


def _eventually(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll `predicate` until it holds (bounded): settlement runs on a background thread."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _refused(metric_reader: Any) -> int:
    data = metric_reader.get_metrics_data()
    total = 0
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "cycles.settlement.errors":
                    total += sum(p.value for p in metric.data.data_points
                                 if p.attributes.get("error.type") == "overage_refused")  # fmt: skip
    return total


def test_reject_overage_commits_the_estimate_and_leaves_nothing_active(
    tenant: Tenant, model: ScriptedModel, spans: Any, metric_reader: Any
) -> None:
    tenant.budget("", 100_000_000)
    refused_before = _refused(metric_reader)
    callback = CyclesBudgetCallback(
        client=tenant.client, tenant=tenant.id, agent="strict", llm_estimate=LLM_ESTIMATE, tool_estimate=TOOL_COST,
        overage_policy="REJECT", lookahead=False,
    )  # fmt: skip

    make_agent(model, [callback]).run("Research budget governance")

    governed = [s for s in spans.get_finished_spans() if s.attributes.get("cycles.action.kind")]
    llm = [s for s in governed if s.attributes["cycles.action.kind"] == "llm.completion"]
    tools = [s for s in governed if s.attributes["cycles.action.kind"] == "tool.execution"]
    assert len(llm) == model.request_count == 3 and tools
    priced = [Oracle().expected(s) for s in llm]  # genai-prices on each call's reported usage
    assert all(p > LLM_ESTIMATE for p in priced)  # every LLM commit was refused for its overage
    assert _eventually(lambda: tenant.active() == [])  # nothing left ACTIVE
    assert tenant.spent() == LLM_ESTIMATE * len(llm) + TOOL_COST * len(tools)  # the estimate, not nothing
    committed = tenant.authority.reservations(tenant.id, status="COMMITTED")
    assert sorted(r["committed"]["amount"] for r in committed) == sorted([LLM_ESTIMATE] * 3 + [TOOL_COST] * len(tools))
    details = [tenant.reservation(r["reservation_id"]) for r in committed]
    uncharged = sorted(d["committed_metadata"].get("uncharged_overage", 0) for d in details)
    assert [u for u in uncharged if u] == sorted(p - LLM_ESTIMATE for p in priced)
    assert _refused(metric_reader) - refused_before == 3


def _reserve(client: CyclesClient, tenant: Tenant, amount: int, policy: str) -> str:
    resp = client.create_reservation({
        "idempotency_key": f"r-{policy}-{amount}", "subject": {"tenant": tenant.id},
        "action": {"kind": "llm.completion", "name": "m"}, "estimate": {"unit": UNIT, "amount": amount},
        "overage_policy": policy,
    })  # fmt: skip
    assert resp.status == 200, resp.body
    return str(resp.body["reservation_id"])


def _bodies(rid: str, tenant: Tenant, actual: int) -> tuple[dict[str, Any], dict[str, Any]]:
    body = {"idempotency_key": f"commit-{rid}", "actual": {"unit": UNIT, "amount": actual},
            "metadata": {"cost_source": "local"}}  # fmt: skip
    event = {"idempotency_key": f"commit-{rid}", "subject": {"tenant": tenant.id},
             "action": {"kind": "llm.completion", "name": "m"}, "actual": body["actual"]}  # fmt: skip
    return body, event


def test_an_overdraft_limit_refusal_commits_the_estimate(tenant: Tenant) -> None:
    tenant.budget("", 1_000, overdraft_limit=100)
    rid = _reserve(tenant.client, tenant, 900, "ALLOW_WITH_OVERDRAFT")
    settlement = Settlement(tenant.client)
    body, event = _bodies(rid, tenant, 5_000)  # debt 4,000 would exceed the limit of 100: 409
    assert settlement.wait(settlement.commit(rid, lambda: (body, event)), timeout=10)
    assert settlement.flush(10)
    detail = tenant.reservation(rid)
    assert detail["status"] == "COMMITTED" and detail["committed"]["amount"] == 900
    assert detail["committed_metadata"] == {"cost_source": "local", "uncharged_overage": 4_100}
    assert tenant.spent() == 900 and "debt" not in tenant.balance()


def test_an_overage_refused_on_a_retry_settles_too(tenant: Tenant, tmp_path: Any) -> None:
    """The first commit attempt meets a 503, so the refusal arrives in runcycles' background retry."""
    tenant.budget("", 100_000)
    rid = _reserve(tenant.client, tenant, 700, "REJECT")
    body, event = _bodies(rid, tenant, 1_000)
    with FaultProxy(tenant.authority.base_url) as proxy:
        proxy.add(path="/commit", status=503, times=1)
        config = replace(tenant.client._config, base_url=proxy.base_url, journal_dir=str(tmp_path / "retry-journal"),
                         retry_initial_delay=0.05)  # fmt: skip
        with CyclesClient(config) as client:
            settlement = Settlement(client)
            assert settlement.wait(settlement.commit(rid, lambda: (body, event)), timeout=10)
            assert settlement.flush(10)
        faults = [r.fault for r in proxy.requests("/commit")]
    assert faults == ["503", "none", "none"]  # the 503, the retry refused for its overage, the capped commit
    detail = tenant.reservation(rid)
    assert detail["status"] == "COMMITTED" and detail["committed"]["amount"] == 700
    assert tenant.spent() == 700


def test_a_commit_within_the_estimate_is_untouched(tenant: Tenant) -> None:
    tenant.budget("", 100_000)
    rid = _reserve(tenant.client, tenant, 700, "REJECT")
    settlement = Settlement(tenant.client)
    body, event = _bodies(rid, tenant, 650)
    assert settlement.wait(settlement.commit(rid, lambda: (body, event)), timeout=10)
    detail = tenant.reservation(rid)
    assert detail["committed"]["amount"] == 650 and detail["committed_metadata"] == {"cost_source": "local"}
