"""tinyagent's hooks wait for the authority off the event loop (`otel_cycles._async_hooks`): while one run's
reservation request is held at a fault proxy, other coroutines on the same loop keep running; the run then finishes
with its spend exact and nothing left ACTIVE, and the agent's callback list is the user's again."""

from __future__ import annotations

import asyncio

from any_agent import AgentConfig, AnyAgent

from otel_cycles import CyclesBudgetCallback
from otel_cycles.testing import ScriptedModel
from tests.core.agents import search_web
from tests.oracle import DEFAULT_TOOL_COST, Oracle
from tests.reliability.conftest import Stack
from tests.reliability.fault_proxy import FaultProxy


def test_a_held_reservation_does_not_block_the_event_loop(stack: Stack, proxy: FaultProxy, spans) -> None:
    stack.budget("", 10_000_000_000)
    proxy.add(path="/v1/reservations$", method="POST", times=1, hold=True)
    # A read timeout far above the bounded waits below: were the loop blocked, the held request would fail the run
    # (fail-closed) only after the test's own waits gave up.
    callback = CyclesBudgetCallback(client=stack.client(proxy.base_url, read_timeout=30.0), tenant=stack.tenant)
    with ScriptedModel(tool_rounds=1) as model:
        agent = AnyAgent.create(
            "tinyagent",
            AgentConfig(
                model_id="openai:gpt-4o",
                api_base=model.base_url,
                api_key="sk-fake",
                tools=[search_web],
                callbacks=[callback],
            ),
        )

        configured = list(agent.config.callbacks)

        async def scenario() -> tuple[bool, bool]:
            run = asyncio.create_task(agent.run_async("Research budget governance"))
            # This coroutine can only observe the held request if the loop is free while the hook waits for it.
            for _ in range(1000):
                if proxy.requests("/v1/reservations$", method="POST"):
                    break
                await asyncio.sleep(0.01)
            observed_while_held = bool(proxy.requests("/v1/reservations$", method="POST")) and not run.done()
            proxy.release_held()
            await asyncio.wait_for(run, timeout=60)
            return observed_while_held, agent.config.callbacks == configured

        observed_while_held, restored = asyncio.run(scenario())
    assert observed_while_held
    assert restored
    governed = [s for s in spans.get_finished_spans() if s.attributes.get("cycles.action.kind")]
    assert [s.name.split()[0] for s in governed].count("call_llm") == 2
    assert all(s.attributes["cycles.decision"] == "ALLOW" for s in governed)
    assert stack.wait_for(lambda: stack.spent() == Oracle(tool_costs={"search_web": DEFAULT_TOOL_COST}).spent(governed))
    assert stack.active() == []
