"""The suite's external-server mode, for real: a second authority in its own process (`otel-cycles authority serve`),
and a subset of tests/core and tests/frameworks (tinyagent, openai) re-run by a pytest subprocess with
`CYCLES_TEST_BASE_URL` pointing at it. The tests must pass unchanged and their tenants, budgets and spend must be on
that server, which the child could only have reached over HTTP.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from otel_cycles.testing._authority import CYCLES_TEST_ADMIN_KEY, CYCLES_TEST_BASE_URL, open_test_authority

ROOT = Path(__file__).resolve().parents[1]
ADMIN_KEY = "external-admin-key-for-tests"
SUBSET = [
    "tests/core/test_governance.py::test_spent_equals_priced_usage_on_every_scope",
    "tests/core/test_governance.py::test_small_budget_stops_before_the_model_sees_the_request",
    "tests/core/test_lookahead.py::test_next_calls_adopt_the_lookahead_and_spent_stays_exact",
    "tests/frameworks/test_frameworks.py::test_run_within_budget_commits_the_priced_usage[tinyagent]",
    "tests/frameworks/test_frameworks.py::test_run_within_budget_commits_the_priced_usage[openai]",
    "tests/test_testing_plugin.py::test_fixtures_directly",  # the pytest plugin's cycles_tenant
]


@pytest.fixture
def external(tmp_path: Path) -> Iterator[str]:
    """`otel-cycles authority serve` in its own process; yields its base URL."""
    cmd = [
        sys.executable,
        "-m",
        "otel_cycles",
        "authority",
        "serve",
        "--port",
        "0",
        "--admin-key",
        ADMIN_KEY,
        "--db",
        str(tmp_path / "external.db"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the server is listening, or "" if it died
        match = re.match(r"listening on (http://\S+)", line)
        assert match, f"authority did not start: {line!r}"
        yield match.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_core_and_framework_tests_pass_against_an_external_server(external: str) -> None:
    admin = httpx.Client(base_url=external, headers={"X-Admin-API-Key": ADMIN_KEY})
    assert admin.get("/v1/admin/tenants").json()["tenants"] == []
    env = {k: v for k, v in os.environ.items() if not k.startswith("CYCLES_")}
    env |= {CYCLES_TEST_BASE_URL: external, CYCLES_TEST_ADMIN_KEY: ADMIN_KEY}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUBSET],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert f"{len(SUBSET)} passed" in run.stdout, run.stdout[-2000:]

    tenants = [t["tenant_id"] for t in admin.get("/v1/admin/tenants").json()["tenants"]]
    assert len(tenants) == len(SUBSET)  # one fresh tenant per test, all provisioned on the external server
    spent = {}
    for tenant in tenants:
        ledgers = admin.get("/v1/admin/budgets", params={"tenant_id": tenant}).json()["ledgers"]
        assert ledgers, f"tenant {tenant} has no budget on the external server"
        spent[tenant] = sum(ledger["spent"]["amount"] for ledger in ledgers)
        active = admin.get("/v1/reservations", params={"tenant": tenant, "status": "ACTIVE"}).json()["reservations"]
        assert active == []
    # Every test but the one whose budget stops the first call spent money there.
    assert sum(1 for amount in spent.values() if amount > 0) == len(SUBSET) - 1


def test_external_mode_needs_the_admin_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CYCLES_TEST_BASE_URL, "http://127.0.0.1:9")
    monkeypatch.delenv(CYCLES_TEST_ADMIN_KEY, raising=False)
    with pytest.raises(RuntimeError, match="CYCLES_TEST_ADMIN_KEY is not"), open_test_authority():
        pass
