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
from runcycles import BalanceResponse, DecisionResponse, ReservationCreateResponse
from runcycles.lifecycle import _schema_valid_create
from runcycles.response import CyclesResponse

from otel_cycles._tables import amount

__all__ = ["Check", "DoctorSettings", "Status", "diagnose", "exit_code", "settings_from_env"]

Status = Literal["ok", "warn", "fail", "skip"]

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
        checks.append(
            Check(
                "settings",
                "fail",
                f"base URL {s.base_url!r} has no http:// or https:// scheme",
                "set CYCLES_BASE_URL (or --url) to e.g. http://127.0.0.1:7878",
            )
        )
    if not s.api_key:
        checks.append(Check("settings", "fail", "no API key", "set CYCLES_API_KEY (or --api-key) to the tenant's key"))
    if not s.tenant:
        checks.append(
            Check(
                "tenant",
                "fail",
                "no tenant configured: the callback needs one",
                "set CYCLES_TENANT (or --tenant) to the API key's tenant",
            )
        )
    return checks


def diagnose(settings: DoctorSettings, transport: httpx.BaseTransport | None = None) -> list[Check]:
    """Run every check against the authority and return the findings (never raises for server behaviour)."""
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
        return [Check("reachable", "fail", detail, fix)], True
    if reply.status == 404 and not (isinstance(reply.body, dict) and "error" in reply.body):
        return [
            Check(
                "reachable",
                "fail",
                f"{url} answers but is not a Cycles server (404 on /v1/reservations)",
                "point CYCLES_BASE_URL at the Cycles runtime plane",
            )
        ], True
    probe.granted["reservations:list"] = reply.status == 200
    return [Check("reachable", "ok", f"{url} answered HTTP {reply.status} in {reply.elapsed_ms:.1f} ms")], False


def _key_and_tenant(probe: _Probe, _: list[Check]) -> tuple[list[Check], bool]:
    reply = probe.replies[-1]
    s = probe.settings
    if reply.status == 401:
        return [
            Check(
                "api key",
                "fail",
                f"the API key is refused ({_error(reply)})",
                "create one: otel-cycles authority api-key create <tenant>; set CYCLES_API_KEY",
            )
        ], True
    key_tenant = reply.headers.get("x-cycles-tenant")
    if reply.status >= 400 and reply.status != 403:
        return [
            Check(
                "api key",
                "fail",
                f"listing reservations failed: {_error(reply)}",
                "check the server's logs; the key could not be verified",
            )
        ], True
    if key_tenant is None:
        # No header (a server that does not send it, or 403 without reservations:list): ask balances of our tenant.
        check = Check("api key", "ok", "accepted (tenant not reported by the server)")
    elif s.tenant and key_tenant != s.tenant:
        return [
            Check(
                "api key",
                "fail",
                f"the API key belongs to tenant {key_tenant!r}, not {s.tenant!r}",
                f"use {s.tenant}'s key, or set CYCLES_TENANT={key_tenant}",
            )
        ], True
    else:
        check = Check("api key", "ok", f"accepted, tenant {key_tenant!r}")
    if not s.tenant:
        s.tenant = key_tenant  # diagnose the rest with the key's tenant; the config check already failed
    if not s.tenant:
        return [check], True
    return [check], False


def _budgets(probe: _Probe, _: list[Check]) -> tuple[list[Check], bool]:
    s = probe.settings
    tenant = s.tenant or ""
    checks: list[Check] = []
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
    balances = _read_balances(probe, tenant, checks)
    scopes: list[str] = list(parsed.affected_scopes) if parsed is not None else _derive(s.subject(tenant))
    by_scope = {b["scope_path"]: b for b in balances or [] if b["remaining"]["unit"] == s.unit}
    budgeted = [scope for scope in scopes if scope in by_scope]
    for scope in scopes:
        b = by_scope.get(scope)
        if b is None:
            if balances is not None and budgeted:
                checks.append(
                    Check(
                        f"budget {scope}",
                        "warn",
                        "no budget: calls are not limited at this level",
                        f"otel-cycles authority budget create {scope} <amount>, or drop this level",
                    )
                )
            continue
        left = f"{amount(b.get('remaining'))} left of {amount(b.get('allocated'))}, {amount(b.get('reserved'))} held"
        remaining = (b.get("remaining") or {}).get("amount", 0)
        if remaining <= 0 or b.get("is_over_limit"):
            checks.append(
                Check(
                    f"budget {scope}",
                    "fail",
                    f"exhausted: {left}",
                    f"otel-cycles authority budget fund {scope} CREDIT <amount>",
                )
            )
        else:
            checks.append(Check(f"budget {scope}", "ok", left))
    if balances is not None and not budgeted:
        path = scopes[-1] if scopes else f"tenant:{tenant}"
        checks.append(
            Check(
                "budgets",
                "fail",
                f"no {s.unit} budget at any of {', '.join(scopes) or path}: every call would be refused",
                f"otel-cycles authority budget create {path} <amount>",
            )
        )
    checks.append(_dry_run_check(dry, parsed, s))
    return checks, False


