"""Test helpers for otel-cycles users and for this project's own tests, examples and demo.

`ScriptedModel` is a stdlib-only, OpenAI-compatible chat-completions server on loopback that answers with scripted
tool calls and deterministic token usage, so AnyAgent agents of every framework run offline. `CyclesTenant` wraps a
tenant of an embedded `LocalAuthority` for tests. The pytest fixtures built on both live in
`otel_cycles.testing.plugin`, loaded automatically through the `pytest11` entry point.
"""

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
