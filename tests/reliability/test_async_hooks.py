"""tinyagent's hooks wait for the authority off the event loop (`otel_cycles._async_hooks`): while one run's
reservation request is held at a fault proxy, other coroutines on the same loop keep running; the run then finishes
with its spend exact and nothing left ACTIVE, and the agent's callback list is the user's again."""

from __future__ import annotations

import asyncio
import threading

from any_agent.callbacks import Context

from otel_cycles import CyclesBudgetCallback
from otel_cycles._async_hooks import AsyncHooks
from otel_cycles.testing import ScriptedModel
from tests.core.agents import answer_naming_a_tool, hand_run, make_agent
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
        agent = make_agent(model, [callback])

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


def test_a_hook_whose_reservation_was_sent_ahead_waits_for_its_answer_on_the_loop(
    stack: Stack, proxy: FaultProxy, spans
) -> None:
    """The tool call's lookahead (the run's second reservation request) is held at the proxy. Its before-hook waits
    for the answer without blocking the loop and without a pool thread: it starts only once another coroutine has
    released the request, and it runs on the loop's thread, as does the next LLM call's, whose lookahead answered at
    once. The first LLM call, reserved by its own hook, takes the pool thread. The released request (dropped by the
    proxy) is retried with its key and adopted; spend is exact, nothing is left ACTIVE."""
    stack.budget("", 10_000_000_000)
    proxy.add(path="/v1/reservations$", method="POST", times=1)  # the first LLM call's own: forwarded
    proxy.add(path="/v1/reservations$", method="POST", times=1, hold=True)
    events: list[tuple[str, bool]] = []
    loop_thread: list[int] = []

    class Recording(CyclesBudgetCallback):
        def before_llm_call(self, context, *args, **kwargs):
            events.append(("llm", threading.get_ident() == loop_thread[0]))
            return super().before_llm_call(context, *args, **kwargs)

        def before_tool_execution(self, context, *args, **kwargs):
            events.append(("tool", threading.get_ident() == loop_thread[0]))
            return super().before_tool_execution(context, *args, **kwargs)

    callback = Recording(client=stack.client(proxy.base_url, read_timeout=30.0), tenant=stack.tenant)
    with ScriptedModel(tool_rounds=1) as model:
        agent = make_agent(model, [callback])

        async def scenario() -> None:
            loop_thread.append(threading.get_ident())
            run = asyncio.create_task(agent.run_async("Research budget governance"))
            for _ in range(1000):  # this coroutine runs only while the loop is free
                if len(proxy.requests("/v1/reservations$", method="POST")) >= 2:
                    break
                await asyncio.sleep(0.01)
            events.append(("released", not run.done()))
            proxy.release_held()
            await asyncio.wait_for(run, timeout=60)

        asyncio.run(scenario())
    assert events == [("llm", False), ("released", True), ("tool", True), ("llm", True)]
    held, *later = proxy.requests("/v1/reservations$", method="POST")[1:]
    assert held.fault == "hold" and held.idempotency_key in [r.idempotency_key for r in later]
    governed = [s for s in spans.get_finished_spans() if s.attributes.get("cycles.action.kind")]
    assert [bool(s.attributes.get("cycles.lookahead")) for s in governed if s.attributes["cycles.action.kind"]] == [
        False,
        True,
        True,
    ]
    assert stack.wait_for(lambda: stack.spent() == Oracle(tool_costs={"search_web": DEFAULT_TOOL_COST}).spent(governed))
    assert stack.active() == []


def test_the_end_of_a_run_takes_the_pool_thread_only_while_it_has_a_commit_to_wait_for(
    stack: Stack, proxy: FaultProxy
) -> None:
    """Two runs driven by hand, each ended through `AsyncHooks` on a loop with another task on it: the one whose
    commit has landed ends on the loop's thread; the one whose commit is held at the proxy ends on a pool thread,
    which waits for it without blocking the loop, and finds it attempted once the proxy lets it go."""
    stack.budget("", 10_000_000_000)
    client = stack.client(proxy.base_url, read_timeout=30.0)
    callback = CyclesBudgetCallback(client=client, tenant=stack.tenant, lookahead=False)  # nothing else to drop
    ended_on: list[bool] = []
    original = callback.after_agent_invocation

    def recording(context, *args, **kwargs):
        ended_on.append(threading.get_ident() == loop_thread[0])
        return original(context, *args, **kwargs)

    callback.after_agent_invocation = recording  # type: ignore[method-assign]
    hooks = AsyncHooks(callback)
    loop_thread: list[int] = []

    async def end(context: Context, release: bool) -> None:
        loop_thread[:] = [threading.get_ident()]
        other = asyncio.create_task(asyncio.sleep(30))  # a second task: the run is not alone on its loop
        ending = asyncio.create_task(hooks.after_agent_invocation(context))
        if release:
            for _ in range(1000):  # this coroutine runs only while the loop is free
                if proxy.requests("/commit", "POST"):
                    break
                await asyncio.sleep(0.01)
            proxy.release_held()
        await asyncio.wait_for(ending, timeout=60)
        other.cancel()

    settled, _ = hand_run(callback)
    answer_naming_a_tool(callback, settled)
    assert callback._settlement.flush(30)
    asyncio.run(end(settled, release=False))

    proxy.add(path="/commit", method="POST", times=1, hold=True)
    held, _ = hand_run(callback)
    answer_naming_a_tool(callback, held)
    asyncio.run(end(held, release=True))

    assert ended_on == [True, False]
    assert stack.wait_for(lambda: stack.active() == [])
