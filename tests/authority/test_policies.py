# mypy: disable-error-code="index,operator,union-attr"
"""Policies: the admin API over real HTTP, and the caps they put on reserve, dry-run and decide (real runcycles).

Expected caps and matches come from what each test configured, never from what the authority echoes back.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from runcycles import CyclesClient
from runcycles.models import DecisionResponse, DryRunResult, ErrorResponse, ReservationCreateResponse

from otel_cycles._cli import main
from otel_cycles.authority import CyclesProtocolError, LocalAuthority
from otel_cycles.authority._policies import (
    EvaluatedPolicy,
    emitted_caps,
    parse_pattern,
    parse_policy_create,
    pattern_matches,
    winning_policy,
)
from otel_cycles.authority._views import iso as render_iso
from otel_cycles.testing import CyclesTenant

from .conftest import FakeClock, config, reserve_body

CAPS = {"max_tokens": 512, "tool_denylist": ["send_email"]}
DEEP = {"tenant": "acme", "workspace": "eng", "workflow": "w", "agent": "a"}  # tenant:acme/workspace:eng/...


def strict(model: Any, body: Any) -> Any:
    """Parse like runcycles' lifecycle does (`model_validate_json(..., strict=True)`, extra fields forbidden)."""
    return model.model_validate_json(json.dumps(body), strict=True)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat()


def reserve(client: CyclesClient, subject: dict[str, str], amount: int = 1_000, **extra: Any) -> dict[str, Any]:
    resp = client.create_reservation(reserve_body(amount, subject=subject, **extra))
    assert resp.status == 200 and resp.body is not None, resp.body
    return resp.body


def caps_of(client: CyclesClient, subject: dict[str, str]) -> dict[str, Any] | None:
    """The caps a live reservation for `subject` gets, after checking runcycles parses the body strictly."""
    body = reserve(client, subject)
    parsed = strict(ReservationCreateResponse, body)
    assert (parsed.caps is not None) == (body["decision"] == "ALLOW_WITH_CAPS") == ("caps" in body)
    return body.get("caps")


def assert_error(resp: httpx.Response, status: int, code: str = "INVALID_REQUEST") -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    ErrorResponse.model_validate(body, strict=True)
    assert body["error"] == code and body["message"], body


@pytest.fixture(autouse=True)
def budgets(authority: LocalAuthority) -> Any:
    authority.create_budget("tenant:acme", 10_000_000)
    authority.create_budget("tenant:other", 10_000_000)
    yield
    assert authority.check_invariants() == []


def tenant_http(authority: LocalAuthority, tenant: str, permissions: list[str]) -> httpx.Client:
    """An httpx client with a fresh API key of `tenant` holding `permissions`."""
    secret = authority.create_api_key(tenant, permissions=permissions)
    return httpx.Client(base_url=authority.base_url, headers={"X-Cycles-API-Key": secret})


# ---- the pure rules


@pytest.mark.parametrize(
    ("pattern", "scope", "matches"),
    [
        ("tenant:acme", "tenant:acme", True),
        ("tenant:acme", "tenant:acme/agent:a", False),
        ("tenant:acme/workspace:eng", "tenant:acme/workspace:eng", True),
        ("tenant:acme/*", "tenant:acme/workspace:eng/agent:a", True),
        ("tenant:acme/*", "tenant:acme", False),  # descendants only
        ("tenant:acme/workspace:eng/*", "tenant:acme/workspace:ops/agent:a", False),
        ("agent:*", "tenant:acme/agent:a", True),
        ("agent:*", "tenant:acme/workspace:eng/workflow:w/agent:a", True),
        ("agent:*", "tenant:acme/agent:a/toolset:t", False),  # the deepest scope is the toolset
        ("agent:*/*", "tenant:acme/agent:a/toolset:t", True),
        ("agent:*", "tenant:acme/workspace:eng", False),
        ("*/agent:a", "tenant:acme/workflow:w/agent:a", True),
        ("*/agent:a", "tenant:acme/workflow:w/agent:b", False),
        ("workflow:w/agent:a", "tenant:acme/workspace:x/workflow:w/agent:a", True),
        ("workflow:w/agent:a", "tenant:acme/workflow:w/toolset:t", False),
        ("tenant:acme/agent:*", "tenant:acme/agent:z", True),
        ("tenant:acme/agent:*", "tenant:acme/workflow:w/agent:z", False),  # anchored levels are positional
        ("tenant:*/workspace:eng", "tenant:acme/workspace:eng", True),
        ("*", "tenant:acme/agent:a", True),
    ],
)
def test_pattern_matching(pattern: str, scope: str, matches: bool) -> None:
    assert pattern_matches(parse_pattern(pattern, "acme"), scope) is matches


