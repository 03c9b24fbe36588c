# mypy: disable-error-code="index,arg-type,operator,dict-item,union-attr"
"""The runtime plane end to end over loopback HTTP with the real runcycles clients; bodies validated strictly."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from runcycles import AsyncCyclesClient, CyclesClient
from runcycles.models import (
    BalanceResponse,
    CommitResponse,
    DecisionResponse,
    DryRunResult,
    ErrorResponse,
    EventCreateResponse,
    ReleaseResponse,
    ReservationCreateResponse,
    ReservationDetail,
    ReservationExtendResponse,
    ReservationListResponse,
)

from otel_cycles.authority import LocalAuthority

from .conftest import UNIT, FakeClock, amounts, balance_of, commit_body, key, reserve_body

_CREATE_KEYS = {
    "decision", "reservation_id", "affected_scopes", "expires_at_ms", "remaining_ttl_ms", "scope_path", "reserved",
    "caps", "reason_code", "retry_after_ms", "balances", "cycles_evidence",
}  # fmt: skip


def strict(model: Any, body: Any) -> Any:
    """Validate like runcycles' lifecycle does (`model_validate_json(json.dumps(body), strict=True)`)."""
    return model.model_validate_json(json.dumps(body), strict=True)


def assert_create_ok(resp: Any) -> ReservationCreateResponse:
    """Mirror runcycles.lifecycle._schema_valid_create: exact 200, known keys only, no nulls, strict model."""
    assert resp.status == 200, resp.body
    assert set(resp.body) <= _CREATE_KEYS
    assert "null" not in json.dumps(resp.body)
    return strict(ReservationCreateResponse, resp.body)  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def budgets(authority: LocalAuthority) -> None:
    authority.create_budget("tenant:acme", 1_000_000)
    authority.create_budget("tenant:acme/workspace:prod", 100_000)


@pytest.fixture(autouse=True)
def invariant_holds(authority: LocalAuthority, budgets: None) -> Any:
    yield
    assert authority.check_invariants() == []


def test_full_lifecycle_reserve_commit(client: CyclesClient, authority: LocalAuthority) -> None:
    body = reserve_body(10_000, subject={"tenant": "acme", "workspace": "Prod", "agent": "Bot",
                                         "dimensions": {"cost_center": "R&D / 42"}}, metadata={"run": "1"})  # fmt: skip
    created = assert_create_ok(client.create_reservation(body))
    assert created.decision.value == "ALLOW"
    assert created.affected_scopes == [
        "tenant:acme",
        "tenant:acme/workspace:prod",
        "tenant:acme/workspace:prod/agent:bot",
    ]
    assert created.scope_path == "tenant:acme/workspace:prod/agent:bot"
    assert created.remaining_ttl_ms == 60_000
    assert [b.scope for b in created.balances or []] == ["tenant:acme", "workspace:prod"]
    assert amounts(balance_of(authority, "tenant:acme/workspace:prod")) == {
        "remaining": 90_000, "reserved": 10_000, "spent": 0, "allocated": 100_000, "debt": 0}  # fmt: skip
    rid = created.reservation_id
    assert rid

    detail = client.get_reservation(rid)
    assert detail.status == 200
    strict(ReservationDetail, detail.body)
    assert detail.body["subject"]["dimensions"] == {"cost_center": "R&D / 42"}  # round-trip
    assert detail.body["metadata"] == {"run": "1"}

    commit = client.commit_reservation(rid, commit_body(7_000, metrics={"tokens_input": 10, "tokens_output": 5}))
    assert commit.status == 200
    parsed = strict(CommitResponse, commit.body)
    assert parsed.charged.amount == 7_000
    assert parsed.released and parsed.released.amount == 3_000
    assert amounts(balance_of(authority, "tenant:acme")) == {
        "remaining": 993_000, "reserved": 0, "spent": 7_000, "allocated": 1_000_000, "debt": 0}  # fmt: skip
    final = client.get_reservation(rid).body
    assert final["status"] == "COMMITTED" and final["committed"]["amount"] == 7_000 and "finalized_at_ms" in final


