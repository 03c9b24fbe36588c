"""Test helpers for otel-cycles users and for this project's own tests, examples and demo.

`ScriptedModel` is a stdlib-only, OpenAI-compatible chat-completions server on loopback that answers with scripted
tool calls and deterministic token usage, so AnyAgent agents of every framework run offline. `CyclesTenant` wraps a
tenant of an embedded `LocalAuthority` for tests. The pytest fixtures built on both live in
`otel_cycles.testing.plugin`, loaded automatically through the `pytest11` entry point.
"""

# Names resolve on first use (PEP 562): pytest imports this package for the `otel_cycles.testing.plugin` entry point in
# every session of every project that installs otel-cycles, and must not pay for runcycles or the model server then.
import typing as _typing
from importlib import import_module as _import_module

if _typing.TYPE_CHECKING:
    from otel_cycles.testing._tenant import DEFAULT_TENANT_BUDGET, CyclesTenant
    from otel_cycles.testing.model_server import (
        DEFAULT_FAIL_MARKER,
        DEFAULT_PARALLEL_MARKER,
        RequestBody,
        ScriptedModel,
        ScriptedResponse,
        ScriptFn,
        ServedRequest,
        ToolCall,
        Usage,
        default_usage,
    )

__all__ = [
    "DEFAULT_FAIL_MARKER",
    "DEFAULT_PARALLEL_MARKER",
    "DEFAULT_TENANT_BUDGET",
    "CyclesTenant",
    "RequestBody",
    "ScriptFn",
    "ScriptedModel",
    "ScriptedResponse",
    "ServedRequest",
    "ToolCall",
    "Usage",
    "default_usage",
]


_TENANT_NAMES = frozenset({"DEFAULT_TENANT_BUDGET", "CyclesTenant"})


def __getattr__(name: str) -> _typing.Any:
    if name not in __all__:
        raise AttributeError(f"module 'otel_cycles.testing' has no attribute {name!r}")
    module = "otel_cycles.testing._tenant" if name in _TENANT_NAMES else "otel_cycles.testing.model_server"
    value = getattr(_import_module(module), name)
    globals()[name] = value
    return value