@pytest.mark.parametrize(
    "pattern",
    ["", "*/*", "tenant:acme/*/agent:a", "agent:a*", "agent", "agent:", "colour:red", "agent:a/workspace:w",
     "*/tenant:acme", "agent:A B", "tenant:acme//agent:a", "/tenant:acme"],
)  # fmt: skip
def test_malformed_patterns_are_rejected(pattern: str) -> None:
    with pytest.raises(Exception) as info:
        parse_pattern(pattern, "acme")
    assert getattr(info.value, "status", None) == 400


def test_pattern_is_canonical_lowercase_and_owned() -> None:
    assert parse_pattern("tenant:ACME/agent:Bot/*", "acme") == "tenant:acme/agent:bot/*"
    with pytest.raises(Exception) as info:
        parse_pattern("tenant:other/*", "acme")
    assert getattr(info.value, "status", None) == 403


_SEGMENTS = st.sampled_from(["*", "tenant:acme", "tenant:*", "tenant:other", "workspace:eng", "workflow:*", "agent:a",
                              "agent:*", "toolset:t", "Agent:X", "agent:", "a*", ""])  # fmt: skip
_PATTERNS = st.one_of(st.lists(_SEGMENTS, min_size=1, max_size=5).map("/".join), st.text(max_size=40))
_BELOW = st.sampled_from(["workspace:eng", "app:x", "workflow:w", "agent:a", "agent:b", "toolset:t"])
_SCOPES = st.lists(_BELOW, max_size=4, unique_by=lambda seg: seg.partition(":")[0]).map(
    lambda rest: "/".join(["tenant:acme", *sorted(rest, key=_level_index)])
)


def _level_index(segment: str) -> int:
    return ("tenant", "workspace", "app", "workflow", "agent", "toolset").index(segment.partition(":")[0])


@settings(max_examples=400, deadline=None, database=None)
@given(_PATTERNS, _SCOPES)
def test_any_pattern_text_is_accepted_canonically_or_rejected_with_a_4xx(text: str, scope: str) -> None:
    try:
        pattern = parse_pattern(text, "acme")
    except CyclesProtocolError as exc:
        assert exc.status in (400, 403)
        return
    assert parse_pattern(pattern, "acme") == pattern  # the canonical form is a fixed point
    assert pattern_matches(pattern, scope) in (True, False)
    # Without a tenant segment (a subject without tenant) only the catch-all can match.
    assert pattern == "*" or not pattern_matches(pattern, "agent:a")


_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
_FIELDS = st.sampled_from(["name", "scope_pattern", "priority", "caps", "description", "effective_from",
                           "effective_until", "tenant_id", "status", "rate_limits", "commit_overage_policy",
                           "reservation_ttl_override"])  # fmt: skip
_STAMPS = st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())


@settings(max_examples=400, deadline=None, database=None)
@given(st.dictionaries(_FIELDS, _JSON | _STAMPS, max_size=6))
def test_any_create_body_is_parsed_or_rejected_with_a_400(body: dict[str, Any]) -> None:
    body = {"name": "n", "scope_pattern": "*"} | body
    try:
        fields = parse_policy_create(body)
    except CyclesProtocolError as exc:
        assert exc.status == 400
        return
    for field in ("effective_from", "effective_until"):
        if field in fields:
            render_iso(fields[field])  # whatever was accepted renders in the Policy response


def _policy(pid: str, pattern: str, priority: int, created: int = 0,
            window: tuple[int | None, int | None] = (None, None)) -> EvaluatedPolicy:  # fmt: skip
    return EvaluatedPolicy(pid, pattern, priority, "{}", None, None, window[0], window[1], created)


def _winner(policies: list[EvaluatedPolicy], now: int = 0) -> str | None:
    won = winning_policy(policies, "tenant:acme/agent:a", now)
    return None if won is None else won.policy_id


