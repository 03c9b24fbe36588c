"""`otel-cycles authority …` as an operator runs it: subprocesses against a real embedded authority on loopback.

Every command's effect is read back from the server over HTTP (the oracle), never from the CLI's own output alone;
every error is one line on stderr with its documented exit code (1 refused, 2 usage, 3 unreachable).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest

from otel_cycles.authority import LocalAuthority

RUNTIME_PERMISSIONS = [  # the runtime plane only: what an agent needs (spec Permission names)
    "reservations:create",
    "reservations:commit",
    "reservations:release",
    "reservations:extend",
    "reservations:list",
    "balances:read",
]
_ids = count(1)


@pytest.fixture(scope="module")
def server() -> Iterator[LocalAuthority]:
    with LocalAuthority() as authority:
        yield authority


@pytest.fixture
def tenant(server: LocalAuthority) -> str:
    tenant_id = f"cli-{os.getpid()}-{next(_ids)}"
    server.create_tenant(tenant_id)
    return tenant_id


def _env(server: LocalAuthority, admin: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CYCLES_")}
    env["CYCLES_BASE_URL"] = server.base_url
    if admin:
        env["CYCLES_ADMIN_API_KEY"] = server.admin_key
    return env


def cli(server: LocalAuthority, *argv: str, admin: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `otel-cycles authority ARGV` with the server in CYCLES_BASE_URL (and its admin key unless `admin=False`)."""
    result = subprocess.run(
        [sys.executable, "-m", "otel_cycles", "authority", *argv],
        env=_env(server, admin),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in result.stderr, result.stderr
    if result.returncode != 0:
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
        assert result.stdout == ""
    assert all(len(line) <= 80 for line in result.stdout.splitlines()), result.stdout
    return result


def ok(server: LocalAuthority, *argv: str) -> str:
    result = cli(server, *argv)
    assert result.returncode == 0, result.stderr
    return result.stdout


def refused(server: LocalAuthority, *argv: str, code: int = 1) -> str:
    result = cli(server, *argv)
    assert result.returncode == code, (result.stdout, result.stderr)
    return result.stderr.strip()


def admin_get(server: LocalAuthority, path: str, **params: str) -> Any:
    resp = httpx.get(server.base_url + path, params=params, headers={"X-Admin-API-Key": server.admin_key})
    assert resp.is_success, resp.text
    return resp.json()


def test_tenant_create_list_show(server: LocalAuthority) -> None:
    tenant = f"cli-{os.getpid()}-{next(_ids)}"
    assert ok(server, "tenant", "create", tenant, "--name", "Acme Corp") == f"created tenant {tenant} (Acme Corp)\n"
    assert admin_get(server, f"/v1/admin/tenants/{tenant}")["name"] == "Acme Corp"
    assert refused(server, "tenant", "create", tenant) == f"error: tenant {tenant} already exists"
    table = ok(server, "tenant", "list")
    row = next(line for line in table.splitlines() if line.startswith(tenant))
    assert row.split()[:4] == [tenant, "Acme", "Corp", "ACTIVE"]
    listed = json.loads(ok(server, "tenant", "list", "--json"))
    assert listed == admin_get(server, "/v1/admin/tenants")["tenants"]
    server.set_tenant_status(tenant, "SUSPENDED")
    assert [t["tenant_id"] for t in json.loads(ok(server, "tenant", "list", "--status", "SUSPENDED", "--json"))] == [
        tenant
    ]
    assert json.loads(ok(server, "tenant", "show", tenant, "--json")) == admin_get(
        server, f"/v1/admin/tenants/{tenant}"
    )
    shown = ok(server, "tenant", "show", tenant)
    assert f"tenant {tenant}" in shown and "SUSPENDED" in shown
    assert refused(server, "tenant", "show", "no-such-tenant") == (
        "error: Tenant not found: no-such-tenant (NOT_FOUND, HTTP 404)"
    )
    assert "(INVALID_REQUEST, HTTP 400)" in refused(server, "tenant", "create", "X")


def test_api_key_create_list_revoke(server: LocalAuthority, tenant: str) -> None:
    out = ok(server, "api-key", "create", tenant, "--name", "agent")
    secret = out.splitlines()[0].removeprefix("key_secret: ")
    assert "shown once" in out and " ".join(out.split()).endswith(f"permissions: {', '.join(RUNTIME_PERMISSIONS)}")
    balances = httpx.get(
        f"{server.base_url}/v1/balances", params={"tenant": tenant}, headers={"X-Cycles-API-Key": secret}
    )
    assert balances.status_code == 200  # the printed secret is a working key
    created = json.loads(
        ok(
            server,
            "api-key",
            "create",
            tenant,
            "--permission",
            "budgets:read",
            "--permission",
            "balances:read",
            "--json",
        )
    )
    reader = {"X-Cycles-API-Key": created["key_secret"]}
    assert httpx.get(f"{server.base_url}/v1/admin/budgets", headers=reader).status_code == 200  # budgets:read granted
    listed = json.loads(ok(server, "api-key", "list", "--tenant", tenant, "--json"))
    assert {k["key_id"]: k["permissions"] for k in listed} == {
        created["key_id"]: ["budgets:read", "balances:read"],
        next(k["key_id"] for k in listed if k["name"] == "agent"): RUNTIME_PERMISSIONS,
    }
    assert all("key_secret" not in k for k in listed)
    table = ok(server, "api-key", "list", "--tenant", tenant)
    assert created["key_id"] in table and "ACTIVE" in table

    assert ok(server, "api-key", "revoke", created["key_id"], "--reason", "rotated") == (
        f"revoked key {created['key_id']} of tenant {tenant}\n"
    )
    assert httpx.get(f"{server.base_url}/v1/admin/budgets", headers=reader).status_code == 401
    assert "(KEY_REVOKED, HTTP 409)" in refused(server, "api-key", "revoke", created["key_id"])
    revoked = json.loads(ok(server, "api-key", "list", "--tenant", tenant, "--status", "REVOKED", "--json"))
    assert [k["key_id"] for k in revoked] == [created["key_id"]]
    assert "(NOT_FOUND, HTTP 404)" in refused(server, "api-key", "revoke", "key_nope")
    assert "HTTP 400" in refused(server, "api-key", "create", tenant, "--permission", "budgets:everything")


def _ledger(server: LocalAuthority, tenant: str, scope: str) -> dict[str, Any]:
    ledgers = admin_get(server, "/v1/admin/budgets", tenant_id=tenant)["ledgers"]
    return next(b for b in ledgers if b["scope"] == scope)


def test_budget_create_fund_list_show_and_status(server: LocalAuthority, tenant: str) -> None:
    scope = f"tenant:{tenant}"
    agent = f"{scope}/workspace:prod/agent:bot"
    assert ok(server, "budget", "create", scope, "1000000") == f"created budget {scope}: $0.01 allocated\n"
    assert _ledger(server, tenant, scope)["allocated"]["amount"] == 1_000_000
    assert "already exists" in refused(server, "budget", "create", scope, "5")
    assert _ledger(server, tenant, scope)["allocated"]["amount"] == 1_000_000  # the duplicate changed nothing
    ok(server, "budget", "create", agent, "250000", "--overdraft-limit", "10")
    assert _ledger(server, tenant, agent)["overdraft_limit"]["amount"] == 10
    assert ok(server, "budget", "fund", scope, "CREDIT", "500000") == (
        f"CREDIT $0.005 on {scope}: allocated $0.01 -> $0.015, remaining $0.015\n"
    )
    assert _ledger(server, tenant, scope)["allocated"]["amount"] == 1_500_000

    rows = [line.split() for line in ok(server, "budget", "list", tenant).splitlines()]
    assert rows[0] == ["scope", "status", "allocated", "spent", "reserved", "remaining"]
    assert rows[1] == [scope, "ACTIVE", "$0.015", "$0.00", "$0.00", "$0.015"]
    prefixed = json.loads(ok(server, "budget", "list", tenant, "--scope", f"{scope}/workspace:prod", "--json"))
    assert [b["scope"] for b in prefixed] == [agent]

    assert ok(server, "budget", "freeze", agent) == f"budget {agent} is now FROZEN\n"
    assert _ledger(server, tenant, agent)["status"] == "FROZEN"
    assert [b["scope"] for b in json.loads(ok(server, "budget", "list", tenant, "--status", "FROZEN", "--json"))] == [
        agent
    ]
    assert ok(server, "budget", "unfreeze", agent) == f"budget {agent} is now ACTIVE\n"
    assert _ledger(server, tenant, agent)["status"] == "ACTIVE"
    assert ok(server, "budget", "close", agent) == f"budget {agent} is now CLOSED\n"
    assert _ledger(server, tenant, agent)["status"] == "CLOSED"
    assert "(BUDGET_CLOSED, HTTP 409)" in refused(server, "budget", "unfreeze", agent)

    assert json.loads(ok(server, "budget", "show", scope, "--json")) == _ledger(server, tenant, scope)
    assert "allocated        $0.015" in ok(server, "budget", "show", scope)
    assert refused(server, "budget", "show", f"{scope}/agent:none") == (
        f"error: no USD_MICROCENTS budget at {scope}/agent:none"
    )
    assert "scope must start with tenant:" in refused(server, "budget", "create", "workspace:x", "5", code=2)


def _reserve(server: LocalAuthority, key: str, tenant: str, agent: str, n: int) -> str:
    body = {
        "idempotency_key": f"r-{n}",
        "subject": {"tenant": tenant, "agent": agent},
        "action": {"kind": "llm.completion", "name": "gpt-4o"},
        "estimate": {"unit": "USD_MICROCENTS", "amount": 1000},
    }
    resp = httpx.post(f"{server.base_url}/v1/reservations", json=body, headers={"X-Cycles-API-Key": key})
    assert resp.status_code == 200, resp.text
    rid: str = resp.json()["reservation_id"]
    return rid


def test_reservation_list_and_show(server: LocalAuthority, tenant: str) -> None:
    server.create_budget(f"tenant:{tenant}", 1_000_000)
    key = server.create_api_key(tenant)
    ids = [_reserve(server, key, tenant, agent, n) for n, agent in enumerate(["a", "a", "b"])]
    release = {"idempotency_key": "rel-0"}
    headers = {"X-Cycles-API-Key": key}
    assert httpx.post(f"{server.base_url}/v1/reservations/{ids[0]}/release", json=release, headers=headers).is_success

    table = ok(server, "reservation", "list", tenant)
    assert sorted(line.split()[0] for line in table.splitlines()[1:] if line.split()[0] in ids) == sorted(ids)
    active = json.loads(ok(server, "reservation", "list", tenant, "--status", "ACTIVE", "--json"))
    assert sorted(r["reservation_id"] for r in active) == sorted(ids[1:])
    agent_b = json.loads(ok(server, "reservation", "list", tenant, "--scope", f"tenant:{tenant}/agent:b", "--json"))
    assert [r["reservation_id"] for r in agent_b] == [ids[2]]
    assert ok(server, "reservation", "list", tenant, "--status", "EXPIRED") == "none\n"

    shown = json.loads(ok(server, "reservation", "show", ids[0], "--json"))
    assert shown == admin_get(server, f"/v1/reservations/{ids[0]}") and shown["status"] == "RELEASED"
    assert "RELEASED" in ok(server, "reservation", "show", ids[0])
    assert "(NOT_FOUND, HTTP 404)" in refused(server, "reservation", "show", "no-such-reservation")


def test_balances_with_admin_or_tenant_key(server: LocalAuthority, tenant: str) -> None:
    server.create_budget(f"tenant:{tenant}", 2_000_000)
    key = server.create_api_key(tenant)
    admin_rows = [line.split() for line in ok(server, "balances", tenant).splitlines()]
    assert admin_rows[1] == [f"tenant:{tenant}", "ACTIVE", "$0.02", "$0.00", "$0.00", "$0.02"]
    tenant_rows = [line.split() for line in ok(server, "balances", tenant, "--api-key", key).splitlines()]
    assert tenant_rows[1] == [f"tenant:{tenant}", "$0.02", "$0.00", "$0.00", "$0.02"]
    balances = json.loads(ok(server, "balances", tenant, "--api-key", key, "--json"))
    assert balances == server.balances(tenant)


def test_balances_piped_to_head_is_quiet(server: LocalAuthority, tenant: str) -> None:
    for i in range(1200):  # well over a pipe buffer of table output
        server.create_budget(f"tenant:{tenant}/agent:agent-{i:04d}", 1_000)
    command = f"set -o pipefail; {sys.executable} -m otel_cycles authority balances {tenant} | head -n 2"
    result = subprocess.run(["bash", "-c", command], env=_env(server), capture_output=True, text=True, timeout=120)
    assert result.stderr == ""
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 2


def test_connection_and_credential_errors(server: LocalAuthority, tenant: str) -> None:
    with socket.socket() as sock:  # bound but not listening: connection refused
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        message = refused(server, "tenant", "list", "--url", url, code=3)
    assert message.startswith(f"error: cannot reach {url}")
    assert refused(server, "tenant", "list", "--admin-key", "wrong-admin-key-123") == (
        "error: Missing or invalid X-Admin-API-Key (UNAUTHORIZED, HTTP 401)"
    )
    no_key = cli(server, "budget", "list", tenant, admin=False)
    assert no_key.returncode == 2
    assert no_key.stderr == "error: an admin key is required: --admin-key or CYCLES_ADMIN_API_KEY\n"
    usage = subprocess.run(
        [sys.executable, "-m", "otel_cycles", "authority", "budget", "create"],
        capture_output=True,
        text=True,
        env=_env(server),
    )
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    help_text = " ".join(ok(server, "budget", "list", "--help").split())
    assert "default: $CYCLES_BASE_URL or http://127.0.0.1:7878" in help_text


def _serve(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "otel_cycles", "authority", "serve", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert "Traceback" not in result.stderr
    return result


def test_serve_refuses_a_short_admin_key() -> None:
    result = _serve("--port", "0", "--admin-key", "short-key")
    assert result.returncode == 2
    assert result.stderr == "error: the admin key must be at least 16 characters\n"
    env = {k: v for k, v in os.environ.items() if k != "CYCLES_ADMIN_API_KEY"} | {"CYCLES_ADMIN_API_KEY": "abc"}
    assert _serve("--port", "0", env=env).returncode == 2


def test_serve_on_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = _serve("--port", str(port), "--admin-key", "a" * 32)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}: ")
    assert result.stderr.count("\n") == 1
    missing_dir = _serve("--port", "0", "--admin-key", "a" * 32, "--db", str(tmp_path / "no" / "such" / "x.db"))
    assert missing_dir.returncode == 1 and missing_dir.stderr.startswith("error: cannot open the ledger ")
