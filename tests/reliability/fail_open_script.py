"""One fail-open governed run in its own process, configured from `CYCLES_*` like a user's script, exiting normally.

Usage: python -m tests.reliability.fail_open_script MODEL_URL
Prints one JSON line: what the run should have cost (priced independently, `tests.oracle`), and how many calls failed
open. The process then exits on its own; the test measures nothing in time, it checks that it exits and what it logged.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

from any_agent import AgentConfig, AnyAgent
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_cycles import CyclesBudgetCallback
from tests.core.agents import search_web
from tests.reliability.helpers import expected_spend, governed

model_url = sys.argv[1]
exporter = InMemorySpanExporter()
provider = trace.get_tracer_provider()
assert isinstance(provider, TracerProvider)
provider.add_span_processor(SimpleSpanProcessor(exporter))

callback = CyclesBudgetCallback(fail_open=True, settle_timeout_s=5)
config = AgentConfig(model_id="openai:gpt-4o", api_base=model_url, api_key="sk-fake", tools=[search_web],
                     callbacks=[callback])  # fmt: skip
AnyAgent.create("tinyagent", config).run("Research budget governance")
fail_open = sum(bool((s.attributes or {}).get("cycles.fail_open")) for s in governed(exporter))
print(json.dumps({"committed": expected_spend(exporter), "fail_open": fail_open}), flush=True)