def test_winner_is_highest_priority_then_oldest_and_respects_windows() -> None:
    low, high, other = _policy("low", "agent:*", 1), _policy("high", "*", 5), _policy("other", "agent:b", 9)
    assert _winner([low, high, other]) == "high"
    older, newer = _policy("p9", "*", 5, created=1), _policy("p0", "*", 5, created=2)
    assert _winner([newer, older]) == _winner([older, newer]) == "p9"
    later = _policy("later", "*", 9, window=(100, 200))
    assert [_winner([low, later], t) for t in (99, 100, 199, 200)] == ["low", "later", "later", "low"]
    assert _winner([other]) is None


def test_emitted_caps_drop_empty_tool_lists() -> None:
    # An empty allowlist means "no restriction" in the spec; runcycles would read it as "nothing allowed".
    assert emitted_caps({"tool_allowlist": [], "tool_denylist": ["x"]}) == {"tool_denylist": ["x"]}
    assert emitted_caps({"tool_allowlist": []}) is None and emitted_caps({}) is None
    assert emitted_caps({"max_tokens": 0, "tool_allowlist": ["a"]}) == {"max_tokens": 0, "tool_allowlist": ["a"]}


# ---- caps on decisions, over HTTP with the runcycles client


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("tenant:acme/workspace:eng/workflow:w/agent:a", DEEP, True),  # exact
        ("tenant:acme/workspace:eng/workflow:w/agent:b", DEEP, False),
        ("tenant:acme/workspace:eng/*", DEEP, True),  # prefix/*
        ("tenant:acme/workspace:ops/*", DEEP, False),
        ("tenant:acme/*", {"tenant": "acme"}, False),  # prefix/* excludes the prefix itself
        ("agent:*", DEEP, True),  # any agent
        ("agent:*", {"tenant": "acme", "workspace": "eng"}, False),
        ("*/agent:a", DEEP, True),  # that agent anywhere
        ("*/agent:a", {**DEEP, "agent": "b"}, False),
        ("tenant:acme", {"tenant": "acme"}, True),
        ("*", {"tenant": "acme", "toolset": "t"}, True),
    ],
)
def test_reserve_caps_by_scope_pattern(
    authority: LocalAuthority, client: CyclesClient, pattern: str, subject: dict[str, str], matches: bool
) -> None:
    authority.create_policy("acme", pattern, CAPS)
    assert caps_of(client, subject) == (CAPS if matches else None)


def test_subject_case_is_canonicalized_before_matching(authority: LocalAuthority, client: CyclesClient) -> None:
    authority.create_policy("acme", "*/agent:bot", CAPS)
    assert caps_of(client, {"tenant": "acme", "agent": "Bot"}) == CAPS


def test_overage_and_ttl_overrides_apply_to_new_reservations(
    authority: LocalAuthority, client: CyclesClient, clock: FakeClock
) -> None:
    authority.create_policy("acme", "agent:*", None, name="strict", priority=1, commit_overage_policy="REJECT",
                            reservation_ttl_override={"default_ttl_ms": 5_000, "max_ttl_ms": 10_000,
                                                      "max_extensions": 0})  # fmt: skip
    authority.create_policy("acme", "*", CAPS, name="caps below")  # a policy without caps hides no caps
    created = reserve(client, DEEP)
    assert created["caps"] == CAPS and created["remaining_ttl_ms"] == 5_000
    assert created["expires_at_ms"] == clock.now + 5_000
    assert reserve(client, DEEP, ttl_ms=60_000)["remaining_ttl_ms"] == 10_000  # capped at max_ttl_ms
    over = client.commit_reservation(
        created["reservation_id"], {"idempotency_key": "c1", "actual": {"unit": "USD_MICROCENTS", "amount": 1_001}}
    )
    assert over.status == 409 and over.body["error"] == "BUDGET_EXCEEDED"  # REJECT from the policy
    extend = client.extend_reservation(created["reservation_id"], {"idempotency_key": "e1", "extend_by_ms": 1_000})
    assert extend.status == 409 and extend.body["error"] == "MAX_EXTENSIONS_EXCEEDED"
    # The request's own overage policy still wins; scopes the policy does not match keep the defaults.
    own = reserve(client, DEEP, overage_policy="ALLOW_IF_AVAILABLE")
    ok = client.commit_reservation(
        own["reservation_id"], {"idempotency_key": "c2", "actual": {"unit": "USD_MICROCENTS", "amount": 1_001}}
    )
    assert ok.status == 200, ok.body
    assert reserve(client, {"tenant": "acme", "workspace": "eng"})["remaining_ttl_ms"] == 60_000
    for rid in (created["reservation_id"],):
        client.release_reservation(rid, {"idempotency_key": f"r-{rid}"})
    policy = authority.policies("acme")[0]
    assert policy["commit_overage_policy"] == "REJECT" and policy["reservation_ttl_override"]["max_extensions"] == 0
    assert_policy(policy)


