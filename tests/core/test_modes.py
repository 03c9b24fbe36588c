"""The three OpenTelemetry modes, each in a fresh interpreter exactly as a user would write it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from otel_cycles.testing import ScriptedModel
from tests.conftest import Tenant
from tests.core.otlp_receiver import OtlpReceiver
from tests.oracle import DEFAULT_TOOL_COST, llm_price
from tests.reliability.helpers import metric_sum

REPO = Path(__file__).resolve().parents[2]
COST_KEYS = {
    "cycles.reservation.id",
    "cycles.decision",
    "cycles.scope_path",
    "cycles.unit",
    "cycles.estimate.amount",
    "cycles.actual.amount",
    "gen_ai.usage.cost.amount",
    "gen_ai.usage.cost.currency",
    "gen_ai.usage.cost.source",
    "gen_ai.usage.input_cost",
    "gen_ai.usage.output_cost",
}


KINDS = ("llm.completion", "tool.execution")


def run_mode(mode: str, tenant: Tenant, model: ScriptedModel, otlp: str | None = None) -> dict[str, Any]:
    api_key = tenant.client._config.api_key
    args = [sys.executable, "-m", "tests.core.mode_script", mode, tenant.authority.base_url, api_key, tenant.id]
    args += [model.base_url] + ([otlp] if otlp else [])
    env = {**os.environ, "OPENAI_API_KEY": "sk-fake"}
    for name in ("PYTEST_CURRENT_TEST", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        env.pop(name, None)
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def served_spend(model: ScriptedModel) -> int:
    """What the subprocess's run should have cost: the usage the scripted model served, priced by genai-prices, plus
    its two `search_web` calls at the default tool cost."""
    usages = [r.usage for r in model.requests]
    assert len(usages) == 3 and all(u is not None for u in usages)
    return sum(llm_price(u.prompt_tokens, u.completion_tokens) for u in usages if u) + 2 * DEFAULT_TOOL_COST


def check_governed(spans: list[dict[str, Any]]) -> None:
    governed = [s for s in spans if s["name"].startswith(("call_llm", "execute_tool"))]
    assert len(governed) == 5  # 3 LLM calls, 2 tool calls
    for span in governed:
        assert COST_KEYS <= set(span["attributes"]), span["name"]


def test_attach_to_existing_setup(tenant: Tenant, model: ScriptedModel) -> None:
    tenant.budget("", 100_000_000)
    result = run_mode("attach", tenant, model)
    check_governed(result["spans"])
    # The user's exporter saw the same cost the authority recorded, and both equal the independent price.
    total = sum(s["attributes"].get("cycles.actual.amount", 0) for s in result["spans"])
    assert tenant.spent() == total == served_spend(model)
    assert tenant.active() == []


def test_export_over_otlp(tenant: Tenant, model: ScriptedModel) -> None:
    tenant.budget("", 100_000_000)
    with OtlpReceiver() as receiver:
        run_mode("export", tenant, model, receiver.endpoint)
    check_governed(receiver.spans)
    assert {"gen_ai.client.token.usage", "cycles.cost.committed", "cycles.reservation.decisions"} <= (
        receiver.metric_names
    )
    # Nothing named the application, so configure_export did (not the SDK's `unknown_service:python`).
    assert receiver.service_names == {"otel-cycles"}
    total = sum(s["attributes"].get("cycles.actual.amount", 0) for s in receiver.spans)
    assert tenant.spent() == total == served_spend(model)
    assert tenant.active() == []


def test_callback_only_still_commits_everything(tenant: Tenant, model: ScriptedModel) -> None:
    tenant.budget("", 100_000_000)
    run_mode("callback-only", tenant, model)
    assert model.request_count == 3
    reservations = tenant.authority.reservations(tenant.id)
    assert len(reservations) == 5
    assert {r["status"] for r in reservations} == {"COMMITTED"}
    assert tenant.spent() == served_spend(model)


@pytest.mark.parametrize("fail_open", [False, True])
def test_authority_down(tenant: Tenant, model: ScriptedModel, fail_open: bool, spans, metric_reader) -> None:
    from runcycles import CyclesClient, CyclesConfig

    from otel_cycles import AuthorityUnavailable, CyclesBudgetCallback
    from tests.core.agents import make_agent

    dead = CyclesClient(
        CyclesConfig(
            base_url="http://127.0.0.1:9", api_key="k", connect_timeout=0.5, journal_enabled=False, retry_enabled=False
        )
    )
    callback = CyclesBudgetCallback(client=dead, tenant=tenant.id, fail_open=fail_open)
    agent = make_agent(model, [callback])
    if not fail_open:
        with pytest.raises(AuthorityUnavailable, match="127.0.0.1:9"):
            agent.run("hello")
        assert model.request_count == 0
        return
    before = {kind: metric_sum(metric_reader, "cycles.fail_open", **{"cycles.action.kind": kind}) for kind in KINDS}
    agent.run("hello")
    assert model.request_count == 3
    governed = [s for s in spans.get_finished_spans() if s.attributes.get("cycles.fail_open")]
    assert len(governed) == 5
    # One count per call that failed open, by kind: 3 LLM calls and 2 tool calls.
    grown = {k: metric_sum(metric_reader, "cycles.fail_open", **{"cycles.action.kind": k}) - before[k] for k in KINDS}
    assert grown == {"llm.completion": 3, "tool.execution": 2}
