"""OTel mode 1, attach: your OpenTelemetry setup stays as it is; `otel_cycles.attach()` adds the committing processor.

The provider and exporter below stand for an existing setup (made before AnyAgent is imported, as usual). Every
LLM and tool span your exporter receives carries the Cycles accounting: reservation, decision, scope, estimate and
actual cost, and `gen_ai.usage.cost.*`.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

# --- your existing setup ---
exporter = InMemorySpanExporter()  # e.g. OTLPSpanExporter(...) or ConsoleSpanExporter() in your application
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

# --- then AnyAgent and otel-cycles ---
from _local import balances, offline, report, search_web  # noqa: E402
from any_agent import AgentConfig, AnyAgent  # noqa: E402
from runcycles import CyclesClient, CyclesConfig  # noqa: E402

import otel_cycles  # noqa: E402

otel_cycles.attach()  # adds a CyclesSpanProcessor to the global provider (yours); idempotent


def main() -> None:
    client = CyclesClient(CyclesConfig.from_env())
    agent = AnyAgent.create("openai", AgentConfig(
        model_id="openai:gpt-4o",
        tools=[search_web],
        callbacks=[otel_cycles.CyclesBudgetCallback(client=client, tenant="acme", agent="observed-agent")],
    ))  # fmt: skip
    print(agent.run("What is budget authority?").final_output)

    governed = [s for s in exporter.get_finished_spans() if s.attributes and "cycles.decision" in s.attributes]
    for span in governed:
        attributes = span.attributes or {}
        print(
            f"{span.name:<28} decision={attributes['cycles.decision']!s} actual={attributes['cycles.actual.amount']!s}"
        )
    report(
        spans=[{"name": s.name, "attributes": dict(s.attributes or {})} for s in governed],
        balances=balances(client),
    )


if __name__ == "__main__":
    with offline({"tenant:acme": 100_000_000}, tool_rounds=2):
        main()