def test_highest_priority_wins_and_updates_take_effect(authority: LocalAuthority, client: CyclesClient) -> None:
    broad = authority.create_policy("acme", "tenant:acme/*", {"max_tokens": 100}, priority=1)
    narrow = authority.create_policy("acme", "*/agent:a", {"max_tokens": 200}, priority=5)
    assert caps_of(client, DEEP) == {"max_tokens": 200}
    assert caps_of(client, {**DEEP, "agent": "b"}) == {"max_tokens": 100}
    authority.update_policy(broad["policy_id"], priority=9)
    assert caps_of(client, DEEP) == {"max_tokens": 100}
    authority.update_policy(broad["policy_id"], status="DISABLED")
    assert caps_of(client, DEEP) == {"max_tokens": 200}
    authority.update_policy(narrow["policy_id"], caps={"max_steps_remaining": 3})  # caps are replaced whole
    assert caps_of(client, DEEP) == {"max_steps_remaining": 3}
    # A higher-priority policy without caps (name only) does not hide the caps of the one below.
    authority.create_policy("acme", "*", None, name="no caps", priority=99)
    assert caps_of(client, DEEP) == {"max_steps_remaining": 3}


def test_effective_dates(authority: LocalAuthority, client: CyclesClient, clock: FakeClock) -> None:
    start, end = clock.now + 60_000, clock.now + 120_000
    authority.create_policy("acme", "agent:*", CAPS, effective_from=iso(start), effective_until=iso(end))
    assert caps_of(client, DEEP) is None
    clock.advance(60_000)
    assert caps_of(client, DEEP) == CAPS
    clock.advance(59_999)
    assert caps_of(client, DEEP) == CAPS
    clock.advance(1)  # effective_until is exclusive
    assert caps_of(client, DEEP) is None


def test_caps_on_dry_run_and_decide_parse_and_gate_tools(authority: LocalAuthority, client: CyclesClient) -> None:
    authority.create_policy("acme", "agent:*", {"tool_allowlist": ["search"], "cooldown_ms": 10})
    dry = client.create_reservation(reserve_body(1_000, subject=DEEP, dry_run=True))
    assert dry.status == 200 and dry.body["decision"] == "ALLOW_WITH_CAPS"
    parsed_dry = strict(DryRunResult, dry.body)
    assert "reservation_id" not in dry.body and authority.reservations("acme") == []
    decided = client.decide({k: v for k, v in reserve_body(1_000, subject=DEEP).items()})
    parsed_decide = strict(DecisionResponse, decided.body)
    assert decided.status == 200 and decided.body["decision"] == "ALLOW_WITH_CAPS"
    for caps in (parsed_dry.caps, parsed_decide.caps):
        assert caps.is_tool_allowed("search") and not caps.is_tool_allowed("send_email") and caps.cooldown_ms == 10
    live = strict(ReservationCreateResponse, reserve(client, DEEP))
    assert live.caps.is_tool_allowed("search") and not live.caps.is_tool_allowed("delete")
    # Without a matching policy: plain ALLOW, no caps key at all.
    for resp in (
        client.create_reservation(reserve_body(1_000, subject={"tenant": "acme"}, dry_run=True)),
        client.decide(reserve_body(1_000, subject={"tenant": "acme"})),
        client.create_reservation(reserve_body(1_000, subject={"tenant": "acme"})),
    ):
        assert resp.body["decision"] == "ALLOW" and "caps" not in resp.body


def test_denials_never_carry_caps(authority: LocalAuthority, client: CyclesClient) -> None:
    authority.create_policy("acme", "*", CAPS)
    too_much = 10**12
    dry = client.create_reservation(reserve_body(too_much, subject=DEEP, dry_run=True))
    assert dry.body["decision"] == "DENY" and dry.body["reason_code"] == "BUDGET_EXCEEDED" and "caps" not in dry.body
    decided = client.decide(reserve_body(too_much, subject=DEEP))
    assert decided.body["decision"] == "DENY" and "caps" not in decided.body
    strict(DecisionResponse, decided.body)
    live = client.create_reservation(reserve_body(too_much, subject=DEEP))
    assert live.status == 409 and live.body["error"] == "BUDGET_EXCEEDED" and "caps" not in live.body


