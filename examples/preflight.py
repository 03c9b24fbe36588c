"""Guide section "Preflight budget check": ask `decide()` before running an agent, without consuming anything.

support-bot has $0.10 and runs; ticket-bot has $0.01, below the $0.05 the check asks for, so its run is skipped.
`otel_cycles.preflight()` is the same check as a one-liner.
"""

from __future__ import annotations

import uuid

from _local import balances, offline, report
from any_agent import AgentConfig, AnyAgent
from runcycles import Action, Amount, CyclesClient, CyclesConfig, DecisionRequest, Subject, Unit

from otel_cycles import CyclesBudgetCallback, preflight


def main() -> None:
    client = CyclesClient(CyclesConfig.from_env())
    outcomes: dict[str, str] = {}

    for bot in ("support-bot", "ticket-bot"):
        agent = AnyAgent.create("openai", AgentConfig(
            model_id="openai:gpt-4o",
            instructions="You are a helpful assistant.",
            callbacks=[CyclesBudgetCallback(client=client, tenant="acme", agent=bot)],
        ))  # fmt: skip

        response = client.decide(DecisionRequest(
            idempotency_key=f"decide-{uuid.uuid4()}",
            subject=Subject(tenant="acme", agent=bot),
            action=Action(kind="llm.completion", name="gpt-4o"),
            estimate=Amount(unit=Unit.USD_MICROCENTS, amount=5_000_000),
        ))  # fmt: skip

        if response.is_success:
            decision = response.get_body_attribute("decision")
            if decision == "DENY":
                print("Budget insufficient — skipping agent run.")
                outcomes[bot] = "skipped"
            else:
                trace = agent.run("Handle this support ticket")
                outcomes[bot] = "ran"
                print(f"{bot}: {trace.final_output}")

    # The same question through otel_cycles' helper: (allowed, reason_code).
    allowed, reason = preflight(client, estimate=5_000_000, tenant="acme", agent="ticket-bot", action_name="gpt-4o")
    print(f"otel_cycles.preflight for ticket-bot: allowed={allowed} reason={reason}")
    report(outcomes=outcomes, helper=[allowed, reason], balances=balances(client))


if __name__ == "__main__":
    budgets = {
        "tenant:acme": 100_000_000,
        "tenant:acme/agent:support-bot": 10_000_000,
        "tenant:acme/agent:ticket-bot": 1_000_000,
    }
    with offline(budgets, tool_rounds=0):
        main()
