"""A governed agent in its own process, to be SIGKILLed before its commits reach the authority.

Usage: python -m tests.reliability.kill_script AUTHORITY_URL API_KEY TENANT MODEL_URL JOURNAL_DIR RUNS
Runs RUNS agent runs, prints one JSON line with the number of finished spans, then waits (bounded) to be killed.
The commits are journaled before they are sent, so they survive the kill. The test prices the run itself, from the
usage the scripted model served (never from what this process stamped on its spans).
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

from any_agent import AgentConfig, AnyAgent
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from runcycles import CyclesClient, CyclesConfig

from otel_cycles import CyclesBudgetCallback
from tests.core.agents import search_web

authority_url, api_key, tenant, model_url, journal_dir, runs = sys.argv[1:7]
exporter = InMemorySpanExporter()
provider = trace.get_tracer_provider()
assert isinstance(provider, TracerProvider)
provider.add_span_processor(SimpleSpanProcessor(exporter))

client = CyclesClient(CyclesConfig(base_url=authority_url, api_key=api_key, journal_dir=journal_dir))
callback = CyclesBudgetCallback(client=client, tenant=tenant, agent="doomed", settle_timeout_s=0)
config = AgentConfig(model_id="openai:gpt-4o", api_base=model_url, api_key="sk-fake", tools=[search_web],
                     callbacks=[callback])  # fmt: skip
for _ in range(int(runs)):
    AnyAgent.create("tinyagent", config).run("Research budget governance")
print(json.dumps({"spans": len(exporter.get_finished_spans())}), flush=True)
time.sleep(60)  # the test SIGKILLs us long before this