def test_replay_returns_the_original_caps(authority: LocalAuthority, client: CyclesClient) -> None:
    policy = authority.create_policy("acme", "agent:*", CAPS)
    body = reserve_body(1_000, subject=DEEP)
    decide_body = reserve_body(1_000, subject=DEEP)
    first, first_decide = client.create_reservation(body), client.decide(decide_body)
    authority.update_policy(policy["policy_id"], status="DISABLED")
    again, again_decide = client.create_reservation(body), client.decide(decide_body)
    assert again.body["caps"] == first.body["caps"] == CAPS and again.body["reservation_id"] == first.body[
        "reservation_id"]  # fmt: skip
    assert again_decide.body == first_decide.body and first_decide.body["caps"] == CAPS
    assert caps_of(client, DEEP) is None  # a fresh key sees the disabled policy


def test_another_tenants_policy_never_applies(authority: LocalAuthority, client: CyclesClient) -> None:
    authority.create_policy("other", "*", CAPS)
    authority.create_policy("other", "agent:*", CAPS)
    assert caps_of(client, DEEP) is None


def test_policies_survive_a_restart(tmp_path: Any) -> None:
    db = str(tmp_path / "ledger.db")
    with LocalAuthority(db) as first:
        first.create_tenant("acme")
        first.create_budget("tenant:acme", 1_000_000)
        first.create_policy("acme", "agent:*", CAPS)
        secret = first.create_api_key("acme")
    with LocalAuthority(db) as second, CyclesClient(config(second, secret)) as client:
        assert caps_of(client, DEEP) == CAPS
        assert [p["caps"] for p in second.policies("acme")] == [CAPS]


def test_cycles_tenant_fixture_creates_policies(cycles_tenant: CyclesTenant) -> None:
    policy = cycles_tenant.create_policy(cycles_tenant.scope("agent:bot"), CAPS, priority=2)
    assert policy["scope_pattern"] == f"tenant:{cycles_tenant.id}/agent:bot" and policy["priority"] == 2
    assert caps_of(cycles_tenant.client, {"tenant": cycles_tenant.id, "agent": "bot"}) == CAPS
    assert caps_of(cycles_tenant.client, {"tenant": cycles_tenant.id, "agent": "other"}) is None


# ---- the admin API: shapes, validation, auth, isolation


_POLICY_KEYS = {"policy_id", "name", "description", "scope_pattern", "priority", "caps", "commit_overage_policy",
                "reservation_ttl_override", "rate_limits", "status", "effective_from", "effective_until",
                "created_at", "updated_at"}  # fmt: skip


def assert_policy(body: dict[str, Any]) -> None:
    """The admin `Policy` schema: required fields present, nothing outside it (`additionalProperties: false`)."""
    assert {"policy_id", "scope_pattern", "status", "created_at"} <= set(body) <= _POLICY_KEYS, body
    assert body["status"] in ("ACTIVE", "DISABLED") and body["priority"] >= 0


