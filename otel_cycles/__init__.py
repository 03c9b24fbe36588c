"""otel-cycles: budget governance for AnyAgent agents, accounted through OpenTelemetry.

Data flow: `CyclesBudgetCallback` reserves before each LLM/tool call (an AnyAgent callback) and stamps the span;
`CyclesSpanProcessor` commits the actual cost of the finished span to the Cycles authority in the background; the
cost and budget attributes travel with the span to any exporter (`attach`, `configure_export`, or nothing at all).
"""

# Public names resolve on first use (PEP 562), so importing a light submodule such as `otel_cycles.testing.plugin`
# (pytest loads it in every session of every project that installs otel-cycles) or `otel_cycles.authority` does not
# import AnyAgent, which installs a global tracer provider as a side effect.
import typing as _typing
from importlib import import_module as _import_module
from importlib.metadata import version as _metadata_version

if _typing.TYPE_CHECKING:
    from otel_cycles._frameworks import llama_index_model_type
    from otel_cycles.analysis import ScopeBalance, balances, preflight
    from otel_cycles.callback import CyclesBudgetCallback
    from otel_cycles.errors import (
        ActionNotPermitted,
        AuthorityUnavailable,
        BudgetExceeded,
        ConfigurationError,
        GovernanceStop,
        ReservationRejected,
    )
    from otel_cycles.estimates import DEFAULT_TOOL_ESTIMATE, LlmCall
    from otel_cycles.pricing import register_price
    from otel_cycles.processor import CyclesSpanProcessor
    from otel_cycles.redaction import ContentFilterSpanProcessor
    from otel_cycles.sampling import GenAIRecordingSampler
    from otel_cycles.setup import ExportSetup, attach, configure_export

_EXPORTS: dict[str, str] = {
    "llama_index_model_type": "otel_cycles._frameworks",
    "ScopeBalance": "otel_cycles.analysis",
    "balances": "otel_cycles.analysis",
    "preflight": "otel_cycles.analysis",
    "CyclesBudgetCallback": "otel_cycles.callback",
    "ActionNotPermitted": "otel_cycles.errors",
    "AuthorityUnavailable": "otel_cycles.errors",
    "BudgetExceeded": "otel_cycles.errors",
    "ConfigurationError": "otel_cycles.errors",
    "GovernanceStop": "otel_cycles.errors",
    "ReservationRejected": "otel_cycles.errors",
    "DEFAULT_TOOL_ESTIMATE": "otel_cycles.estimates",
    "LlmCall": "otel_cycles.estimates",
    "register_price": "otel_cycles.pricing",
    "CyclesSpanProcessor": "otel_cycles.processor",
    "ContentFilterSpanProcessor": "otel_cycles.redaction",
    "GenAIRecordingSampler": "otel_cycles.sampling",
    "ExportSetup": "otel_cycles.setup",
    "attach": "otel_cycles.setup",
    "configure_export": "otel_cycles.setup",
}

__version__ = _metadata_version("otel-cycles")

__all__ = [
    "DEFAULT_TOOL_ESTIMATE",
    "ActionNotPermitted",
    "AuthorityUnavailable",
    "ContentFilterSpanProcessor",
    "BudgetExceeded",
    "ConfigurationError",
    "CyclesBudgetCallback",
    "CyclesSpanProcessor",
    "ExportSetup",
    "GenAIRecordingSampler",
    "GovernanceStop",
    "LlmCall",
    "ReservationRejected",
    "ScopeBalance",
    "__version__",
    "attach",
    "balances",
    "configure_export",
    "llama_index_model_type",
    "preflight",
    "register_price",
]


def __getattr__(name: str) -> _typing.Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'otel_cycles' has no attribute {name!r}")
    value = getattr(_import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
