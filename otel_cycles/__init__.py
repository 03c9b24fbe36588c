"""otel-cycles: budget governance for AnyAgent agents, accounted through OpenTelemetry.

Data flow: `CyclesBudgetCallback` reserves before each LLM/tool call (AnyAgent callback) and stamps the span;
`CyclesSpanProcessor` prices the finished span's `gen_ai.usage.*` and commits the actual cost to the Cycles
authority in the background; the cost and budget attributes travel with the span to any exporter.
"""

from importlib.metadata import version as _metadata_version

__version__ = _metadata_version("otel-cycles")

__all__ = ["__version__"]