def test_admin_create_get_patch_list(authority: LocalAuthority, admin: httpx.Client, clock: FakeClock) -> None:
    body = {"tenant_id": "acme", "name": "eng default", "scope_pattern": "tenant:acme/workspace:eng/*",
            "priority": 10, "caps": {"max_tokens": 4096, "max_steps_remaining": 10}, "description": "d",
            "effective_from": iso(clock.now), "effective_until": iso(clock.now + 86_400_000)}  # fmt: skip
    created = admin.post("/v1/admin/policies", json=body)
    assert created.status_code == 201, created.text
    policy = created.json()
    assert_policy(policy)
    assert policy["status"] == "ACTIVE" and policy["caps"] == body["caps"] and policy["priority"] == 10
    assert policy["scope_pattern"] == body["scope_pattern"] and policy["name"] == "eng default"
    pid = policy["policy_id"]
    assert admin.get(f"/v1/admin/policies/{pid}").json() == policy
    patched = admin.patch(f"/v1/admin/policies/{pid}", json={"status": "DISABLED", "priority": 3})
    assert patched.status_code == 200 and patched.json()["status"] == "DISABLED" and patched.json()["priority"] == 3
    assert_policy(patched.json())
    second = admin.post("/v1/admin/policies", json={"tenant_id": "acme", "name": "b", "scope_pattern": "agent:*"})
    assert second.status_code == 201 and "caps" not in second.json() and second.json()["priority"] == 0
    listed = admin.get("/v1/admin/policies", params={"tenant_id": "acme"}).json()
    assert [p["name"] for p in listed["policies"]] == ["eng default", "b"] and listed["has_more"] is False
    only_active = admin.get("/v1/admin/policies", params={"tenant_id": "acme", "status": "ACTIVE"}).json()
    assert [p["name"] for p in only_active["policies"]] == ["b"]
    by_pattern = admin.get("/v1/admin/policies", params={"tenant_id": "acme", "scope_pattern": "agent:*"}).json()
    assert [p["name"] for p in by_pattern["policies"]] == ["b"]
    page = admin.get("/v1/admin/policies", params={"tenant_id": "acme", "limit": 1}).json()
    assert page["has_more"] is True and [p["name"] for p in page["policies"]] == ["eng default"]
    rest = admin.get("/v1/admin/policies", params={"tenant_id": "acme", "limit": 1, "cursor": page["next_cursor"]})
    assert [p["name"] for p in rest.json()["policies"]] == ["b"] and rest.json()["has_more"] is False
    # Extension filters of v0.1.26 are ignored without error, as the spec requires.
    ext = admin.get("/v1/admin/policies", params={"tenant_id": "acme", "has_action_quotas": "true"})
    assert ext.status_code == 200 and len(ext.json()["policies"]) == 2
    assert admin.get("/v1/admin/policies", params={"tenant_id": "other"}).json()["policies"] == []
    filtered = admin.get("/v1/admin/policies", params={"tenant_id": "acme", "scope_pattern": "tenant:other/*"})
    assert filtered.status_code == 200 and filtered.json()["policies"] == []


def test_duplicate_names_conflict(authority: LocalAuthority, admin: httpx.Client) -> None:
    body = {"tenant_id": "acme", "name": "same", "scope_pattern": "*"}
    assert admin.post("/v1/admin/policies", json=body).status_code == 201
    assert_error(admin.post("/v1/admin/policies", json=body), 409, "DUPLICATE_RESOURCE")
    assert admin.post("/v1/admin/policies", json={**body, "tenant_id": "other"}).status_code == 201  # per tenant
    other = admin.post("/v1/admin/policies", json={**body, "name": "second"}).json()
    assert_error(admin.patch(f"/v1/admin/policies/{other['policy_id']}", json={"name": "same"}), 409,
                 "DUPLICATE_RESOURCE")  # fmt: skip


_VALID = {"tenant_id": "acme", "name": "n", "scope_pattern": "agent:*"}
BAD_CREATES: list[Any] = [
    [],
    "x",
    {k: v for k, v in _VALID.items() if k != "name"},
    {k: v for k, v in _VALID.items() if k != "scope_pattern"},
    {k: v for k, v in _VALID.items() if k != "tenant_id"},  # admin key needs tenant_id
    {**_VALID, "colour": "red"},
    {**_VALID, "name": ""},
    {**_VALID, "name": "x" * 257},
    {**_VALID, "name": 5},
    {**_VALID, "description": "x" * 1025},
    {**_VALID, "scope_pattern": "agent:a*"},
    {**_VALID, "scope_pattern": 7},
    {**_VALID, "scope_pattern": "*/tenant:acme"},
    {**_VALID, "priority": -1},
    {**_VALID, "priority": 1.5},
    {**_VALID, "priority": True},
    {**_VALID, "priority": "1"},
    {**_VALID, "caps": []},
    {**_VALID, "caps": {"max_tokens": -1}},
    {**_VALID, "caps": {"max_tokens": "512"}},
    {**_VALID, "caps": {"max_tokens": 2**63}},
    {**_VALID, "caps": {"max_tokens": None}},
    {**_VALID, "caps": {"tool_denylist": "send_email"}},
    {**_VALID, "caps": {"tool_denylist": [1]}},
    {**_VALID, "caps": {"tool_allowlist": ["x" * 257]}},
    {**_VALID, "caps": {"max_tokens": 1, "colour": "red"}},
    {**_VALID, "effective_from": "yesterday"},
    {**_VALID, "effective_from": "2026-01-01T00:00:00"},  # no offset
    {**_VALID, "effective_from": 1700000000000},
    {**_VALID, "effective_from": "0001-01-01T00:00:00+01:00"},  # before year 1 in UTC: not renderable
    {**_VALID, "effective_until": "9999-12-31T23:59:59-14:00"},  # after year 9999 in UTC
    {**_VALID, "effective_until": "2026-01-01T00:00:00+25:00"},
    {**_VALID, "effective_from": "2026-01-02T00:00:00Z", "effective_until": "2026-01-01T00:00:00Z"},
    {**_VALID, "rate_limits": {"max_reservations_per_minute": 10}},  # not enforced here: refused, not ignored
    {**_VALID, "commit_overage_policy": "NOPE"},
    {**_VALID, "commit_overage_policy": ["REJECT"]},
    {**_VALID, "reservation_ttl_override": {"max_ttl_ms": 999}},
    {**_VALID, "reservation_ttl_override": {"default_ttl_ms": 86_400_001}},
    {**_VALID, "reservation_ttl_override": {"max_extensions": -1}},
    {**_VALID, "reservation_ttl_override": {"max_extensions": "2"}},
    {**_VALID, "reservation_ttl_override": {"colour": 1}},
    {**_VALID, "reservation_ttl_override": []},
    {**_VALID, "status": "ACTIVE"},  # not a create field
]


