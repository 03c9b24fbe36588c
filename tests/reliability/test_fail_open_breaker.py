"""Fail-open stays fast: once the authority is known down, calls proceed without asking it (a circuit breaker with a
bounded half-open probe), the process exits without waiting on it, and what is kept for later is said once."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from runcycles import CyclesClient, CyclesConfig

from otel_cycles import CyclesBudgetCallback
from otel_cycles._breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from otel_cycles.authority import LocalAuthority
from otel_cycles.testing import ScriptedModel
from tests.core.agents import make_agent
from tests.reliability.fault_proxy import FaultProxy, free_port
from tests.reliability.helpers import governed, metric_sum
from tests.reliability.hung_server import HungServer

ROOT = Path(__file__).resolve().parents[2]


def test_a_hung_authority_is_asked_once_then_every_call_fails_open_without_asking(
    spans, metric_reader, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CYCLES_BREAKER_COOLDOWN_S", "600")  # no probe during this test
    opened_before = metric_sum(metric_reader, "cycles.breaker.transitions", **{"cycles.breaker.state": "open"})
    skipped_before = metric_sum(metric_reader, "cycles.fail_open", **{"cycles.breaker.state": "open"})
    with HungServer() as hung, ScriptedModel(tool_rounds=2) as model:
        client = CyclesClient(CyclesConfig(base_url=hung.base_url, api_key="k", journal_dir=str(tmp_path)))
        callback = CyclesBudgetCallback(
            client=client, tenant="acme", fail_open=True, reserve_timeout_s=0.5, settle_timeout_s=0
        )
        make_agent(model, [callback]).run("Research budget governance")
        connections, requests = hung.snapshot()
    assert model.request_count == 3
    calls = governed(spans)
    assert len(calls) == 5 and all(s.attributes["cycles.fail_open"] is True for s in calls)
    states = [s.attributes["cycles.breaker.state"] for s in sorted(calls, key=lambda s: s.start_time)]
    assert states == [CLOSED, OPEN, OPEN, OPEN, OPEN]  # only the first call waited for the authority
    # One reservation request on one connection, no same-key retry (the timeout covers both), and none of the
    # background event deliveries went out while the authority is known down.
    assert (connections, requests) == (1, [("POST", "/v1/reservations")])
    assert metric_sum(metric_reader, "cycles.fail_open", **{"cycles.breaker.state": "open"}) - skipped_before == 4
    opened = metric_sum(metric_reader, "cycles.breaker.transitions", **{"cycles.breaker.state": "open"})
    assert opened - opened_before == 1


def test_a_closed_port_opens_the_breaker_at_the_first_call(spans, tmp_path: Path) -> None:
    port = free_port()
    client = CyclesClient(CyclesConfig(base_url=f"http://127.0.0.1:{port}", api_key="k", journal_dir=str(tmp_path)))
    callback = CyclesBudgetCallback(client=client, tenant="acme", fail_open=True, settle_timeout_s=0)
    with ScriptedModel(tool_rounds=2) as model:
        make_agent(model, [callback]).run("Research budget governance")
    states = [s.attributes["cycles.breaker.state"] for s in sorted(governed(spans), key=lambda s: s.start_time)]
    assert states[0] == CLOSED and set(states[1:]) <= {OPEN, HALF_OPEN} and len(states) == 5


def test_half_open_lets_exactly_one_probe_through_and_an_answer_closes_it() -> None:
    breaker = Breaker("http://authority", cooldown_s=0.01)
    breaker.failure("connection refused")
    assert breaker.state == OPEN
    opened = threading.Event()
    while not opened.wait(0.005):  # bounded by the 10 ms cool-down
        opened.set() if breaker.acquire() else None
    assert breaker.state == HALF_OPEN
    assert [breaker.acquire() for _ in range(5)] == [False] * 5  # the probe is in flight: nobody else asks
    breaker.failure("still down")
    assert breaker.state == OPEN and not breaker.acquire()  # re-opened with a longer cool-down
    breaker.success()
    assert breaker.state == CLOSED and breaker.acquire()


def _run(env: dict[str, str], model_url: str) -> tuple[dict[str, int], str]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.reliability.fail_open_script", model_url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,  # a hang guard, not a measurement
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_exit_is_bounded_the_journal_is_named_once_and_the_next_runs_send_it_exactly_once(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CYCLES_BASE_URL": f"http://127.0.0.1:{port}",
        "CYCLES_API_KEY": "not-checked-by-a-hung-server",
        "CYCLES_TENANT": "acme",
        "CYCLES_JOURNAL_DIR": str(journal),
        "CYCLES_RESERVE_TIMEOUT_S": "0.5",
        "CYCLES_BREAKER_COOLDOWN_S": "600",  # no half-open probe during the run: one request, deterministically
    }
    with ScriptedModel(tool_rounds=2) as model:
        with HungServer(port) as hung:
            first, log = _run(env, model.base_url)
            assert hung.snapshot()[1] == [("POST", "/v1/reservations")]
        assert first["fail_open"] == 5
        kept = list(journal.glob("*/*.json"))
        assert len(kept) == 5  # each fail-open call's spend, journaled
        lines = log.strip().splitlines()
        said = [line for line in lines if "not yet recorded" in line]
        assert len(said) == 1 and str(kept[0].parent) in said[0] and "5 commit(s)/event(s)" in said[0]
        assert sum("unreachable" in line for line in lines) == 1
        assert not [line for line in lines if re.search(r"Transport error|retry|Traceback", line)]

        with LocalAuthority() as authority, FaultProxy(authority.base_url, port=port) as proxy:
            authority.create_tenant("acme")
            authority.create_budget("tenant:acme", 10**10)
            env["CYCLES_API_KEY"] = authority.create_api_key("acme")
            second, _ = _run(env, model.base_url)
            assert second["fail_open"] == 0
            assert list(journal.glob("*/*.json")) == []
            spent = int(authority.balances("acme")[0]["spent"]["amount"])
            assert spent == first["committed"] + second["committed"]  # the kept spend, once
            replayed = len(proxy.requests("/v1/events", "POST"))
            assert replayed == 5

            third, _ = _run(env, model.base_url)
            assert len(proxy.requests("/v1/events", "POST")) == replayed  # nothing delivered is sent again
            assert int(authority.balances("acme")[0]["spent"]["amount"]) == spent + third["committed"]
