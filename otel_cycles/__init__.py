"""otel-cycles: budget governance for AnyAgent agents, accounted through OpenTelemetry.

Data flow: `CyclesBudgetCallback` reserves before each LLM/tool call (an AnyAgent callback) and stamps the span;
`CyclesSpanProcessor` commits the actual cost of the finished span to the Cycles authority in the background; the
cost and budget attributes travel with the span to any exporter (`attach`, `configure_export`, or nothing at all).
"""

from importlib.metadata import version as _metadata_version

from otel_cycles._frameworks import llama_index_model_type
from otel_cycles.analysis import ScopeBalance, balances, preflight
from otel_cycles.callback import CyclesBudgetCallback
from otel_cycles.errors import AuthorityUnavailable, BudgetExceeded, GovernanceStop, ReservationRejected
from otel_cycles.estimates import DEFAULT_TOOL_ESTIMATE, LlmCall
from otel_cycles.pricing import register_price
from otel_cycles.processor import CyclesSpanProcessor
from otel_cycles.sampling import GenAIRecordingSampler
from otel_cycles.setup import ExportSetup, attach, configure_export

__version__ = _metadata_version("otel-cycles")

__all__ = [
    "DEFAULT_TOOL_ESTIMATE",
    "AuthorityUnavailable",
    "BudgetExceeded",
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