@pytest.mark.parametrize("body", BAD_CREATES)
def test_bad_create_bodies_are_400(authority: LocalAuthority, admin: httpx.Client, body: Any) -> None:
    assert_error(admin.post("/v1/admin/policies", json=body), 400)
    assert authority.policies("acme") == []


@pytest.mark.parametrize(
    "body",
    [{"scope_pattern": "*"}, {"status": "PAUSED"}, {"priority": -3}, {"caps": {"max_steps_remaining": -1}},
     {"effective_until": "2000-01-01T00:00:00Z"}, {"name": None}, {"tenant_id": "acme"}, [], {"caps": None}],
)  # fmt: skip
def test_bad_patch_bodies_are_400(authority: LocalAuthority, admin: httpx.Client, body: Any) -> None:
    policy = authority.create_policy("acme", "agent:*", CAPS, effective_from="2001-01-01T00:00:00Z")
    assert_error(admin.patch(f"/v1/admin/policies/{policy['policy_id']}", json=body), 400)
    assert authority.policies("acme") == [policy]


def test_malformed_requests_are_4xx(authority: LocalAuthority, admin: httpx.Client) -> None:
    assert_error(admin.post("/v1/admin/policies", content=b"{nope"), 400)
    assert_error(admin.post("/v1/admin/policies"), 400)
    assert_error(admin.get("/v1/admin/policies"), 400)  # admin needs tenant_id
    for params in ({"limit": "0"}, {"limit": "x"}, {"status": "NOPE"}, {"cursor": "%%%"}, {"scope_pattern": "a*"}):
        assert_error(admin.get("/v1/admin/policies", params={"tenant_id": "acme", **params}), 400)
    assert_error(admin.get("/v1/admin/policies/pol_missing"), 404, "NOT_FOUND")
    assert_error(admin.patch("/v1/admin/policies/pol_missing", json={"priority": 1}), 404, "NOT_FOUND")
    assert_error(admin.delete("/v1/admin/policies/pol_missing"), 405)
    assert_error(admin.post("/v1/admin/policies", json={**_VALID, "tenant_id": "nobody"}), 400, "TENANT_NOT_FOUND")


def test_auth_and_permissions(authority: LocalAuthority, api_key: str) -> None:
    anonymous = httpx.Client(base_url=authority.base_url)
    assert_error(anonymous.post("/v1/admin/policies", json=_VALID), 401, "UNAUTHORIZED")
    assert_error(anonymous.get("/v1/admin/policies", params={"tenant_id": "acme"}), 401, "UNAUTHORIZED")
    # The default runtime key has no policies:* permission.
    runtime = httpx.Client(base_url=authority.base_url, headers={"X-Cycles-API-Key": api_key})
    mine = {"name": "n", "scope_pattern": "agent:*", "caps": CAPS}
    assert_error(runtime.post("/v1/admin/policies", json=mine), 403, "INSUFFICIENT_PERMISSIONS")
    assert_error(runtime.get("/v1/admin/policies"), 403, "INSUFFICIENT_PERMISSIONS")
    reader = tenant_http(authority, "acme", ["policies:read"])
    assert_error(reader.post("/v1/admin/policies", json=mine), 403, "INSUFFICIENT_PERMISSIONS")
    writer = tenant_http(authority, "acme", ["policies:write"])
    assert_error(writer.post("/v1/admin/policies", json={**mine, "tenant_id": "acme"}), 400)  # tenant inferred
    created = writer.post("/v1/admin/policies", json=mine)
    assert created.status_code == 201 and authority.policies("acme") == [created.json()]
    assert_error(writer.get("/v1/admin/policies"), 403, "INSUFFICIENT_PERMISSIONS")  # write does not imply read
    assert reader.get("/v1/admin/policies").json()["policies"] == [created.json()]
    # admin:write satisfies *:write and admin:read *:read; admin:read never satisfies a write.
    admin_writer = tenant_http(authority, "acme", ["admin:write"])
    assert admin_writer.post("/v1/admin/policies", json={**mine, "name": "m"}).status_code == 201
    admin_reader = tenant_http(authority, "acme", ["admin:read"])
    assert len(admin_reader.get("/v1/admin/policies").json()["policies"]) == 2
    assert_error(admin_reader.post("/v1/admin/policies", json={**mine, "name": "o"}), 403, "INSUFFICIENT_PERMISSIONS")


