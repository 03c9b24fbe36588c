"""`otel-cycles doctor`: check that a Cycles deployment will govern this agent, without changing its ledger.

`diagnose(settings)` returns a list of `Check`s (data); `otel_cycles._doctor_cli` renders them as a table or JSON.
Only reads, a dry-run reservation and a decision are sent, so balances and reservations are never changed. The
checks, in order: configuration; reachability and latency; the API key (its tenant, from `X-Cycles-Tenant`); its
permissions (`GET /v1/auth/introspect` where the server offers it, else inferred from which calls succeed); a budget at
every scope the callback charges (the dry run's `affected_scopes`) and what is left; the dry run and the decision
(with any caps), each parsed with runcycles' strict models; and the server's clock (HTTP `Date`: a dry run or a
decision carries no `expires_at_ms`, only a real reservation does, and making one would change the ledger).
"""

from __future__ import annotations

import json
import os
import statistics
import time
import uuid
from dataclasses import asdict, dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ValidationError
from runcycles import BalanceResponse, DecisionResponse, ReservationCreateResponse, ReservationListResponse
from runcycles.lifecycle import _schema_valid_create
from runcycles.response import CyclesResponse

from otel_cycles._tables import amount

__all__ = ["Check", "DoctorSettings", "Status", "as_json", "diagnose", "exit_code", "settings_from_env"]

Status = Literal["ok", "warn", "fail"]

SUBJECT_LEVELS = ("tenant", "workspace", "app", "workflow", "agent", "toolset")
RUNTIME_PERMISSIONS = ("reservations:create", "reservations:commit", "reservations:release", "reservations:extend")
"""What the callback needs; `balances:read` and `reservations:list` only enrich denials and are reported if absent."""
LATENCY_WARN_MS = 200.0
"""Every tool call (and each run's first LLM call) waits one round trip to the authority; more than this is felt."""
CLOCK_WARN_S = 5.0
"""HTTP `Date` has one-second resolution and may be cached for a second: skews below this are noise."""


@dataclass(frozen=True)
class Check:
    """One finding: what was checked, its status, what was seen, and for a problem the one-line fix."""

    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass
class DoctorSettings:
    """What the callback would use: connection and subject (flags override `CYCLES_*` variables)."""

    base_url: str
    api_key: str
    tenant: str | None = None
    workspace: str | None = None
    app: str | None = None
    workflow: str | None = None
    agent: str | None = None
    toolset: str | None = None
    admin_url: str | None = None
    """Where to ask `GET /v1/auth/introspect` (the reference serves it on its admin plane); default the base URL."""
    unit: str = "USD_MICROCENTS"
    estimate: int = 1
    """Amount the dry run and the decision ask for; pass your largest call's estimate to check that it fits."""
    timeout_s: float = 5.0
    samples: int = 3

    def subject(self, tenant: str | None) -> dict[str, str]:
        values = {level: getattr(self, level) for level in SUBJECT_LEVELS[1:]}
        return {k: v for k, v in ({"tenant": tenant} | values).items() if v}


def settings_from_env(overrides: dict[str, Any] | None = None) -> DoctorSettings:
    """Settings from `CYCLES_BASE_URL`, `CYCLES_API_KEY`, `CYCLES_TENANT` … `CYCLES_TOOLSET` (as
    `runcycles.CyclesConfig.from_env` reads them), each overridden by a non-None entry of `overrides`."""
    values: dict[str, Any] = {
        "base_url": os.environ.get("CYCLES_BASE_URL", ""),
        "api_key": os.environ.get("CYCLES_API_KEY", ""),
        **{level: os.environ.get(f"CYCLES_{level.upper()}") or None for level in SUBJECT_LEVELS},
    }
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return DoctorSettings(**values)


def exit_code(checks: list[Check]) -> int:
    """0: no problem; 1: a problem (fail or warn); 2: no URL or API key to check; 3: the authority is unreachable."""
    failed = {c.name for c in checks if c.status == "fail"}
    if "settings" in failed:
        return 2
    if "reachable" in failed:
        return 3
    return 1 if any(c.status in ("fail", "warn") for c in checks) else 0


