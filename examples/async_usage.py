"""Guide section "Async usage": `create_async` and `run_async`; the callback builds its client from `CYCLES_*`."""

from __future__ import annotations

import asyncio

from _local import balances, offline, report
from any_agent import AgentConfig, AnyAgent
from runcycles import CyclesClient, CyclesConfig

from otel_cycles import BudgetExceeded, CyclesBudgetCallback


async def main() -> None:
    agent = await AnyAgent.create_async(
        agent_framework="openai",
        agent_config=AgentConfig(
            model_id="openai:gpt-4o",
            instructions="You are a helpful assistant.",
            callbacks=[CyclesBudgetCallback(tenant="acme", agent="async-agent")],
        ),
    )

    answer = None
    try:
        trace = await agent.run_async("What is budget authority?")
        answer = trace.final_output
        print(trace.final_output)
    except BudgetExceeded:
        print("Budget exhausted.")

    report(answer=str(answer), balances=balances(CyclesClient(CyclesConfig.from_env())))


if __name__ == "__main__":
    with offline({"tenant:acme": 100_000_000, "tenant:acme/agent:async-agent": 10_000_000}, tool_rounds=0):
        asyncio.run(main())