def test_release_returns_budget(client: CyclesClient, authority: LocalAuthority) -> None:
    rid = assert_create_ok(client.create_reservation(reserve_body(5_000))).reservation_id
    resp = client.release_reservation(rid, {"idempotency_key": key(), "reason": "done"})
    assert resp.status == 200
    assert strict(ReleaseResponse, resp.body).released.amount == 5_000
    assert amounts(balance_of(authority, "tenant:acme"))["remaining"] == 1_000_000
    again = client.release_reservation(rid, {"idempotency_key": key()})
    assert again.status == 409 and again.body["error"] == "RESERVATION_FINALIZED"
    again = client.commit_reservation(rid, commit_body(1))
    assert again.status == 409 and again.body["error"] == "RESERVATION_FINALIZED"


def test_every_response_has_correlation_headers(raw: httpx.Client) -> None:
    for resp in (raw.post("/v1/reservations", json=reserve_body()), raw.get("/v1/nope"), raw.post("/v1/decide")):
        assert resp.headers["x-request-id"]
        assert len(resp.headers["x-cycles-trace-id"]) == 32
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    resp = raw.get("/v1/balances", params={"tenant": "acme"}, headers={"traceparent": parent})
    assert resp.headers["x-cycles-trace-id"] == "0af7651916cd43dd8448eb211c80319c"
    resp = raw.get("/v1/balances", params={"tenant": "acme"}, headers={"x-cycles-trace-id": "ab" * 16})
    assert resp.headers["x-cycles-trace-id"] == "ab" * 16
    resp = raw.get(
        "/v1/balances", params={"tenant": "acme"}, headers={"traceparent": "garbage", "x-cycles-trace-id": "0" * 32}
    )
    assert resp.status_code == 200 and resp.headers["x-cycles-trace-id"] not in ("0" * 32, "garbage")
    err = raw.get("/v1/reservations/nope")
    assert err.status_code == 404 and "trace_id" not in err.json()
    assert ErrorResponse.model_validate(err.json(), strict=True).request_id == err.headers["x-request-id"]


def test_idempotent_replay_and_mismatch(client: CyclesClient, clock: FakeClock) -> None:
    body = reserve_body(1_000)
    first = assert_create_ok(client.create_reservation(body))
    clock.advance(10_000)
    replay = assert_create_ok(client.create_reservation(body))
    assert replay.reservation_id == first.reservation_id
    assert replay.remaining_ttl_ms == 50_000  # only remaining_ttl_ms is recomputed
    assert replay.expires_at_ms == first.expires_at_ms
    other = client.create_reservation({**body, "estimate": {"unit": UNIT, "amount": 2}})
    assert other.status == 409 and other.body["error"] == "IDEMPOTENCY_MISMATCH"
    err = other.get_error_response()
    assert err is not None and err.error == "IDEMPOTENCY_MISMATCH"

    rid = first.reservation_id
    assert rid
    cbody = commit_body(500)
    c1 = client.commit_reservation(rid, cbody)
    c2 = client.commit_reservation(rid, cbody)
    assert c1.status == c2.status == 200 and c1.body == c2.body
    c3 = client.commit_reservation(rid, {**cbody, "actual": {"unit": UNIT, "amount": 501}})
    assert c3.status == 409 and c3.body["error"] == "IDEMPOTENCY_MISMATCH"
    # After the commit the create replay reports no lease left.
    assert assert_create_ok(client.create_reservation(body)).remaining_ttl_ms == 0


def test_idempotency_header_must_match_body(raw: httpx.Client) -> None:
    body = reserve_body()
    resp = raw.post("/v1/reservations", json=body, headers={"X-Idempotency-Key": "different"})
    assert resp.status_code == 400 and resp.json()["error"] == "INVALID_REQUEST"
    ok = raw.post("/v1/reservations", json=body, headers={"X-Idempotency-Key": body["idempotency_key"]})
    assert ok.status_code == 200


