"""Guide sections "60-Second Quick Start" and "Using the callback: Basic agent".

Run: `python examples/quick_start.py` (offline by default; see `_local.py` for running against your own server).
"""

from __future__ import annotations

from _local import balances, offline, report
from any_agent import AgentConfig, AnyAgent
from runcycles import CyclesClient, CyclesConfig

from otel_cycles import BudgetExceeded, CyclesBudgetCallback


def main() -> None:
    # --- 60-second quick start (the guide's snippet) ---
    client = CyclesClient(CyclesConfig.from_env())

    agent = AnyAgent.create(
        agent_framework="openai",
        agent_config=AgentConfig(
            model_id="openai:gpt-4o",
            instructions="You are a helpful assistant.",
            callbacks=[CyclesBudgetCallback(client=client, tenant="acme", agent="my-agent")],
        ),
    )

    trace = agent.run("What is budget authority?")
    print(trace.final_output)

    # --- Basic agent: a second agent, its own budget, the denial handled ---
    callback = CyclesBudgetCallback(
        client=client,
        tenant="acme",
        agent="support-bot",
    )

    agent = AnyAgent.create(
        agent_framework="openai",
        agent_config=AgentConfig(
            model_id="openai:gpt-4o",
            instructions="You are a helpful assistant.",
            callbacks=[callback],
        ),
    )

    support_answer = None
    try:
        trace = agent.run("What's the weather in NYC?")
        support_answer = trace.final_output
        print(trace.final_output)
    except BudgetExceeded:
        print("Budget exhausted.")

    report(answer=str(support_answer), balances=balances(client))


if __name__ == "__main__":
    # support-bot's budget ($0.001) is below one gpt-4o reservation: its run is denied before the model is called.
    with offline({"tenant:acme": 100_000_000, "tenant:acme/agent:support-bot": 100_000}, tool_rounds=0):
        main()
