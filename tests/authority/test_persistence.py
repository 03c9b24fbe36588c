"""File databases: owner-only permissions, restart with nothing lost, two server processes on one file."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from otel_cycles.authority import LocalAuthority, SQLiteLedger

from .conftest import UNIT, commit_body, reserve_body


def test_restart_keeps_state(tmp_path: Path) -> None:
    db = str(tmp_path / "ledger.db")
    with LocalAuthority(db) as first:
        first.create_tenant("acme")
        secret = first.create_api_key("acme")
        first.create_budget("tenant:acme", 10_000)
        with httpx.Client(base_url=first.base_url, headers={"X-Cycles-API-Key": secret}) as c:
            body = reserve_body(1_000)
            rid = c.post("/v1/reservations", json=body).json()["reservation_id"]
            committed = c.post("/v1/reservations", json=reserve_body(2_000)).json()["reservation_id"]
            assert c.post(f"/v1/reservations/{committed}/commit", json=commit_body(1_500)).status_code == 200
        balances, reservations = first.balances("acme"), first.reservations("acme")
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    with LocalAuthority(db) as second:
        assert second.balances("acme") == balances
        assert second.reservations("acme") == reservations
        with httpx.Client(base_url=second.base_url, headers={"X-Cycles-API-Key": secret}) as c:
            replay = c.post("/v1/reservations", json=body)  # same API key and idempotency record
            assert replay.status_code == 200 and replay.json()["reservation_id"] == rid
            assert c.post(f"/v1/reservations/{rid}/commit", json=commit_body(1_000)).status_code == 200
        assert second.check_invariants() == []


def _spawn(db: str, admin_key: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "otel_cycles",
            "authority",
            "serve",
            "--db",
            db,
            "--port",
            "0",
            "--admin-key",
            admin_key,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    match = re.search(r"listening on (http://\S+)", proc.stdout.readline())
    assert match, "server did not start"
    return proc, match.group(1)


def test_two_processes_one_file_no_overspend(tmp_path: Path) -> None:
    db = str(tmp_path / "shared.db")
    ledger = SQLiteLedger.open(db)
    ledger.create_tenant({"tenant_id": "acme", "name": "acme"})
    secret = ledger.create_api_key({"tenant_id": "acme", "name": "k"})["key_secret"]
    allocated = 50 * 1_000 + 500
    ledger.create_budget({"scope": "tenant:acme", "unit": UNIT, "allocated": {"unit": UNIT, "amount": allocated}}, None)
    ledger.close()
    servers = [_spawn(db, "admin-key-0123456789"), _spawn(db, "admin-key-0123456789")]
    try:

        def worker(url: str) -> list[int]:
            statuses = []
            with httpx.Client(base_url=url, headers={"X-Cycles-API-Key": secret}) as c:
                for i in range(40):
                    r = c.post("/v1/reservations", json=reserve_body(1_000, subject={"tenant": "acme"}))
                    statuses.append(r.status_code)
                    if r.status_code == 200 and i % 3 == 0:
                        rid = r.json()["reservation_id"]
                        c.post(f"/v1/reservations/{rid}/commit", json=commit_body(1_000))
            return statuses

        with ThreadPoolExecutor(4) as pool:
            results = [s for batch in pool.map(worker, [url for _, url in servers] * 2) for s in batch]
    finally:
        for proc, _ in servers:
            proc.terminate()
            proc.wait(timeout=10)
    assert set(results) <= {200, 409}
    assert results.count(200) == 50  # exactly what the budget allows, across both processes
    check = SQLiteLedger.open(db)
    try:
        assert check.check_invariants() == []
        page, _ = check.list_budgets("acme", {}, 10, None)
        assert page[0].remaining == 500 and page[0].reserved + page[0].spent == 50_000
    finally:
        check.close()


def test_a_database_from_before_key_revocation_is_upgraded(tmp_path: Path) -> None:
    """A ledger file whose api_keys table predates revocation gains the columns, and its never-expiring key works."""
    db = str(tmp_path / "old.db")
    with LocalAuthority(db) as first:
        first.create_tenant("acme")
        first.create_budget("tenant:acme", 10)
    conn = sqlite3.connect(db)
    conn.executescript(
        "DROP TABLE api_keys; CREATE TABLE api_keys (key_hash TEXT PRIMARY KEY, key_id TEXT NOT NULL UNIQUE, "
        "tenant_id TEXT NOT NULL, name TEXT NOT NULL, key_prefix TEXT NOT NULL, permissions_json TEXT NOT NULL, "
        "status TEXT NOT NULL, created_at_ms INTEGER NOT NULL, expires_at_ms INTEGER);"
    )
    secret = "cyc_live_" + "ab" * 24
    conn.execute(
        "INSERT INTO api_keys VALUES (?, 'key_old', 'acme', 'old', ?, '[\"balances:read\"]', 'ACTIVE', 0, NULL)",
        (hashlib.sha256(secret.encode()).hexdigest(), secret[:14]),
    )
    conn.commit()
    conn.close()
    with LocalAuthority(db) as upgraded:
        headers = {"X-Cycles-API-Key": secret}
        assert httpx.get(f"{upgraded.base_url}/v1/balances?tenant=acme", headers=headers).status_code == 200
        assert upgraded.list_api_keys("acme")[0]["expires_at"] == "9999-12-31T23:59:59.999Z"
        assert upgraded.revoke_api_key("key_old", "rotated")["status"] == "REVOKED"
        assert httpx.get(f"{upgraded.base_url}/v1/balances?tenant=acme", headers=headers).status_code == 401
