"""`otel-cycles doctor` as a user runs it: a subprocess against a real embedded authority on loopback.

Each misconfiguration gets its message, its fix line and its exit code; the ledger (budgets with their update times,
reservations, tenants) is byte-for-byte the same after every run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from email.utils import formatdate
from typing import Any

import httpx
import pytest

from otel_cycles.authority import LocalAuthority
from otel_cycles.doctor import DoctorSettings, diagnose, exit_code

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

_counter = 0


@pytest.fixture(scope="module")
def server() -> Iterator[LocalAuthority]:
    with LocalAuthority() as authority:
        yield authority


def _tenant(server: LocalAuthority, budgets: dict[str, int]) -> tuple[str, str]:
    global _counter
    _counter += 1
    tenant = f"doc-{os.getpid()}-{_counter}"
    server.create_tenant(tenant)
    key = server.create_api_key(tenant)
    for scope, amount in budgets.items():
        server.create_budget(f"tenant:{tenant}" + (f"/{scope}" if scope else ""), amount)
    return tenant, key


def _snapshot(server: LocalAuthority, tenant: str) -> Any:
    admin = {"X-Admin-API-Key": server.admin_key}
    budgets = httpx.get(f"{server.base_url}/v1/admin/budgets", params={"tenant_id": tenant}, headers=admin).json()
    tenants = httpx.get(f"{server.base_url}/v1/admin/tenants", headers=admin).json()
    return budgets, tenants, server.reservations(tenant)


def doctor(server: LocalAuthority, tenant: str, key: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `otel-cycles doctor` configured through CYCLES_* variables, as the callback is; assert it changed nothing."""
    before = _snapshot(server, tenant)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CYCLES_")}
    environ |= {"CYCLES_BASE_URL": server.base_url, "CYCLES_API_KEY": key, "CYCLES_TENANT": tenant, **env}
    result = subprocess.run(
        [sys.executable, "-m", "otel_cycles", "doctor", *args], env=environ, capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert _snapshot(server, tenant) == before, "doctor changed the ledger"
    return result


def _checks(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in json.loads(result.stdout)["checks"]}


def test_healthy_setup_passes_every_check(server: LocalAuthority) -> None:
    tenant, key = _tenant(server, {"": 100_000_000, "agent:bot": 25_000_000})
    result = doctor(server, tenant, key, "--json", CYCLES_AGENT="bot")
    assert result.returncode == 0, result.stdout
    checks = _checks(result)
    assert {c["status"] for c in checks.values()} == {"ok"}
    assert checks[f"budget tenant:{tenant}"]["detail"] == "$1.00 left of $1.00, $0.00 held"
    assert checks[f"budget tenant:{tenant}/agent:bot"]["detail"] == "$0.25 left of $0.25, $0.00 held"
    assert checks["api key"]["detail"] == f"accepted, tenant {tenant!r}"
    assert checks["dry run"]["detail"].endswith("would be allowed (ALLOW)")
    assert checks["decide"]["detail"] == "ALLOW"
    runtime = "reservations:create, reservations:commit, reservations:release, reservations:extend, reservations:list"
    assert checks["permissions"]["detail"] == f"{runtime}, balances:read (from /v1/auth/introspect)"
    assert {"reachable", "latency", "clock"} <= set(checks)
    table = doctor(server, tenant, key, CYCLES_AGENT="bot")
    assert table.returncode == 0 and "all checks passed" in table.stdout
    assert max(len(line) for line in table.stdout.splitlines()) <= 80


def test_flags_override_the_environment(server: LocalAuthority) -> None:
    tenant, key = _tenant(server, {"": 100_000_000, "workflow:w": 5_000_000, "workflow:w/agent:bot": 1_000_000})
    result = doctor(server, tenant, "wrong-key", "--api-key", key, "--workflow", "w", "--agent", "bot", "--json")
    assert result.returncode == 0, result.stdout
    assert f"budget tenant:{tenant}/workflow:w/agent:bot" in _checks(result)


def test_unreachable_url(server: LocalAuthority) -> None:
    tenant, key = _tenant(server, {"": 1_000})
    with socket.socket() as sock:  # a port nothing listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        result = doctor(server, tenant, key, CYCLES_BASE_URL=url)
    assert result.returncode == 3
    assert f"cannot reach {url}" in result.stdout
    assert "fix (reachable): start the authority (otel-cycles authority serve) or fix CYCLES_BASE_URL" in result.stdout


def test_wrong_key(server: LocalAuthority) -> None:
    tenant, _ = _tenant(server, {"": 1_000})
    result = doctor(server, tenant, "cyc_live_not_a_key")
    assert result.returncode == 1
    assert "the API key is refused (401 UNAUTHORIZED" in result.stdout
    assert "fix (api key): create one: otel-cycles authority api-key create <tenant>" in result.stdout


def test_key_of_another_tenant(server: LocalAuthority) -> None:
    tenant, _ = _tenant(server, {"": 1_000})
    other, other_key = _tenant(server, {"": 1_000})
    result = doctor(server, tenant, other_key, "--json")
    assert result.returncode == 1
    check = _checks(result)["api key"]
    assert check["status"] == "fail"
    assert check["detail"] == f"the API key belongs to tenant {other!r}, not {tenant!r}"
    assert check["fix"] == f"use {tenant}'s key, or set CYCLES_TENANT={other}"


def test_no_budget_for_the_agent_scope(server: LocalAuthority) -> None:
    tenant, key = _tenant(server, {"": 100_000_000})
    result = doctor(server, tenant, key, CYCLES_AGENT="bot")
    assert result.returncode == 1
    fix = f"fix (budget tenant:{tenant}/agent:bot): otel-cycles authority budget create tenant:{tenant}/agent:bot"
    assert fix in result.stdout and "1 problem(s) found" in result.stdout
    check = _checks(doctor(server, tenant, key, "--json", CYCLES_AGENT="bot"))[f"budget tenant:{tenant}/agent:bot"]
    assert (check["status"], check["detail"]) == ("warn", "no budget: calls are not limited at this level")


def test_no_budget_at_any_level(server: LocalAuthority) -> None:
    tenant, key = _tenant(server, {})
    result = doctor(server, tenant, key, "--json", CYCLES_AGENT="bot")
    assert result.returncode == 1
    checks = _checks(result)
    assert checks["budgets"]["detail"].endswith("every call would be refused")
    assert checks["dry run"]["status"] == "fail" and "BUDGET_NOT_FOUND" in checks["dry run"]["detail"]


def test_budget_exhausted(server: LocalAuthority) -> None:
    tenant, key = _tenant(server, {"": 50_000})
    headers = {"X-Cycles-API-Key": key}
    body = {
        "idempotency_key": "spend-1",
        "subject": {"tenant": tenant},
        "action": {"kind": "llm", "name": "x"},
        "estimate": {"unit": "USD_MICROCENTS", "amount": 50_000},
    }
    rid = httpx.post(f"{server.base_url}/v1/reservations", json=body, headers=headers).json()["reservation_id"]
    commit = {"idempotency_key": "spend-1c", "actual": {"unit": "USD_MICROCENTS", "amount": 50_000}}
    assert httpx.post(f"{server.base_url}/v1/reservations/{rid}/commit", json=commit, headers=headers).is_success
    result = doctor(server, tenant, key, "--json")
    assert result.returncode == 1
    checks = _checks(result)
    budget = checks[f"budget tenant:{tenant}"]
    assert budget["status"] == "fail" and budget["detail"] == "exhausted: $0.00 left of $0.0005, $0.00 held"
    assert budget["fix"] == f"otel-cycles authority budget fund tenant:{tenant} CREDIT <amount>"
    assert "BUDGET_EXCEEDED" in checks["dry run"]["detail"] and checks["decide"]["status"] == "fail"


def test_missing_settings_is_a_usage_error(server: LocalAuthority) -> None:
    tenant, key = _tenant(server, {"": 1_000})
    result = doctor(server, tenant, "", CYCLES_BASE_URL="127.0.0.1:7878")
    assert result.returncode == 2
    assert "has no http:// or https:// scheme" in result.stdout and "no API key" in result.stdout


def test_no_tenant_is_reported_and_the_keys_tenant_is_diagnosed(server: LocalAuthority) -> None:
    tenant, key = _tenant(server, {"": 1_000})
    result = doctor(server, tenant, key, "--json", CYCLES_TENANT="")
    assert result.returncode == 1
    checks = _checks(result)
    assert checks["tenant"]["fix"] == "set CYCLES_TENANT (or --tenant) to the API key's tenant"
    assert checks[f"budget tenant:{tenant}"]["status"] == "ok"


def test_estimate_checks_that_a_call_of_that_size_fits(server: LocalAuthority) -> None:
    tenant, key = _tenant(server, {"": 1_000_000})
    assert doctor(server, tenant, key, "--estimate", "1000000").returncode == 0
    result = doctor(server, tenant, key, "--estimate", "1000001", "--json")
    assert result.returncode == 1
    assert _checks(result)["dry run"]["detail"] == "a $0.01000001 call would be denied: BUDGET_EXCEEDED"


class _Variant(httpx.BaseTransport):
    """A real authority behind a proxy playing another server: it refuses `GET /v1/auth/introspect` to tenant keys (as
    the admin spec lets servers do), and may add a field outside the spec to dry-run answers, set a far `Date`, or
    allow with caps (as a server with policies)."""

    def __init__(self, skew_s: int = 0, extra_field: bool = False, caps: dict[str, Any] | None = None) -> None:
        self._inner = httpx.HTTPTransport()
        self._skew_s = skew_s
        self._extra_field = extra_field
        self._caps = caps

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/auth/introspect":
            return httpx.Response(401, json={"error": "UNAUTHORIZED", "message": "no", "request_id": "r"})
        response = self._inner.handle_request(request)
        response.read()
        body = response.content
        if self._extra_field and request.url.path == "/v1/reservations":  # the list and the dry run
            body = json.dumps(json.loads(body) | {"surprise": 1}).encode()
        if self._caps and request.method == "POST" and request.url.path in ("/v1/reservations", "/v1/decide"):
            body = json.dumps(json.loads(body) | {"decision": "ALLOW_WITH_CAPS", "caps": self._caps}).encode()
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "date")}
        headers["date"] = formatdate(time.time() + self._skew_s, usegmt=True)
        return httpx.Response(response.status_code, headers=headers, content=body)


