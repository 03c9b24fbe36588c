"""Guide section "Post-run cost analysis": AnyAgent's trace cost and tokens next to the Cycles balances.

otel-cycles stamps `gen_ai.usage.input_cost` / `output_cost` on every LLM span, so `trace.cost` works again, and
it agrees with what was committed: LLM cost from the trace plus the tool calls' flat cost equals the spend.
"""

from __future__ import annotations

from _local import offline, report, search_web
from any_agent import AgentConfig, AnyAgent
from runcycles import CyclesClient, CyclesConfig

from otel_cycles import CyclesBudgetCallback


def main() -> None:
    client = CyclesClient(CyclesConfig.from_env())
    agent = AnyAgent.create("openai", AgentConfig(
        model_id="openai:gpt-4o",
        tools=[search_web],
        callbacks=[CyclesBudgetCallback(client=client, tenant="acme", agent="summarizer")],
    ))  # fmt: skip

    trace = agent.run("Summarize this document")

    # AnyAgent's built-in cost tracking
    print(f"Duration: {trace.duration}")
    print(f"Tokens: {trace.tokens}")
    print(f"Cost: {trace.cost}")

    # Cycles budget tracking
    response = client.get_balances(tenant="acme")
    if response.is_success and response.body is not None:
        for balance in response.body.get("balances", []):
            print(f"Scope: {balance['scope']}, remaining: {balance['remaining']}")

    spent = {b["scope_path"]: b["spent"]["amount"] for b in (response.body or {}).get("balances", [])}
    tools = [s for s in trace.spans if s.attributes.get("cycles.action.kind") == "tool.execution"]
    report(
        cost_usd=trace.cost.total_cost,
        input_tokens=trace.tokens.input_tokens,
        output_tokens=trace.tokens.output_tokens,
        tool_committed=sum(int(s.attributes["cycles.actual.amount"]) for s in tools),
        spent=spent,
    )


if __name__ == "__main__":
    with offline({"tenant:acme": 100_000_000}, tool_rounds=2):
        main()
