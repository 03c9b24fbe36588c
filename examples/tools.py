"""Guide section "With tools": every tool execution gets its own reservation, and the budget stops the research.

Offline, the scripted model keeps asking for searches; the agent's $0.017 lasts two tool rounds.
"""

from __future__ import annotations

from _local import balances, offline, report, search_web, visit_webpage
from any_agent import AgentConfig, AnyAgent
from runcycles import CyclesClient, CyclesConfig

from otel_cycles import BudgetExceeded, CyclesBudgetCallback


def main() -> None:
    client = CyclesClient(CyclesConfig.from_env())

    callback = CyclesBudgetCallback(
        client=client,
        tenant="acme",
        agent="research-agent",
        tool_estimate=200_000,
    )

    agent = AnyAgent.create(
        agent_framework="openai",
        agent_config=AgentConfig(
            model_id="openai:gpt-4o",
            instructions="Research topics using web search.",
            tools=[search_web, visit_webpage],
            callbacks=[callback],
        ),
    )

    try:
        trace = agent.run("Find the latest AI safety research papers")
        print(trace.final_output)
        stopped, spans = False, trace.spans
    except BudgetExceeded as exc:
        print("Agent stopped — budget exhausted.")
        stopped, spans = True, exc.trace.spans if exc.trace else []

    tool_commits = [
        span.attributes.get("cycles.actual.amount")
        for span in spans
        if span.attributes.get("cycles.action.kind") == "tool.execution"
    ]
    report(stopped=stopped, tool_commits=tool_commits, balances=balances(client))


if __name__ == "__main__":
    with offline({"tenant:acme": 100_000_000, "tenant:acme/agent:research-agent": 1_700_000}, tool_rounds=10):
        main()