def test_answers_outside_the_spec_and_a_skewed_clock_are_problems(server: LocalAuthority) -> None:
    tenant, key = _tenant(server, {"": 1_000_000})
    settings = DoctorSettings(base_url=server.base_url, api_key=key, tenant=tenant)
    found = diagnose(settings, transport=_Variant(skew_s=120, extra_field=True))
    checks = {c.name: c for c in found}
    protocol = [c.detail for c in found if c.name == "protocol"]
    assert protocol == [
        "GET /v1/reservations does not parse: ReservationListResponse: surprise: Extra inputs are not permitted"
    ]
    assert checks["dry run"].status == "fail"
    assert "does not parse with runcycles" in checks["dry run"].detail and "surprise" in checks["dry run"].detail
    assert checks["clock"].status == "warn" and "ahead of ours" in checks["clock"].detail
    assert exit_code(list(checks.values())) == 1


def test_permissions_are_inferred_without_introspection(server: LocalAuthority) -> None:
    tenant, key = _tenant(server, {"": 1_000_000})
    settings = DoctorSettings(base_url=server.base_url, api_key=key, tenant=tenant)
    found = {c.name: c for c in diagnose(settings, transport=_Variant())}["permissions"]
    assert found.status == "ok"
    assert found.detail == (
        "inferred from accepted calls: balances:read, reservations:create, reservations:list "
        "(no /v1/auth/introspect for this key)"
    )


