"""OTel mode 2, export: governed traces and metrics over OTLP, e.g. to the collector in `collector/`.

The endpoint is the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (default `http://localhost:4318`, OTLP/HTTP); start the
collector first (`collector/README.md`); if nothing listens, the example says it could not send (the budget is still
enforced). The collector sees cost and budget attributes on every LLM and tool span, plus otel-cycles' metrics
(`gen_ai.client.token.usage`, `cycles.cost.committed`, `cycles.reservation.decisions`, ...).
"""

from __future__ import annotations

import os

from _local import balances, offline, report, search_web
from any_agent import AgentConfig, AnyAgent
from runcycles import CyclesClient, CyclesConfig

import otel_cycles


def main() -> None:
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318")
    setup = otel_cycles.configure_export(endpoint)  # traces + metrics, OTLP/HTTP

    client = CyclesClient(CyclesConfig.from_env())
    agent = AnyAgent.create("openai", AgentConfig(
        model_id="openai:gpt-4o",
        tools=[search_web],
        callbacks=[otel_cycles.CyclesBudgetCallback(client=client, tenant="acme", agent="exported-agent")],
    ))  # fmt: skip
    print(agent.run("What is budget authority?").final_output)

    # A short-lived process: flush what is batched before exiting. shutdown() says whether every batch got through.
    if setup.shutdown():
        print(f"spans and metrics sent to {endpoint}")
    else:
        print(f"could not send spans to {endpoint}: is the collector running? The budget was enforced anyway.")
    report(endpoint=endpoint, balances=balances(client), delivered=setup.delivered())


if __name__ == "__main__":
    with offline({"tenant:acme": 100_000_000}, tool_rounds=2):
        main()