def test_events_and_decide(client: CyclesClient, authority: LocalAuthority) -> None:
    ev = {"idempotency_key": key(), "subject": {"tenant": "acme", "workspace": "prod"},
          "action": {"kind": "tool.search", "name": "web"}, "actual": {"unit": UNIT, "amount": 2_500},
          "client_time_ms": 1}  # fmt: skip
    resp = client.create_event(ev)
    assert resp.status == 201
    parsed = strict(EventCreateResponse, resp.body)
    assert parsed.status.value == "APPLIED" and parsed.charged is None
    assert client.create_event(ev).body == resp.body  # replay
    assert amounts(balance_of(authority, "tenant:acme/workspace:prod"))["spent"] == 2_500

    dec = client.decide({k: v for k, v in reserve_body(1).items()})
    assert dec.status == 200
    assert strict(DecisionResponse, dec.body).decision.value == "ALLOW"
    deny = client.decide(reserve_body(10**9))
    assert deny.status == 200
    assert strict(DecisionResponse, deny.body).reason_code == "BUDGET_EXCEEDED"
    none = client.decide(
        reserve_body(1, subject={"tenant": "acme", "workspace": "x"}) | {"estimate": {"unit": "TOKENS", "amount": 1}}
    )
    assert none.status == 400 and none.body["error"] == "UNIT_MISMATCH"
    assert none.body["details"]["expected_units"] == [UNIT]


def test_dry_run(client: CyclesClient, authority: LocalAuthority) -> None:
    before = authority.balances("acme")
    allow = client.create_reservation(reserve_body(1_000, dry_run=True))
    parsed = assert_create_ok(allow)
    strict(DryRunResult, allow.body)
    assert parsed.reservation_id is None and parsed.expires_at_ms is None and parsed.remaining_ttl_ms is None
    deny = client.create_reservation(reserve_body(10**9, dry_run=True))
    parsed = assert_create_ok(deny)
    assert parsed.decision.value == "DENY" and parsed.reason_code == "BUDGET_EXCEEDED"
    assert authority.balances("acme") == before
    assert authority.reservations("acme") == []


def test_budget_exceeded_is_409_and_not_found_is_404(client: CyclesClient) -> None:
    resp = client.create_reservation(reserve_body(100_001))  # workspace budget is 100_000
    assert resp.status == 409 and resp.body["error"] == "BUDGET_EXCEEDED"
    resp = client.create_reservation(reserve_body(1, subject={"workspace": "x"}, estimate={"unit": UNIT, "amount": 1}))
    assert resp.status == 404  # tenant omitted: the scope is workspace:x alone (reference), which has no budget
    with LocalAuthority() as empty:
        empty.create_tenant("acme")
        k = empty.create_api_key("acme")
        r = httpx.post(f"{empty.base_url}/v1/reservations", json=reserve_body(), headers={"X-Cycles-API-Key": k})
        assert r.status_code == 404 and r.json()["error"] == "NOT_FOUND"
        assert "Budget not found" in r.json()["message"]
    resp = client.create_reservation(reserve_body(1, unit="TOKENS"))
    assert resp.status == 400 and resp.body["error"] == "UNIT_MISMATCH"


def test_cross_tenant_is_forbidden(client: CyclesClient, other_client: CyclesClient, authority: LocalAuthority) -> None:
    resp = other_client.create_reservation(reserve_body())  # subject.tenant is acme
    assert resp.status == 403 and resp.body["error"] == "FORBIDDEN"
    rid = assert_create_ok(client.create_reservation(reserve_body())).reservation_id
    assert rid
    assert other_client.get_reservation(rid).status == 403
    assert other_client.commit_reservation(rid, commit_body(1)).status == 403
    assert other_client.release_reservation(rid, {"idempotency_key": key()}).status == 403
    assert other_client.extend_reservation(rid, {"idempotency_key": key(), "extend_by_ms": 1000}).status == 403
    assert other_client.get_balances(tenant="acme").status == 403
    assert other_client.list_reservations(tenant="acme").status == 403
    assert other_client.decide(reserve_body()).status == 403
    unauth = httpx.post(
        f"{authority.base_url}/v1/reservations", json=reserve_body(), headers={"X-Cycles-API-Key": "bad"}
    )
    assert unauth.status_code == 401 and unauth.json()["error"] == "UNAUTHORIZED"


