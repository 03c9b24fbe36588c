"""Size an LLM request from whatever the framework passed to `before_llm_call`.

Frameworks pass different objects (OpenAI-style message dicts, LangChain `BaseMessage` lists, LlamaIndex and
smolagents `ChatMessage`s, ADK `LlmRequest`s). Instead of one parser per framework, we walk the arguments and count
the characters of every string we find (pydantic models and plain objects included), then use the common
4-characters-per-token rule. It over-counts a little (role names, tool schemas), which is the safe direction for a
reservation. The output side is bounded by any `max_tokens`-like setting found on the way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CHARS_PER_TOKEN = 4
_MAX_DEPTH = 12
_MAX_CHARS = 50_000_000
_MAX_TOKEN_KEYS = frozenset({"max_tokens", "max_output_tokens", "max_completion_tokens", "max_new_tokens"})
# Attributes that hold framework machinery rather than request content; walking them wastes time or recurses.
_SKIP_ATTRS = frozenset({"model", "client", "tracer", "callbacks", "parent", "agent", "_agent", "run_manager"})


@dataclass(frozen=True)
class RequestSize:
    """Estimated size of an LLM request."""

    input_tokens: int
    max_output_tokens: int | None


class _Walker:
    def __init__(self) -> None:
        self.chars = 0
        self.max_tokens: int | None = None
        self._seen: dict[int, Any] = {}
        """Objects walked, by id, kept alive until the walk ends: an id is unique only among live objects, and the walk
        makes temporaries (`model_dump` results, the argument containers) whose ids a later object could reuse."""

    def walk(self, value: Any, depth: int = 0) -> None:
        if self.chars >= _MAX_CHARS or depth > _MAX_DEPTH or value is None:
            return
        if isinstance(value, str):
            self.chars += len(value)
            return
        if isinstance(value, (bool, int, float, bytes)):
            return
        if id(value) in self._seen:
            return
        self._seen[id(value)] = value
        if isinstance(value, Mapping):
            for key, item in value.items():
                if isinstance(key, str) and key in _MAX_TOKEN_KEYS:
                    self._note_max_tokens(item)
                    continue
                self.walk(item, depth + 1)
            return
        if isinstance(value, (list, tuple, set, frozenset)):
            for item in value:
                self.walk(item, depth + 1)
            return
        self._walk_object(value, depth)

    def _walk_object(self, value: Any, depth: int) -> None:
        dump = getattr(value, "model_dump", None)
        if callable(dump):
            try:
                self.walk(dump(exclude_none=True), depth + 1)
                return
            except Exception:
                pass
        fields = getattr(value, "__dict__", None)
        if isinstance(fields, dict):
            for key, item in fields.items():
                if key in _MAX_TOKEN_KEYS:
                    self._note_max_tokens(item)
                elif key not in _SKIP_ATTRS:
                    self.walk(item, depth + 1)

    def _note_max_tokens(self, value: Any) -> None:
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            self.max_tokens = value if self.max_tokens is None else max(self.max_tokens, value)


def size_request(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> RequestSize:
    """Estimate input tokens and find the output bound in the arguments of `before_llm_call`. Never raises."""
    walker = _Walker()
    try:
        walker.walk(list(args), 0)
        walker.walk(dict(kwargs), 0)
    except Exception:
        pass  # A framework object we could not walk: estimate from what was counted so far.
    return RequestSize(math.ceil(walker.chars / CHARS_PER_TOKEN), walker.max_tokens)
