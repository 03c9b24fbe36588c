"""Secrets never leak (spans, metrics, logs, OTLP bytes); tenants are isolated; the admin plane needs the admin key;
the authority binds loopback, stores keys hashed and creates its SQLite files owner-only; content can be filtered
out of exported spans."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from runcycles import CyclesClient

from otel_cycles import BudgetExceeded, CyclesBudgetCallback
from otel_cycles.authority import LocalAuthority
from otel_cycles.authority._cli import add_authority_command
from otel_cycles.errors import AuthorityUnavailable, ReservationRejected
from otel_cycles.redaction import CONTENT_ATTRIBUTES, ContentFilterSpanProcessor
from otel_cycles.testing import ScriptedModel
from tests.core.agents import make_agent
from tests.core.otlp_receiver import OtlpReceiver
from tests.reliability.conftest import Stack

ROOT = Path(__file__).resolve().parents[2]


def _everything_exported(spans: InMemorySpanExporter, metric_reader) -> str:
    texts = [span.to_json() for span in spans.get_finished_spans()]
    data = metric_reader.get_metrics_data()
    texts.append(data.to_json() if data is not None else "")
    return "\n".join(texts)


def test_keys_never_reach_spans_metrics_or_logs(stack: Stack, model: ScriptedModel, spans, metric_reader, caplog):
    caplog.set_level(logging.DEBUG)
    stack.budget("", 100_000_000)
    stack.budget("agent:poor", 1_000)
    client = stack.client()
    # A normal run, a denial, fail-open with the authority down, and a rejected key: every logging path we have.
    make_agent(model, [CyclesBudgetCallback(client=client, tenant=stack.tenant)]).run("Research budget governance")
    with pytest.raises(BudgetExceeded):
        make_agent(model, [CyclesBudgetCallback(client=client, tenant=stack.tenant, agent="poor")]).run("hi")
    bad_key = "cyc_live_" + uuid.uuid4().hex
    bad = CyclesClient(stack.config(api_key=bad_key))
    with pytest.raises(ReservationRejected) as rejected:
        make_agent(model, [CyclesBudgetCallback(client=bad, tenant=stack.tenant)]).run("hi")
    assert rejected.value.status == 401
    stack.stop()
    with pytest.raises(AuthorityUnavailable):
        make_agent(model, [CyclesBudgetCallback(client=client, tenant=stack.tenant)]).run("hi")
    make_agent(
        model, [CyclesBudgetCallback(client=client, tenant=stack.tenant, fail_open=True, settle_timeout_s=0)]
    ).run("hi")
    stack.start()
    exported = _everything_exported(spans, metric_reader) + "\n" + caplog.text
    assert "cycles.reservation.id" in exported and "cycles.fail_open" in exported  # we did scan real output
    for secret in (stack.api_key, stack.admin_key, bad_key):
        assert secret not in exported
        assert secret[-16:] not in exported  # not even a suffix


def test_keys_never_reach_otlp_bytes_or_process_output(stack: Stack, model: ScriptedModel) -> None:
    stack.budget("", 100_000_000)
    with OtlpReceiver() as receiver:
        result = subprocess.run(
            [sys.executable, "-m", "tests.core.mode_script", "export", stack.base_url, stack.api_key, stack.tenant,
             model.base_url, receiver.endpoint],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
            env={**os.environ, "OPENAI_API_KEY": "sk-fake", "OTEL_LOG_LEVEL": "debug"},
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert receiver.spans and receiver.metric_names
    payload = b"".join(receiver.raw)
    for secret in (stack.api_key, stack.admin_key):
        assert secret.encode() not in payload
        assert secret not in result.stdout + result.stderr


def test_tenant_isolation(stack: Stack) -> None:
    stack.budget("", 100_000_000)
    other = "other-" + uuid.uuid4().hex[:6]
    stack.api.create_tenant(other)
    stack.api.create_budget(f"tenant:{other}", 100_000_000)
    other_key = stack.api.create_api_key(other)
    mine = CyclesClient(stack.config(journal_enabled=False))
    theirs = CyclesClient(stack.config(api_key=other_key, journal_enabled=False))
    body = {
        "idempotency_key": str(uuid.uuid4()),
        "subject": {"tenant": other},
        "action": {"kind": "llm.completion", "name": "x"},
        "estimate": {"unit": "USD_MICROCENTS", "amount": 1000},
    }
    created = theirs.create_reservation(body)
    assert created.status == 200
    assert created.body is not None
    rid = created.body["reservation_id"]
    assert mine.get_reservation(rid).status == 403
    assert (
        mine.commit_reservation(
            rid, {"idempotency_key": "c1", "actual": {"unit": "USD_MICROCENTS", "amount": 1}}
        ).status
        == 403
    )
    assert mine.release_reservation(rid, {"idempotency_key": "r1"}).status == 403
    assert mine.extend_reservation(rid, {"idempotency_key": "e1", "extend_by_ms": 1000}).status == 403
    assert mine.get_balances(tenant=other).status == 403
    assert mine.list_reservations(tenant=other).status == 403
    assert mine.create_reservation({**body, "idempotency_key": str(uuid.uuid4())}).status == 403  # their subject
    assert mine.create_event({"idempotency_key": "ev", "subject": {"tenant": other}, "action": body["action"],
                              "actual": {"unit": "USD_MICROCENTS", "amount": 1}}).status == 403  # fmt: skip
    listed = mine.list_reservations(tenant=stack.tenant)
    assert listed.status == 200 and rid not in json.dumps(listed.body)
    assert (theirs.get_reservation(rid).body or {})["status"] == "ACTIVE"  # untouched
    assert stack.api.balances(other)[0]["spent"]["amount"] == 0


@pytest.mark.parametrize("headers", [{}, {"X-Admin-API-Key": "wrong"}, "tenant_key"])
def test_admin_plane_requires_the_admin_key(stack: Stack, headers) -> None:
    stack.budget("", 1_000)
    expected = 401  # no credentials, or a wrong admin key
    if headers == "tenant_key":  # authenticated, but a runtime key holds no admin or budgets:write permission
        headers, expected = {"X-Cycles-API-Key": stack.api_key}, 403
    before = stack.api.balances(stack.tenant)
    with httpx.Client(base_url=stack.base_url, headers=headers) as http:
        assert http.post("/v1/admin/tenants", json={"tenant_id": "evil", "name": "evil"}).status_code == expected
        assert http.post("/v1/admin/api-keys", json={"tenant_id": stack.tenant, "name": "x"}).status_code == expected
        assert http.get("/v1/admin/tenants").status_code == expected
        params = {"scope": f"tenant:{stack.tenant}", "unit": "USD_MICROCENTS", "tenant_id": stack.tenant}
        fund = {"operation": "CREDIT", "amount": {"unit": "USD_MICROCENTS", "amount": 10**12}}
        assert http.post("/v1/admin/budgets/fund", params=params, json=fund).status_code == expected
    assert stack.api.balances(stack.tenant) == before  # nothing minted
    with httpx.Client(base_url=stack.base_url, headers={"X-Admin-API-Key": stack.admin_key}) as http:
        tenants = http.get("/v1/admin/tenants")
        assert tenants.status_code == 200
        assert "evil" not in json.dumps(tenants.json())


def test_binds_loopback_by_default() -> None:
    with LocalAuthority() as authority:
        assert authority.host == "127.0.0.1"
    import argparse

    parser = argparse.ArgumentParser()
    add_authority_command(parser.add_subparsers())
    assert parser.parse_args(["authority", "serve"]).host == "127.0.0.1"


def test_keys_are_stored_hashed_and_files_are_owner_only(stack: Stack) -> None:
    stack.budget("", 1_000)
    key = stack.api.create_api_key(stack.tenant, name="scan-me")
    stack.stop()  # checkpoint the WAL so everything is in the files we read
    files = [Path(stack.db + suffix) for suffix in ("", "-wal", "-shm") if Path(stack.db + suffix).exists()]
    assert files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        raw = path.read_bytes()
        for secret in (key, stack.api_key, stack.admin_key):
            assert secret.encode() not in raw
    stack.start()
    with LocalAuthority(str(Path(stack.db).with_name("fresh.db"))) as fresh:
        fresh.create_tenant("fresh-tenant")
        assert stat.S_IMODE(Path(stack.db).with_name("fresh.db").stat().st_mode) == 0o600


def test_content_filter_removes_prompts_and_completions(model: ScriptedModel, stack: Stack, spans) -> None:
    from opentelemetry import trace

    stack.budget("", 100_000_000)
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    filtered, unfiltered = InMemorySpanExporter(), InMemorySpanExporter()
    filtering = ContentFilterSpanProcessor(SimpleSpanProcessor(filtered), capture_content=False)
    provider.add_span_processor(filtering)
    provider.add_span_processor(ContentFilterSpanProcessor(SimpleSpanProcessor(unfiltered), capture_content=True))
    try:
        callback = CyclesBudgetCallback(client=stack.client(), tenant=stack.tenant)
        make_agent(model, [callback]).run("My secret prompt SENTINEL-42")
    finally:
        # Detach: the global provider has no remove, so neuter the processors for the rest of the session.
        filtering.capture_content = True
        filtered.shutdown()
        unfiltered.shutdown()
    raw = [s.to_json() for s in unfiltered.get_finished_spans()]
    assert any("SENTINEL-42" in text for text in raw)  # the content really is on the spans
    clean = filtered.get_finished_spans()
    assert len(clean) == len(raw)
    assert not any("SENTINEL-42" in s.to_json() for s in clean)
    for span in clean:
        assert not CONTENT_ATTRIBUTES & set(span.attributes or {})
    llm = [s for s in clean if (s.attributes or {}).get("cycles.action.kind") == "llm.completion"]
    assert llm and all(
        "gen_ai.usage.input_tokens" in dict(s.attributes or {}) and "cycles.actual.amount" in dict(s.attributes or {})
        for s in llm
    )
    # The spans other processors see are untouched.
    assert any("gen_ai.input.messages" in dict(s.attributes or {}) for s in spans.get_finished_spans())


def test_content_filter_reads_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("CYCLES_CAPTURE_CONTENT", "false")
    assert ContentFilterSpanProcessor(SimpleSpanProcessor(InMemorySpanExporter())).capture_content is False
    monkeypatch.delenv("CYCLES_CAPTURE_CONTENT")
    assert ContentFilterSpanProcessor(SimpleSpanProcessor(InMemorySpanExporter())).capture_content is True