def test_extend_is_additive_and_limited(client: CyclesClient, clock: FakeClock) -> None:
    created = assert_create_ok(client.create_reservation(reserve_body(ttl_ms=10_000)))
    rid, expires = created.reservation_id, created.expires_at_ms
    assert rid and expires
    clock.advance(4_000)
    for i in range(10):
        resp = client.extend_reservation(rid, {"idempotency_key": f"x{i}", "extend_by_ms": 1_000})
        assert resp.status == 200
        parsed = strict(ReservationExtendResponse, resp.body)
        assert parsed.expires_at_ms == expires + 1_000 * (i + 1)
        assert parsed.remaining_ttl_ms == parsed.expires_at_ms - clock.now
    replay = client.extend_reservation(rid, {"idempotency_key": "x0", "extend_by_ms": 1_000})
    assert replay.status == 200 and replay.body["expires_at_ms"] == expires + 1_000
    over = client.extend_reservation(rid, {"idempotency_key": "x10", "extend_by_ms": 1_000})
    assert over.status == 409 and over.body["error"] == "MAX_EXTENSIONS_EXCEEDED"


def test_ttl_cap_grace_and_expiry(client: CyclesClient, authority: LocalAuthority, clock: FakeClock) -> None:
    capped = assert_create_ok(client.create_reservation(reserve_body(ttl_ms=86_400_000)))
    assert capped.remaining_ttl_ms == 3_600_000
    created = assert_create_ok(client.create_reservation(reserve_body(2_000, ttl_ms=1_000, grace_period_ms=500)))
    rid = created.reservation_id
    assert rid
    clock.advance(1_001)
    ext = client.extend_reservation(rid, {"idempotency_key": key(), "extend_by_ms": 1_000})
    assert ext.status == 410 and ext.body["error"] == "RESERVATION_EXPIRED"  # no grace for extend
    clock.advance(499)  # exactly at expires + grace: commit still accepted
    assert client.commit_reservation(rid, commit_body(2_000)).status == 200

    late = assert_create_ok(client.create_reservation(reserve_body(3_000, ttl_ms=1_000, grace_period_ms=0)))
    assert late.reservation_id
    clock.advance(1_001)
    assert client.commit_reservation(late.reservation_id, commit_body(1)).status == 410
    assert authority.sweep() == 1
    assert client.get_reservation(late.reservation_id).status == 410
    assert client.release_reservation(late.reservation_id, {"idempotency_key": key()}).status == 410
    rows = {r["reservation_id"]: r for r in authority.reservations("acme")}
    assert rows[late.reservation_id]["status"] == "EXPIRED"  # list still shows it
    assert amounts(balance_of(authority, "tenant:acme/workspace:prod"))["reserved"] == 1000


def test_background_sweeper_expires(clock: FakeClock) -> None:
    import time

    with LocalAuthority(clock=clock, sweep_interval_s=0.02) as auth:
        auth.create_tenant("acme")
        auth.create_budget("tenant:acme", 10_000)
        k = auth.create_api_key("acme")
        r = httpx.post(f"{auth.base_url}/v1/reservations", json=reserve_body(4_000, ttl_ms=1_000),
                       headers={"X-Cycles-API-Key": k})  # fmt: skip
        assert r.status_code == 200
        clock.advance(1_000 + 5_000 + 1)  # past expires_at + default grace
        deadline = time.monotonic() + 5
        while auth.reservations("acme", status="EXPIRED") == [] and time.monotonic() < deadline:
            time.sleep(0.01)  # waiting for the real background thread, not for the clock
        assert [x["status"] for x in auth.reservations("acme")] == ["EXPIRED"]
        assert amounts(balance_of(auth, "tenant:acme"))["remaining"] == 10_000
        assert auth.check_invariants() == []