def _derive(subject: dict[str, str]) -> list[str]:
    parts = [f"{level}:{subject[level].lower()}" for level in SUBJECT_LEVELS if level in subject]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _read_balances(probe: _Probe, tenant: str, checks: list[Check]) -> list[dict[str, Any]] | None:
    out: list[dict[str, Any]] = []
    params = {"tenant": tenant, "limit": "200"}
    while True:
        reply = probe.call("GET", "/v1/balances", params=params)
        probe.granted["balances:read"] = reply.status == 200
        if reply.status != 200:
            checks.append(
                Check(
                    "balances",
                    "warn",
                    f"cannot read balances: {_error(reply)}",
                    "give the key balances:read to see what is left (denials then name the scope)",
                )
            )
            return None
        problem = _strict(BalanceResponse, reply.body)
        if problem is not None:
            checks.append(
                Check(
                    "protocol",
                    "fail",
                    f"GET /v1/balances does not parse: {problem}",
                    "the server is not Cycles v0 compatible: upgrade it or fix the URL",
                )
            )
            return None
        out.extend(reply.body["balances"])
        cursor = reply.body.get("next_cursor")
        if not cursor or not reply.body.get("has_more"):
            return out
        params["cursor"] = cursor


def _caps(body: dict[str, Any]) -> str:
    caps = body.get("caps") or {}
    return ", ".join(f"{k}={v}" for k, v in caps.items() if v is not None)


def _dry_run_check(dry: _Reply, parsed: Any, s: DoctorSettings) -> Check:
    asked = amount({"unit": s.unit, "amount": s.estimate})
    if parsed is None:
        if dry.status == 200:
            problem = _strict(ReservationCreateResponse, dry.body) or "fields outside the spec or JSON nulls"
            return Check(
                "dry run",
                "fail",
                f"the dry-run answer does not parse with runcycles: {problem}",
                "the server is not Cycles v0 compatible: upgrade it",
            )
        if dry.status == 403:
            return Check(
                "dry run",
                "fail",
                f"refused: {_error(dry)}",
                "give the key reservations:create (the default runtime permissions)",
            )
        return Check("dry run", "fail", f"refused: {_error(dry)}", _fix_for(dry.body, s))
    if parsed.decision.value == "DENY":
        reason = parsed.reason_code or "DENY"
        return Check("dry run", "fail", f"a {asked} call would be denied: {reason}", _fix_for({"error": reason}, s))
    caps = _caps(dry.body)
    if caps:
        return Check("dry run", "ok", f"a {asked} call would be allowed with caps: {caps}")
    return Check("dry run", "ok", f"a {asked} call would be allowed ({parsed.decision.value})")


def _fix_for(body: Any, s: DoctorSettings) -> str:
    code = body.get("error") if isinstance(body, dict) else None
    scope = _derive(s.subject(s.tenant or ""))[-1] if s.tenant else "<scope>"
    return {
        "BUDGET_EXCEEDED": f"fund the limiting budget: otel-cycles authority budget fund {scope} CREDIT <amount>",
        "BUDGET_FROZEN": f"unfreeze it: otel-cycles authority budget unfreeze {scope}",
        "BUDGET_CLOSED": f"create a new budget: otel-cycles authority budget create {scope} <amount>",
        "BUDGET_NOT_FOUND": f"otel-cycles authority budget create {scope} <amount>",
        "NOT_FOUND": f"otel-cycles authority budget create {scope} <amount>",
        "DEBT_OUTSTANDING": f"repay it: otel-cycles authority budget fund {scope} REPAY_DEBT <amount>",
        "OVERDRAFT_LIMIT_EXCEEDED": f"repay it: otel-cycles authority budget fund {scope} REPAY_DEBT <amount>",
        "TENANT_CLOSED": "the tenant is closed: use another tenant",
        "UNIT_MISMATCH": "the budget is in another unit: pass --unit to match it",
    }.get(str(code), "see the server's message")