def test_tenant_isolation(authority: LocalAuthority, admin: httpx.Client) -> None:
    acme = tenant_http(authority, "acme", ["policies:read", "policies:write"])
    other = tenant_http(authority, "other", ["policies:read", "policies:write"])
    theirs = authority.create_policy("other", "agent:*", CAPS)
    pid = theirs["policy_id"]
    assert_error(acme.get(f"/v1/admin/policies/{pid}"), 404, "NOT_FOUND")
    assert_error(acme.patch(f"/v1/admin/policies/{pid}", json={"status": "DISABLED"}), 404, "NOT_FOUND")
    # A tenant key lists its own tenant's policies whatever tenant_id it asks for (the spec: ignored).
    assert acme.get("/v1/admin/policies", params={"tenant_id": "other"}).json()["policies"] == []
    assert_error(acme.post("/v1/admin/policies", json={"name": "x", "scope_pattern": "tenant:other/*"}), 403,
                 "FORBIDDEN")  # fmt: skip
    assert other.get(f"/v1/admin/policies/{pid}").json() == theirs
    assert other.patch(f"/v1/admin/policies/{pid}", json={"caps": {}}).json()["caps"] == {}
    assert authority.policies("other")[0]["caps"] == {} and authority.policies("acme") == []


def test_closed_tenant_policies_are_read_only(authority: LocalAuthority, admin: httpx.Client) -> None:
    policy = authority.create_policy("acme", "agent:*", CAPS)
    authority.set_tenant_status("acme", "CLOSED")
    assert_error(admin.post("/v1/admin/policies", json=_VALID), 409, "TENANT_CLOSED")
    pid = policy["policy_id"]
    assert_error(admin.patch(f"/v1/admin/policies/{pid}", json={"priority": 2}), 409, "TENANT_CLOSED")
    assert admin.get(f"/v1/admin/policies/{pid}").json() == policy


def test_cli_policy_create_and_list(authority: LocalAuthority, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--url", authority.base_url, "--admin-key", authority.admin_key]
    argv = ["authority", "policy", "create", "acme", "agent:*", "--priority", "4", "--max-tokens", "256", "--json",
            "--deny-tool", "send_email", "--deny-tool", "rm", "--caps", '{"cooldown_ms": 5}', *common]  # fmt: skip
    assert main(argv) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["caps"] == {"cooldown_ms": 5, "max_tokens": 256, "tool_denylist": ["send_email", "rm"]}
    assert created["priority"] == 4 and created["scope_pattern"] == "agent:*"
    assert authority.policies("acme") == [created]  # stored as the CLI said
    assert main(["authority", "policy", "list", "acme", "--json", *common]) == 0
    assert json.loads(capsys.readouterr().out) == [created]
    assert main(["authority", "policy", "list", "acme", *common]) == 0  # the table for people
    table = capsys.readouterr().out
    assert "agent:*" in table and "max_tokens=256" in table
    assert main(["authority", "policy", "create", "acme", "agent:a*", *common]) == 1  # 400 from the server
    out, err = capsys.readouterr()
    assert out == "" and "INVALID_REQUEST" in err and err.count("\n") == 1
    assert main(["authority", "policy", "create", "acme", "agent:*", "--caps", "[1]", *common]) == 2  # usage
    assert "--caps must be a JSON object" in capsys.readouterr().err
