"""The `otel_cycles` pytest plugin, used the way a user's test suite would use it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from any_agent import AgentConfig, AnyAgent

from otel_cycles import CyclesBudgetCallback
from otel_cycles.testing import CyclesTenant, ScriptedModel

pytest_plugins = ["pytester"]

USER_TEST_FILE = """
import pytest
from any_agent import AgentConfig, AnyAgent
from runcycles import CyclesConfig

from otel_cycles import BudgetExceeded, CyclesBudgetCallback


def make_agent(model, callback):
    config = AgentConfig(model_id="openai:gpt-4o", api_base=model.base_url, api_key="sk-test", callbacks=[callback])
    return AnyAgent.create("tinyagent", config)


@pytest.mark.cycles_budget(1_000, scope="agent:bot")
def test_bot_is_stopped_before_the_model_is_called(cycles_tenant, scripted_model):
    callback = CyclesBudgetCallback(client=cycles_tenant.client, tenant=cycles_tenant.id, agent="bot")
    with pytest.raises(BudgetExceeded):
        make_agent(scripted_model, callback).run("hello")
    assert scripted_model.request_count == 0
    assert cycles_tenant.spent("agent:bot") == 0


@pytest.mark.scripted_model(tool_rounds=0)
def test_client_from_the_environment(cycles_env, scripted_model):
    assert CyclesConfig.from_env().tenant == cycles_env.id
    make_agent(scripted_model, CyclesBudgetCallback(agent="env-bot")).run("hello")
    assert cycles_env.spent() > 0 and cycles_env.reservations(status="ACTIVE") == []
"""


def test_plugin_is_registered_as_a_pytest11_entry_point() -> None:
    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins.get("otel_cycles") == "otel_cycles.testing.plugin", "reinstall the package: make install"


def test_a_user_suite_runs_on_the_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TEST_FILE)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


@pytest.mark.cycles_budget(50_000_000, scope="workflow:w")
@pytest.mark.cycles_budget(10_000_000, scope="workflow:w/agent:a")
@pytest.mark.scripted_model(tool_rounds=1)
def test_fixtures_directly(cycles_tenant: CyclesTenant, scripted_model: ScriptedModel) -> None:
    callback = CyclesBudgetCallback(client=cycles_tenant.client, tenant=cycles_tenant.id, workflow="w", agent="a")
    config = AgentConfig(
        model_id="openai:gpt-4o", api_base=scripted_model.base_url, api_key="sk-test", callbacks=[callback]
    )
    AnyAgent.create("tinyagent", config).run("hello")
    assert scripted_model.request_count == 1  # no tools offered: one answer
    spent = cycles_tenant.spent("workflow:w/agent:a")
    assert spent > 0 and cycles_tenant.spent("workflow:w") == cycles_tenant.spent() == spent
    assert cycles_tenant.remaining("workflow:w/agent:a") == 10_000_000 - spent


def test_tenant_factory(cycles_tenant_factory: Callable[..., CyclesTenant]) -> None:
    rich, poor = cycles_tenant_factory(), cycles_tenant_factory({"": 1})
    assert rich.id != poor.id
    assert rich.remaining() == 100_000_000 and poor.remaining() == 1
    with pytest.raises(KeyError):
        poor.balance("agent:none")


def test_loading_the_plugin_imports_nothing_heavy() -> None:
    """pytest loads the plugin in every session where otel-cycles is installed: it must not import runcycles (httpx,
    pydantic), the authority, the model server or AnyAgent until a fixture is used."""
    heavy = ["runcycles", "httpx", "otel_cycles.authority", "otel_cycles.testing.model_server", "any_agent"]
    code = f"import sys, pytest, otel_cycles.testing.plugin\nprint(sorted(m for m in {heavy!r} if m in sys.modules))"
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120,
                          env={**os.environ, "PYTHONPATH": root})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
