"""pytest fixtures for testing budget-guarded agents offline (registered as the `otel_cycles` pytest plugin).

Installing otel-cycles registers this module through the `pytest11` entry point, so the fixtures are available in
any test suite without imports:

```python
import pytest
from any_agent import AgentConfig, AnyAgent

from otel_cycles import BudgetExceeded, CyclesBudgetCallback


@pytest.mark.cycles_budget(1_000_000, scope="agent:bot")  # $0.01 for the agent; the tenant gets the default $1
def test_bot_stops_when_broke(cycles_tenant, scripted_model):
    callback = CyclesBudgetCallback(client=cycles_tenant.client, tenant=cycles_tenant.id, agent="bot")
    agent = AnyAgent.create("tinyagent", AgentConfig(model_id="openai:gpt-4o", api_base=scripted_model.base_url,
                                                     api_key="sk-test", callbacks=[callback]))
    with pytest.raises(BudgetExceeded):
        agent.run("hello")
    assert cycles_tenant.spent("agent:bot") == 0
```

Fixtures:
    `cycles_authority`: a `LocalAuthority` on loopback with an in-memory ledger, one per test session; with
        `CYCLES_TEST_BASE_URL` and `CYCLES_TEST_ADMIN_KEY` set, that Cycles server instead (see the README).
    `cycles_tenant`: a fresh `CyclesTenant` (tenant, API key, client, budgets) per test. Budgets come from
        `@pytest.mark.cycles_budget(amount, scope="...")` markers (repeatable); a tenant-level budget of
        `DEFAULT_TENANT_BUDGET` is added unless a marker sets `scope=""`.
    `cycles_client`: `cycles_tenant.client`, a `runcycles.CyclesClient` bound to that tenant's API key.
    `cycles_tenant_factory`: `make(budgets={scope: amount})` for tests that need several tenants.
    `cycles_env`: `cycles_tenant` exported as `CYCLES_BASE_URL`, `CYCLES_API_KEY` and `CYCLES_TENANT`, for code that
        builds its client with `CyclesConfig.from_env()`.
    `scripted_model`: a running `ScriptedModel`; `@pytest.mark.scripted_model(tool_rounds=0, ...)` passes arguments.

After each test the ledger's invariants are checked (`allocated = remaining + spent + reserved + debt`).

Loading the plugin costs nothing: pytest loads it in every session of every project that installs otel-cycles, so it
imports only pytest at load time; the authority, runcycles and the model server are imported by the fixtures that use
them. It never imports AnyAgent (so it installs no tracer provider); only your tests' own imports do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from runcycles import CyclesClient

    from otel_cycles.testing._authority import AuthorityUnderTest
    from otel_cycles.testing._tenant import CyclesTenant
    from otel_cycles.testing.model_server import ScriptedModel

__all__ = [
    "cycles_authority",
    "cycles_client",
    "cycles_env",
    "cycles_tenant",
    "cycles_tenant_factory",
    "scripted_model",
]


def _marker_budgets(request: pytest.FixtureRequest) -> dict[str, int]:
    from otel_cycles.testing._tenant import DEFAULT_TENANT_BUDGET

    budgets: dict[str, int] = {}
    for marker in reversed(list(request.node.iter_markers("cycles_budget"))):
        amount = marker.args[0] if marker.args else marker.kwargs["amount"]
        budgets[str(marker.kwargs.get("scope", ""))] = int(amount)
    budgets.setdefault("", DEFAULT_TENANT_BUDGET)
    return budgets


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cycles_budget(amount, scope=''): a USD_MICROCENTS budget for the test's cycles_tenant at scope"
    )
    config.addinivalue_line("markers", "scripted_model(**kwargs): arguments for the scripted_model fixture")


@pytest.fixture(scope="session")
def cycles_authority() -> Iterator[AuthorityUnderTest]:
    """A `LocalAuthority` (in-memory ledger, loopback HTTP) shared by the test session, or the external server named
    by `CYCLES_TEST_BASE_URL` (provisioned over its admin API; see `otel_cycles.testing._authority`)."""
    from otel_cycles.testing._authority import open_test_authority

    with open_test_authority() as authority:
        yield authority


@pytest.fixture
def cycles_tenant_factory(cycles_authority: AuthorityUnderTest) -> Iterator[Callable[..., CyclesTenant]]:
    """`make(budgets={"": 1_000_000, "agent:bot": 50_000})`: a fresh tenant with those budgets on the authority."""
    from otel_cycles.testing._tenant import DEFAULT_TENANT_BUDGET, make_tenant

    def make(budgets: Mapping[str, int] | None = None) -> CyclesTenant:
        return make_tenant(cycles_authority, {"": DEFAULT_TENANT_BUDGET} if budgets is None else budgets)

    yield make
    assert cycles_authority.check_invariants() == []


@pytest.fixture
def cycles_tenant(request: pytest.FixtureRequest, cycles_tenant_factory: Callable[..., CyclesTenant]) -> CyclesTenant:
    """A fresh tenant with the budgets of the test's `cycles_budget` markers (default: $1 at tenant level)."""
    return cycles_tenant_factory(_marker_budgets(request))


@pytest.fixture
def cycles_client(cycles_tenant: CyclesTenant) -> CyclesClient:
    """A runcycles client bound to `cycles_tenant`'s API key."""
    return cycles_tenant.client


@pytest.fixture
def cycles_env(cycles_tenant: CyclesTenant, monkeypatch: pytest.MonkeyPatch) -> CyclesTenant:
    """`cycles_tenant`, exported as `CYCLES_BASE_URL`, `CYCLES_API_KEY`, `CYCLES_TENANT` (journal disabled)."""
    monkeypatch.setenv("CYCLES_BASE_URL", cycles_tenant.authority.base_url)
    monkeypatch.setenv("CYCLES_API_KEY", cycles_tenant.api_key)
    monkeypatch.setenv("CYCLES_TENANT", cycles_tenant.id)
    monkeypatch.setenv("CYCLES_JOURNAL_ENABLED", "false")
    return cycles_tenant


@pytest.fixture
def scripted_model(request: pytest.FixtureRequest) -> Iterator[ScriptedModel]:
    """A running `ScriptedModel` (OpenAI-compatible, loopback); `@pytest.mark.scripted_model(...)` configures it."""
    marker = request.node.get_closest_marker("scripted_model")
    kwargs: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    from otel_cycles.testing.model_server import ScriptedModel

    with ScriptedModel(**kwargs) as model:
        yield model