def test_list_reservations_filters_sort_and_pages(client: CyclesClient, clock: FakeClock) -> None:
    ids = []
    for i in range(7):
        clock.advance(10)
        agent = "a" if i % 2 else "b"
        subject = {"tenant": "acme", "workspace": "prod", "agent": agent}
        ids.append(assert_create_ok(client.create_reservation(reserve_body(100 + i, subject=subject))).reservation_id)
    client.release_reservation(ids[0], {"idempotency_key": key()})
    seen: list[str] = []
    params = {"limit": "3"}
    while True:
        page = client.list_reservations(**params)
        assert page.status == 200
        # runcycles 0.5.3's ReservationSummary predates the spec's always-projected committed/finalized_at_ms.
        rows = [
            {k: v for k, v in r.items() if k not in ("finalized_at_ms", "committed")} for r in page.body["reservations"]
        ]
        parsed = strict(ReservationListResponse, {**page.body, "reservations": rows})
        seen += [r.reservation_id for r in parsed.reservations]
        if not page.body["has_more"]:
            assert "next_cursor" not in page.body
            break
        params["cursor"] = page.body["next_cursor"]
    assert seen == list(reversed(ids))  # default: created_at_ms desc
    asc = client.list_reservations(sort_by="reserved", sort_dir="asc", limit="200").body["reservations"]
    assert [r["reserved"]["amount"] for r in asc] == sorted(r["reserved"]["amount"] for r in asc)
    active = client.list_reservations(status="ACTIVE", agent="A").body["reservations"]
    assert {r["reservation_id"] for r in active} == {ids[1], ids[3], ids[5]}
    one = client.list_reservations(idempotency_key=active[0]["idempotency_key"]).body["reservations"]
    assert len(one) == 1
    assert client.list_reservations(**{"from": "", "to": ""}).status == 200  # blank bounds are unset
    assert client.list_reservations(**{"from": "2030-01-02T00:00:00Z", "to": "2030-01-01T00:00:00Z"}).status == 400
    released = client.list_reservations(finalized_from="2000-01-01T00:00:00Z").body["reservations"]
    assert [r["reservation_id"] for r in released] == [ids[0]]
    cursor = client.list_reservations(limit="2").body["next_cursor"]
    assert client.list_reservations(limit="2", status="ACTIVE", cursor=cursor).status == 400  # cursor bound to filters
    assert client.list_reservations(cursor="!!!").status == 400
    assert client.list_reservations(include="metadata,bogus,", limit="1").status == 200


def test_balances_filters_and_pagination(client: CyclesClient, authority: LocalAuthority) -> None:
    for i in range(5):
        authority.create_budget(f"tenant:acme/workspace:prod/agent:a{i}", 10)
    authority.create_budget("tenant:acme/workspace:dev", 10, unit="TOKENS")
    scopes: list[str] = []
    params = {"tenant": "acme", "limit": "2"}
    while True:
        resp = client.get_balances(**params)
        assert resp.status == 200
        parsed = strict(BalanceResponse, resp.body)
        scopes += [b.scope_path for b in parsed.balances]
        if not parsed.has_more:
            break
        params["cursor"] = resp.body["next_cursor"]
    assert len(scopes) == 8 and scopes == sorted(scopes)
    prod = client.get_balances(workspace="PROD").body["balances"]
    assert len(prod) == 6
    assert client.get_balances(agent="a3").body["balances"][0]["scope"] == "agent:a3"
    assert client._http.get("/v1/balances").status_code == 400  # at least one filter
    assert client.get_balances(tenant="acme", cursor="%%%").status == 400
    assert client.get_balances(tenant="acme", limit="0").status == 400


def test_async_client_lifecycle(async_config: Any) -> None:
    async def run() -> None:
        async with AsyncCyclesClient(async_config) as ac:
            created = await ac.create_reservation(reserve_body(1_000))
            rid = assert_create_ok(created).reservation_id
            assert rid
            ext = await ac.extend_reservation(rid, {"idempotency_key": key(), "extend_by_ms": 5_000})
            assert ext.status == 200
            committed = await ac.commit_reservation(rid, commit_body(1_000))
            assert strict(CommitResponse, committed.body).charged.amount == 1_000
            results = await asyncio.gather(*(ac.create_reservation(reserve_body(10)) for _ in range(20)))
            assert all(r.status == 200 for r in results)

    asyncio.run(run())


def test_runcycles_decorator_end_to_end(client: CyclesClient, authority: LocalAuthority) -> None:
    from runcycles import cycles

    @cycles(estimate=5_000, actual=lambda result: 1_234, action_kind="llm.completion", action_name="m",
            tenant="acme", workspace="prod", client=client)  # fmt: skip
    def guarded() -> str:
        return "ok"

    assert guarded() == "ok"
    rows = authority.reservations("acme")
    assert [(r["status"], r["committed"]["amount"]) for r in rows] == [("COMMITTED", 1_234)]