@dataclass
class _Reply:
    status: int
    body: Any
    headers: httpx.Headers
    elapsed_ms: float
    local_mid_ms: float


@dataclass
class _Probe:
    """The HTTP side: every request timed, every `Date` header kept for the clock check."""

    settings: DoctorSettings
    http: httpx.Client
    replies: list[_Reply] = field(default_factory=list)
    granted: dict[str, bool] = field(default_factory=dict)
    """Permission -> whether a call needing it was accepted (when no introspection is available)."""

    def call(self, method: str, url: str, **kwargs: Any) -> _Reply:
        start, t0 = time.time() * 1000, time.perf_counter()
        resp = self.http.request(method, url, headers={"X-Cycles-API-Key": self.settings.api_key}, **kwargs)
        elapsed = (time.perf_counter() - t0) * 1000
        try:
            body: Any = resp.json()
        except ValueError:
            body = None
        reply = _Reply(resp.status_code, body, resp.headers, elapsed, start + elapsed / 2)
        self.replies.append(reply)
        return reply


def _ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def _warn(name: str, detail: str, fix: str) -> Check:
    return Check(name, "warn", detail, fix)


def _fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, "fail", detail, fix)


_INCOMPATIBLE = "the server is not Cycles v0 compatible: upgrade it or fix the URL"


def _error(reply: _Reply) -> str:
    body = reply.body if isinstance(reply.body, dict) else {}
    return f"{reply.status} {body.get('error', '')}: {body.get('message', '')}".strip(": ")