def test_a_key_that_can_fund_itself_is_a_problem(server: LocalAuthority) -> None:
    tenant, _ = _tenant(server, {"": 1_000_000})
    runtime = ["reservations:create", "reservations:commit", "reservations:release", "reservations:extend"]
    key = server.create_api_key(tenant, "too-strong", permissions=[*runtime, "budgets:write"])
    result = doctor(server, tenant, key, "--json")
    assert result.returncode == 1
    found = [c for c in json.loads(result.stdout)["checks"] if c["name"] == "permissions"]
    assert [c["status"] for c in found] == ["ok", "warn"]
    assert found[1]["detail"] == "the key can change budgets (budgets:write): an agent holding it can fund itself"
    assert found[1]["fix"] == "give agents a key with runtime permissions only"


def test_a_key_without_reservations_create(server: LocalAuthority) -> None:
    tenant, _ = _tenant(server, {"": 1_000_000})
    key = server.create_api_key(tenant, "read-only", permissions=["balances:read", "reservations:list"])
    checks = _checks(doctor(server, tenant, key, "--json"))
    assert checks["dry run"]["status"] == "fail" and "INSUFFICIENT_PERMISSIONS" in checks["dry run"]["detail"]
    assert checks["dry run"]["fix"] == "give the key reservations:create (runtime permissions)"
    assert checks["permissions"]["status"] == "fail"
    assert checks["permissions"]["detail"] == "reservations:list, balances:read (from /v1/auth/introspect)"


def test_caps_are_reported(server: LocalAuthority) -> None:
    tenant, key = _tenant(server, {"": 1_000_000})
    settings = DoctorSettings(base_url=server.base_url, api_key=key, tenant=tenant)
    caps = {"max_tokens": 256, "tool_denylist": ["shell"]}
    checks = {c.name: c for c in diagnose(settings, transport=_Variant(caps=caps))}
    assert checks["dry run"].status == "ok"
    assert (
        checks["dry run"].detail
        == "a $0.00000001 call would be allowed with caps: max_tokens=256, tool_denylist=['shell']"
    )
    assert checks["decide"].detail == "ALLOW_WITH_CAPS, caps: max_tokens=256, tool_denylist=['shell']"
