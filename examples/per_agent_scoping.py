"""Guide section "Per-agent budget scoping": tenant (acme) > workflow (content-pipeline) > agent (researcher, writer).

Each agent is charged at its own scope and at every scope above it; the authority holds a limit at each level.
"""

from __future__ import annotations

from _local import balances, offline, report, search_web
from any_agent import AgentConfig, AnyAgent
from runcycles import CyclesClient, CyclesConfig

from otel_cycles import CyclesBudgetCallback


def main() -> None:
    client = CyclesClient(CyclesConfig.from_env())

    researcher_callback = CyclesBudgetCallback(
        client=client,
        tenant="acme",
        workflow="content-pipeline",
        agent="researcher",
        llm_estimate=3_000_000,
    )

    writer_callback = CyclesBudgetCallback(
        client=client,
        tenant="acme",
        workflow="content-pipeline",
        agent="writer",
        llm_estimate=2_000_000,
    )

    researcher = AnyAgent.create("openai", AgentConfig(
        model_id="openai:gpt-4o",
        instructions="Research topics thoroughly.",
        tools=[search_web],
        callbacks=[researcher_callback],
    ))  # fmt: skip

    writer = AnyAgent.create("openai", AgentConfig(
        model_id="openai:gpt-4o",
        instructions="Write clear reports from research.",
        callbacks=[writer_callback],
    ))  # fmt: skip

    research = researcher.run("quantum computing").final_output
    report_text = writer.run(f"Write a report based on: {research}").final_output
    print(report_text)
    for scope, balance in balances(client).items():
        print(f"{scope:<56} spent {balance['spent']:>10,}  remaining {balance['remaining']:>12,}")
    report(balances=balances(client))


if __name__ == "__main__":
    budgets = {
        "tenant:acme": 100_000_000,
        "tenant:acme/workflow:content-pipeline": 20_000_000,
        "tenant:acme/workflow:content-pipeline/agent:researcher": 12_000_000,
        "tenant:acme/workflow:content-pipeline/agent:writer": 4_000_000,
    }
    with offline(budgets, tool_rounds=1):
        main()