def _strict(model: type[BaseModel], body: Any) -> str | None:
    """None when `body` parses with runcycles' strict model, else the first validation error."""
    try:
        model.model_validate_json(json.dumps(body), strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        return f"{model.__name__}: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return None


def _config_checks(s: DoctorSettings) -> list[Check]:
    checks: list[Check] = []
    if not s.base_url.startswith(("http://", "https://")):
        detail = f"base URL {s.base_url!r} has no http:// or https:// scheme"
        checks.append(_fail("settings", detail, "set CYCLES_BASE_URL (or --url) to e.g. http://127.0.0.1:7878"))
    if not s.api_key:
        checks.append(_fail("settings", "no API key", "set CYCLES_API_KEY (or --api-key) to the tenant's key"))
    if not s.tenant:
        detail = "no tenant configured: the callback needs one"
        checks.append(_fail("tenant", detail, "set CYCLES_TENANT (or --tenant) to the API key's tenant"))
    return checks


def diagnose(settings: DoctorSettings, transport: httpx.BaseTransport | None = None) -> list[Check]:
    """Run every check against the authority and return the findings (never raises for server behaviour).

    `transport` is for tests that put a proxy in front of a real server."""
    checks = _config_checks(settings)
    if any(c.name == "settings" for c in checks):
        return checks
    timeout = httpx.Timeout(settings.timeout_s)
    with httpx.Client(base_url=settings.base_url.rstrip("/"), timeout=timeout, transport=transport) as http:
        probe = _Probe(settings, http)
        for step in (_reachable, _key_and_tenant, _budgets, _decide, _permissions, _latency, _clock):
            found, stop = step(probe, checks)
            checks.extend(found)
            if stop:
                break
    return checks


def _reachable(probe: _Probe, _: list[Check]) -> tuple[list[Check], bool]:
    url = probe.settings.base_url
    try:
        reply = probe.call("GET", "/v1/reservations", params={"limit": "1"})
    except httpx.HTTPError as exc:
        detail = f"cannot reach {url}: {type(exc).__name__}: {exc}".rstrip(": ")
        fix = "start the authority (otel-cycles authority serve) or fix CYCLES_BASE_URL / --url"
        return [_fail("reachable", detail, fix)], True
    if reply.status == 404 and not (isinstance(reply.body, dict) and "error" in reply.body):
        detail = f"{url} answers but is not a Cycles server (404 on /v1/reservations)"
        return [_fail("reachable", detail, "point CYCLES_BASE_URL at the Cycles runtime plane")], True
    probe.granted["reservations:list"] = reply.status == 200
    found = [_ok("reachable", f"{url} answered HTTP {reply.status} in {reply.elapsed_ms:.1f} ms")]
    problem = _strict(ReservationListResponse, reply.body) if reply.status == 200 else None
    if problem is not None:
        found.append(_fail("protocol", f"GET /v1/reservations does not parse: {problem}", _INCOMPATIBLE))
    return found, False


def _key_and_tenant(probe: _Probe, _: list[Check]) -> tuple[list[Check], bool]:
    """The reservations read above tells whether the key works and, through `X-Cycles-Tenant`, whose it is."""
    reply = probe.replies[-1]
    s = probe.settings
    if reply.status == 401:
        fix = "create one: otel-cycles authority api-key create <tenant>; set CYCLES_API_KEY"
        return [_fail("api key", f"the API key is refused ({_error(reply)})", fix)], True
    if reply.status >= 400 and reply.status != 403:  # 403: no reservations:list; the later checks still apply
        return [_fail("api key", f"listing reservations failed: {_error(reply)}", "check the server's logs")], True
    key_tenant = reply.headers.get("x-cycles-tenant")
    if key_tenant and s.tenant and key_tenant != s.tenant:
        detail = f"the API key belongs to tenant {key_tenant!r}, not {s.tenant!r}"
        return [_fail("api key", detail, f"use {s.tenant}'s key, or set CYCLES_TENANT={key_tenant}")], True
    check = _ok("api key", f"accepted, tenant {key_tenant!r}" if key_tenant else "accepted (tenant not reported)")
    s.tenant = s.tenant or key_tenant  # with no tenant configured (already a problem), diagnose the key's
    return [check], not s.tenant


def _budgets(probe: _Probe, _: list[Check]) -> tuple[list[Check], bool]:
    """A dry run names the scopes the callback charges (`affected_scopes`); the balances say what each has left."""
    s = probe.settings
    tenant = s.tenant or ""
    body = {
        "idempotency_key": f"otel-cycles-doctor-{uuid.uuid4()}",
        "subject": s.subject(tenant),
        "action": {"kind": "llm.completion", "name": "otel-cycles-doctor"},
        "estimate": {"unit": s.unit, "amount": s.estimate},
        "dry_run": True,
    }
    dry = probe.call("POST", "/v1/reservations", json=body)
    probe.granted["reservations:create"] = dry.status not in (401, 403)
    parsed = _schema_valid_create(CyclesResponse(status=dry.status, body=dry.body))
    checks: list[Check] = []
    balances = _read_balances(probe, tenant, checks)
    scopes = list(parsed.affected_scopes) if parsed is not None else _derive(s.subject(tenant))
    by_scope = {b["scope_path"]: b for b in balances or [] if b["remaining"]["unit"] == s.unit}
    short = None  # the first scope that cannot cover the estimate
    for scope in scopes:
        b = by_scope.get(scope)
        if b is None:
            if by_scope:
                fix = f"otel-cycles authority budget create {scope} <amount>, or drop this level"
                checks.append(_warn(f"budget {scope}", "no budget: calls are not limited at this level", fix))
            continue
        remaining = b["remaining"]["amount"]
        short = short or (scope if remaining < s.estimate else None)
        left = f"{amount(b['remaining'])} left of {amount(b.get('allocated'))}, {amount(b.get('reserved'))} held"
        if remaining <= 0 or b.get("is_over_limit"):
            fix = f"otel-cycles authority budget fund {scope} CREDIT <amount>"
            checks.append(_fail(f"budget {scope}", f"exhausted: {left}", fix))
        else:
            checks.append(_ok(f"budget {scope}", left))
    if balances is not None and not any(scope in by_scope for scope in scopes):
        path = scopes[-1] if scopes else f"tenant:{tenant}"
        detail = f"no {s.unit} budget at any of {', '.join(scopes) or path}: every call would be refused"
        checks.append(_fail("budgets", detail, f"otel-cycles authority budget create {path} <amount>"))
    checks.append(_dry_run_check(dry, parsed, s, short or (scopes[-1] if scopes else f"tenant:{tenant}")))
    return checks, False


def _derive(subject: dict[str, str]) -> list[str]:
    """The scopes of `subject` as the protocol derives them (gaps skipped, values lowercased)."""
    parts = [f"{level}:{subject[level].lower()}" for level in SUBJECT_LEVELS if level in subject]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _read_balances(probe: _Probe, tenant: str, checks: list[Check]) -> list[dict[str, Any]] | None:
    out: list[dict[str, Any]] = []
    params = {"tenant": tenant, "limit": "100"}
    while True:
        reply = probe.call("GET", "/v1/balances", params=params)
        probe.granted["balances:read"] = reply.status == 200
        if reply.status != 200:
            fix = "give the key balances:read to see what is left (denials then name the scope)"
            checks.append(_warn("balances", f"cannot read balances: {_error(reply)}", fix))
            return None
        problem = _strict(BalanceResponse, reply.body)
        if problem is not None:
            checks.append(_fail("protocol", f"GET /v1/balances does not parse: {problem}", _INCOMPATIBLE))
            return None
        out.extend(reply.body["balances"])
        cursor = reply.body.get("next_cursor")
        if not cursor or not reply.body.get("has_more"):
            return out
        params["cursor"] = cursor


def _caps(body: dict[str, Any]) -> str:
    caps = body.get("caps") or {}
    return ", ".join(f"{k}={v}" for k, v in caps.items() if v is not None)


def _dry_run_check(dry: _Reply, parsed: ReservationCreateResponse | None, s: DoctorSettings, scope: str) -> Check:
    asked = amount({"unit": s.unit, "amount": s.estimate})
    if parsed is None:
        if dry.status == 200:
            problem = _strict(ReservationCreateResponse, dry.body) or "fields outside the spec or JSON nulls"
            return _fail("dry run", f"the dry-run answer does not parse with runcycles: {problem}", _INCOMPATIBLE)
        if dry.status == 403:
            return _fail("dry run", f"refused: {_error(dry)}", "give the key reservations:create (runtime permissions)")
        code = dry.body.get("error") if isinstance(dry.body, dict) else None
        return _fail("dry run", f"refused: {_error(dry)}", _fix_for(code, scope))
    if parsed.decision.value == "DENY":
        reason = parsed.reason_code or "DENY"
        return _fail("dry run", f"a {asked} call would be denied: {reason}", _fix_for(reason, scope))
    caps = _caps(dry.body)
    if caps:
        return _ok("dry run", f"a {asked} call would be allowed with caps: {caps}")
    return _ok("dry run", f"a {asked} call would be allowed ({parsed.decision.value})")


def _fix_for(code: str | None, scope: str) -> str:
    """The fix for a denial or refusal `code` at `scope`."""
    return {
        "BUDGET_EXCEEDED": f"fund it: otel-cycles authority budget fund {scope} CREDIT <amount>",
        "BUDGET_FROZEN": f"unfreeze it: otel-cycles authority budget unfreeze {scope}",
        "BUDGET_CLOSED": f"create a new budget: otel-cycles authority budget create {scope} <amount>",
        "BUDGET_NOT_FOUND": f"otel-cycles authority budget create {scope} <amount>",
        "NOT_FOUND": f"otel-cycles authority budget create {scope} <amount>",
        "DEBT_OUTSTANDING": f"repay it: otel-cycles authority budget fund {scope} REPAY_DEBT <amount>",
        "OVERDRAFT_LIMIT_EXCEEDED": f"repay it: otel-cycles authority budget fund {scope} REPAY_DEBT <amount>",
        "TENANT_CLOSED": "the tenant is closed: use another tenant",
        "UNIT_MISMATCH": "the budget is in another unit: pass --unit to match it",
    }.get(str(code), "see the server's message")


def _decide(probe: _Probe, checks: list[Check]) -> tuple[list[Check], bool]:
    s = probe.settings
    body = {
        "idempotency_key": f"otel-cycles-doctor-{uuid.uuid4()}",
        "subject": s.subject(s.tenant),
        "action": {"kind": "llm.completion", "name": "otel-cycles-doctor"},
        "estimate": {"unit": s.unit, "amount": s.estimate},
    }
    reply = probe.call("POST", "/v1/decide", json=body)
    if reply.status != 200:
        return [_warn("decide", f"refused: {_error(reply)}", "give the key reservations:create")], False
    problem = _strict(DecisionResponse, reply.body)
    if problem is not None:
        return [_fail("protocol", f"POST /v1/decide does not parse: {problem}", _INCOMPATIBLE)], False
    decision, reason, caps = reply.body["decision"], reply.body.get("reason_code"), _caps(reply.body)
    detail = decision + (f" ({reason})" if reason else "") + (f", caps: {caps}" if caps else "")
    if decision == "DENY":
        dry_fix = next((c.fix for c in checks if c.name == "dry run" and c.fix), _fix_for(reason, "<scope>"))
        return [_fail("decide", detail, dry_fix)], False
    return [_ok("decide", detail)], False


def _permissions(probe: _Probe, _: list[Check]) -> tuple[list[Check], bool]:
    url = (probe.settings.admin_url or probe.settings.base_url).rstrip("/") + "/v1/auth/introspect"
    try:
        reply: _Reply | None = probe.call("GET", url)
    except httpx.HTTPError:
        reply = None
    perms = reply.body.get("permissions") if reply and reply.status == 200 and isinstance(reply.body, dict) else None
    if isinstance(perms, list):
        missing = [p for p in RUNTIME_PERMISSIONS if p not in perms and "*" not in perms]
        detail = f"{', '.join(perms)} (from /v1/auth/introspect)"
        found = [
            _fail("permissions", detail, "grant the runtime permissions") if missing else _ok("permissions", detail)
        ]
        risky = [p for p in perms if p in ("budgets:write", "admin:write", "admin:budgets:write", "*")]
        if risky:
            detail = f"the key can change budgets ({', '.join(risky)}): an agent holding it can fund itself"
            found.append(_warn("permissions", detail, "give agents a key with runtime permissions only"))
        return found, False
    # No introspection for this key: infer from which calls were accepted. Commit, release and extend cannot be tried
    # without a real reservation, which would change the ledger.
    accepted = ", ".join(sorted(p for p, ok in probe.granted.items() if ok)) or "none"
    detail = f"inferred from accepted calls: {accepted} (no /v1/auth/introspect for this key)"
    if probe.granted.get("reservations:create"):
        return [_ok("permissions", detail)], False
    return [_fail("permissions", detail, "create a key with the default runtime permissions")], False


def _latency(probe: _Probe, _: list[Check]) -> tuple[list[Check], bool]:
    n = probe.settings.samples
    samples = [probe.call("GET", "/v1/reservations", params={"limit": "1"}).elapsed_ms for _ in range(n)]
    median = statistics.median(samples)
    detail = f"median {median:.1f} ms over {n} reads (min {min(samples):.1f}, max {max(samples):.1f})"
    if median > LATENCY_WARN_MS:
        return [_warn("latency", detail, "every tool call waits one round trip: run the authority closer")], False
    return [_ok("latency", detail)], False


def _clock(probe: _Probe, _: list[Check]) -> tuple[list[Check], bool]:
    skews = []
    for reply in probe.replies:
        try:
            skews.append(parsedate_to_datetime(reply.headers["date"]).timestamp() * 1000 - reply.local_mid_ms)
        except (KeyError, TypeError, ValueError):
            continue
    if not skews:
        detail = "the server sends no HTTP Date header: its clock cannot be compared"
        return [_warn("clock", detail, "check the server's NTP if reservations expire early")], False
    # Date is truncated to the second, so the true skew lies in [skew, skew + 1 s]: take the median of the midpoints.
    skew_s = statistics.median(skews) / 1000 + 0.5
    detail = f"server clock {abs(skew_s):.1f} s {'ahead of' if skew_s > 0 else 'behind'} ours (HTTP Date, ±1 s)"
    if abs(skew_s) > CLOCK_WARN_S:
        return [_warn("clock", detail, "sync both clocks (NTP): expiry times are server times")], False
    return [_ok("clock", detail)], False


def as_json(checks: list[Check]) -> dict[str, Any]:
    """The findings as one JSON object: `ok` (bool), `exit_code` and `checks` (name, status, detail, fix)."""
    return {"ok": exit_code(checks) == 0, "exit_code": exit_code(checks), "checks": [asdict(c) for c in checks]}
