"""Runs one governed tinyagent agent in a fresh interpreter, in the mode named on the command line.

Usage: python -m tests.core.mode_script MODE AUTHORITY_URL API_KEY TENANT MODEL_URL [OTLP_ENDPOINT]
Prints one JSON line: the final output and, for `attach`, the attributes of the spans the user's exporter saw.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

mode, authority_url, api_key, tenant, model_url = sys.argv[1:6]
otlp = sys.argv[6] if len(sys.argv) > 6 else None
result: dict[str, object] = {}

if mode == "attach":
    # The user's own setup, made before AnyAgent is imported: their provider, their exporter first.
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    user_exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(user_exporter))
    trace.set_tracer_provider(provider)

from any_agent import AgentConfig, AnyAgent  # noqa: E402
from runcycles import CyclesClient, CyclesConfig  # noqa: E402

import otel_cycles  # noqa: E402
from tests.core.agents import search_web  # noqa: E402

setup = None
if mode == "attach":
    otel_cycles.attach()
elif mode == "export":
    setup = otel_cycles.configure_export(otlp, metric_interval_ms=200)

client = CyclesClient(CyclesConfig(base_url=authority_url, api_key=api_key, journal_enabled=False))
# Callback-only mode is exactly the guide's quick start: nothing but the callback.
callback = otel_cycles.CyclesBudgetCallback(client=client, tenant=tenant, agent="mode-agent")
agent = AnyAgent.create(
    "tinyagent",
    AgentConfig(
        model_id="openai:gpt-4o", api_base=model_url, api_key="sk-fake", tools=[search_web], callbacks=[callback]
    ),
)
trace_ = agent.run("Research budget governance")
result["final_output"] = str(trace_.final_output)
if mode == "attach":
    result["spans"] = [
        {"name": s.name, "attributes": dict(s.attributes or {})} for s in user_exporter.get_finished_spans()
    ]
if setup is not None:
    setup.shutdown()
print(json.dumps(result))
