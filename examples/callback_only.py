"""OTel mode 3, callback-only: no OpenTelemetry setup at all, yet every call is reserved and committed.

`CyclesBudgetCallback` attaches a `CyclesSpanProcessor` to AnyAgent's tracer provider by itself; nothing is
exported anywhere. The authority's reservation list shows every call committed.
"""

from __future__ import annotations

from _local import balances, offline, report, search_web
from any_agent import AgentConfig, AnyAgent
from runcycles import CyclesClient, CyclesConfig

from otel_cycles import CyclesBudgetCallback


def main() -> None:
    client = CyclesClient(CyclesConfig.from_env())
    agent = AnyAgent.create("openai", AgentConfig(
        model_id="openai:gpt-4o",
        tools=[search_web],
        callbacks=[CyclesBudgetCallback(client=client, tenant="acme", agent="quiet-agent")],
    ))  # fmt: skip
    print(agent.run("What is budget authority?").final_output)

    response = client.list_reservations(tenant="acme")
    reservations = response.body.get("reservations", []) if response.is_success and response.body else []
    for r in reservations:
        committed = r.get("committed", {}).get("amount", 0)
        print(f"{r['action']['kind']:<16} {r['action']['name']:<14} {r['status']:<10} committed {committed:>9,}")
    report(
        statuses=sorted({r["status"] for r in reservations}),
        reservations=len(reservations),
        committed=sum(r.get("committed", {}).get("amount", 0) for r in reservations),
        balances=balances(client),
    )


if __name__ == "__main__":
    with offline({"tenant:acme": 100_000_000}, tool_rounds=2):
        main()