def _decide(probe: _Probe, _: list[Check]) -> tuple[list[Check], bool]:
    s = probe.settings
    body = {
        "idempotency_key": f"otel-cycles-doctor-{uuid.uuid4()}",
        "subject": s.subject(s.tenant),
        "action": {"kind": "llm.completion", "name": "otel-cycles-doctor"},
        "estimate": {"unit": s.unit, "amount": s.estimate},
    }
    reply = probe.call("POST", "/v1/decide", json=body)
    if reply.status != 200:
        return [Check("decide", "warn", f"refused: {_error(reply)}", "give the key reservations:create")], False
    problem = _strict(DecisionResponse, reply.body)
    if problem is not None:
        return [
            Check(
                "protocol",
                "fail",
                f"POST /v1/decide does not parse: {problem}",
                "the server is not Cycles v0 compatible: upgrade it",
            )
        ], False
    caps = _caps(reply.body)
    decision = reply.body["decision"]
    detail = f"{decision}" + (f" ({reply.body.get('reason_code')})" if reply.body.get("reason_code") else "")
    detail += f", caps: {caps}" if caps else ""
    if decision == "DENY":
        return [Check("decide", "fail", detail, _fix_for({"error": reply.body.get("reason_code")}, s))], False
    return [Check("decide", "ok", detail)], False


def _permissions(probe: _Probe, checks: list[Check]) -> tuple[list[Check], bool]:
    url = (probe.settings.admin_url or probe.settings.base_url).rstrip("/") + "/v1/auth/introspect"
    try:
        reply = probe.call("GET", url)
    except httpx.HTTPError:
        reply = None
    perms = (
        reply.body.get("permissions")
        if reply is not None and reply.status == 200 and isinstance(reply.body, dict)
        else None
    )
    if isinstance(perms, list):
        missing = [p for p in RUNTIME_PERMISSIONS if p not in perms and "*" not in perms]
        found = [
            Check(
                "permissions",
                "fail" if missing else "ok",
                f"{', '.join(perms)} (from /v1/auth/introspect)",
                "create a key with the default runtime permissions" if missing else "",
            )
        ]
        risky = [p for p in perms if p in ("budgets:write", "admin:write", "admin:budgets:write", "*")]
        if risky:
            found.append(
                Check(
                    "permissions",
                    "warn",
                    f"the key can change budgets ({', '.join(risky)}): an agent holding it can fund itself",
                    "give agents a key with runtime permissions only",
                )
            )
        return found, False
    # No introspection for this key: infer from which calls were accepted. Commit, release and extend cannot be tried
    # without a real reservation, which would change the ledger.
    granted = [p for p, ok in probe.granted.items() if ok]
    accepted = ", ".join(sorted(granted)) or "none"
    detail = f"inferred from accepted calls: {accepted} (no /v1/auth/introspect for this key)"
    if probe.granted.get("reservations:create"):
        return [Check("permissions", "ok", detail)], False
    return [Check("permissions", "fail", detail, "create a key with the default runtime permissions")], False


def _latency(probe: _Probe, _: list[Check]) -> tuple[list[Check], bool]:
    samples = [
        probe.call("GET", "/v1/reservations", params={"limit": "1"}).elapsed_ms for _ in range(probe.settings.samples)
    ]
    median = statistics.median(samples)
    detail = f"median {median:.1f} ms over {len(samples)} reads (min {min(samples):.1f}, max {max(samples):.1f})"
    if median > LATENCY_WARN_MS:
        fix = "every tool call waits one round trip: run the authority closer"
        return [Check("latency", "warn", detail, fix)], False
    return [Check("latency", "ok", detail)], False


def _clock(probe: _Probe, _: list[Check]) -> tuple[list[Check], bool]:
    skews = []
    for reply in probe.replies:
        date = reply.headers.get("date")
        if date:
            try:
                skews.append(parsedate_to_datetime(date).timestamp() * 1000 - reply.local_mid_ms)
            except (TypeError, ValueError):
                continue
    if not skews:
        return [
            Check(
                "clock",
                "warn",
                "the server sends no HTTP Date header: its clock cannot be compared",
                "nothing to do unless reservations expire early; check the server's NTP",
            )
        ], False
    # Date is truncated to the second, so the true skew lies in [skew, skew + 1 s]: take the median of the midpoints.
    skew_s = statistics.median(skews) / 1000 + 0.5
    detail = f"server clock {abs(skew_s):.1f} s {'ahead of' if skew_s > 0 else 'behind'} ours (HTTP Date, ±1 s)"
    if abs(skew_s) > CLOCK_WARN_S:
        return [Check("clock", "warn", detail, "sync both clocks (NTP): expiry times are server times")], False
    return [Check("clock", "ok", detail)], False


def as_json(checks: list[Check]) -> dict[str, Any]:
    """The findings as one JSON object: `ok` (bool), `exit_code` and `checks` (name, status, detail, fix)."""
    return {"ok": exit_code(checks) == 0, "exit_code": exit_code(checks), "checks": [asdict(c) for c in checks]}
