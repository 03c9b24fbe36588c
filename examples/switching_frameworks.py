"""Guide section "Switching frameworks": one callback, three AnyAgent frameworks, no per-framework code.

Offline the Gemini agent is served by the scripted (OpenAI-compatible) model too; against your own setup it is
`google:gemini-2.0-flash` and needs `GEMINI_API_KEY`.
"""

from __future__ import annotations

from _local import balances, model_id, offline, report, search_web
from any_agent import AgentConfig, AnyAgent
from runcycles import CyclesClient, CyclesConfig

from otel_cycles import CyclesBudgetCallback


def main() -> None:
    client = CyclesClient(CyclesConfig.from_env())
    callback = CyclesBudgetCallback(client=client, tenant="acme", agent="switcher")
    spent: dict[str, int] = {}

    def run(framework: str, agent: AnyAgent) -> None:
        before = balances(client)["tenant:acme"]["spent"]
        trace = agent.run("What is budget authority?")
        spent[framework] = balances(client)["tenant:acme"]["spent"] - before
        print(f"{framework}: {trace.final_output}  (spent {spent[framework]:,} USD_MICROCENTS)")

    # OpenAI Agents
    agent = AnyAgent.create("openai", AgentConfig(
        model_id="openai:gpt-4o",
        callbacks=[callback],
        tools=[search_web],
    ))  # fmt: skip
    run("openai", agent)

    # LangChain
    agent = AnyAgent.create("langchain", AgentConfig(
        model_id="openai:gpt-4o",
        callbacks=[callback],
        tools=[search_web],
    ))  # fmt: skip
    run("langchain", agent)

    # Google (Gemini)
    agent = AnyAgent.create("google", AgentConfig(
        model_id=model_id("google:gemini-2.0-flash"),
        callbacks=[callback],
        tools=[search_web],
    ))  # fmt: skip
    run("google", agent)

    report(spent=spent, balances=balances(client))


if __name__ == "__main__":
    with offline({"tenant:acme": 100_000_000}, tool_rounds=1):
        main()
