"""Guide section "Error handling": `BudgetExceeded` vs `AgentRunError`, and a pipeline that degrades instead of failing.

Offline budgets are set so that every degradation path is taken once:
* the researcher ($0.005) cannot afford one gpt-4o call: the pipeline uses the **cached result**;
* the writer ($0.006) cannot afford gpt-4o either, but can afford gpt-4o-mini: it retries on the **cheaper model**;
* the editor ($0.0001) can afford nothing: that **stage is skipped**, and the raw report goes out.
A request the model fails on (HTTP 500) shows the other branch: `AgentRunError`, with nothing charged.
"""

from __future__ import annotations

from typing import Any

from _local import balances, offline, report, search_web
from any_agent import AgentConfig, AgentRunError, AnyAgent
from runcycles import CyclesClient, CyclesConfig

from otel_cycles import BudgetExceeded, CyclesBudgetCallback

cached_research = {"quantum computing": "Cached: qubits, error correction, and a roadmap to fault tolerance."}


def make_agent(
    client: CyclesClient, name: str, model: str = "openai:gpt-4o", tools: list[Any] | None = None
) -> AnyAgent:
    callback = CyclesBudgetCallback(client=client, tenant="acme", workflow="pipeline", agent=name)
    return AnyAgent.create("openai", AgentConfig(model_id=model, tools=tools or [], callbacks=[callback]))


def main() -> None:
    client = CyclesClient(CyclesConfig.from_env())
    outcome: dict[str, str] = {}
    errors: list[str] = []

    # --- BudgetExceeded or AgentRunError (the guide's snippet) ---
    for agent, request in ((make_agent(client, "editor"), "Process this request"),
                           (make_agent(client, "support"), "Process this request FAIL500")):  # fmt: skip
        try:
            agent.run(request)
        except BudgetExceeded as e:
            print(f"Budget denied: {e}")
            print(f"Partial trace: {[s.name for s in e.trace.spans] if e.trace else None}")  # up to cancellation point
            errors.append("BudgetExceeded")
        except AgentRunError as e:
            print(f"Unexpected error: {e.original_exception}")
            print(f"Trace: {[s.name for s in e.trace.spans]}")
            errors.append("AgentRunError")

    # --- A pipeline that degrades: cached result, cheaper model, skipped stage ---
    researcher = make_agent(client, "researcher", tools=[search_web])
    try:
        research_trace = researcher.run("quantum computing")
        research = research_trace.final_output
        outcome["research"] = "fresh"
    except BudgetExceeded:
        research = cached_research.get("quantum computing", "No data available.")
        outcome["research"] = "cached"

    report_text = None
    for model in ("openai:gpt-4o", "openai:gpt-4o-mini"):
        try:
            report_trace = make_agent(client, "writer", model=model).run(f"Write a report based on: {research}")
            report_text = str(report_trace.final_output)
            outcome["writer_model"] = model
            break
        except BudgetExceeded as e:
            print(f"writer: {model} denied ({e.reason_code}), trying a cheaper model")
    if report_text is None:
        report_text = f"Raw research (report generation skipped):\n{research}"
        outcome["writer_model"] = "skipped"

    try:
        report_text = str(make_agent(client, "editor").run(f"Edit this report: {report_text}").final_output)
        outcome["editor"] = "edited"
    except BudgetExceeded:
        outcome["editor"] = "skipped"  # ship the unedited report
    print(report_text)
    report(**outcome, errors=errors, balances=balances(client))


if __name__ == "__main__":
    budgets = {
        "tenant:acme": 100_000_000,
        "tenant:acme/workflow:pipeline": 10_000_000,
        "tenant:acme/workflow:pipeline/agent:researcher": 500_000,
        "tenant:acme/workflow:pipeline/agent:writer": 600_000,
        "tenant:acme/workflow:pipeline/agent:editor": 10_000,
        "tenant:acme/workflow:pipeline/agent:support": 5_000_000,
    }
    with offline(budgets, tool_rounds=1):
        main()
