"""Read token usage from a span's `gen_ai.usage.*` attributes, accepting the aliases seen in the wild.

The rule for bad input (documented in the README): a count that is missing, negative, not an integer, a bool, a
string, or larger than `MAX_TOKENS` makes the whole reading `invalid`; an all-zero or absent reading is `missing`.
Neither is priced as free: the caller commits the reservation estimate instead and marks the cost as estimated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

MAX_TOKENS = 100_000_000
"""Upper bound for one call's token count; anything larger is treated as corrupt, not billed."""

# Canonical key first; later keys are aliases (deprecated semconv names, OpenLLMetry, OpenInference).
_INPUT = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
_OUTPUT = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion")
_CACHE_READ = (
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "llm.token_count.prompt_details.cache_read",
)
_CACHE_WRITE = (
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "llm.token_count.prompt_details.cache_write",
)
_REASONING = (
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.reasoning_tokens",
    "llm.usage.reasoning_tokens",
    "llm.token_count.completion_details.reasoning",
)


class UsageStatus(str, Enum):
    """How trustworthy a usage reading is."""

    OK = "ok"
    MISSING = "missing"
    """No usage attributes, or input and output both 0 (llama_index streaming, smolagents stream mode)."""
    INVALID = "invalid"
    """Some count is negative, non-integer, non-numeric or absurdly large."""


@dataclass(frozen=True)
class TokenUsage:
    """Token counts of one LLM call. Cache and reasoning counts are included in input/output (semconv rule)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(frozen=True)
class UsageReading:
    """The usage read from a span and whether it can be billed."""

    usage: TokenUsage
    status: UsageStatus
    problem: str | None = None
    """Human-readable reason when `status` is not OK."""


class _BadCount(ValueError):
    pass


def _count(value: Any, key: str) -> int:
    if isinstance(value, bool):
        raise _BadCount(f"{key} is a bool")
    if isinstance(value, int):
        count = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise _BadCount(f"{key}={value!r} is not a whole number")
        count = int(value)
    else:
        raise _BadCount(f"{key} has type {type(value).__name__}")
    if count < 0:
        raise _BadCount(f"{key}={count} is negative")
    if count > MAX_TOKENS:
        raise _BadCount(f"{key}={count} exceeds {MAX_TOKENS}")
    return count


def _first(attributes: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[str, Any] | None:
    for key in keys:
        if key in attributes:
            return key, attributes[key]
    return None


def read_usage(attributes: Mapping[str, Any] | None) -> UsageReading:
    """Read and validate the token usage in `attributes`; never raises."""
    attributes = attributes or {}
    counts: dict[str, int] = {}
    try:
        for name, keys in (
            ("input_tokens", _INPUT),
            ("output_tokens", _OUTPUT),
            ("cache_read_tokens", _CACHE_READ),
            ("cache_write_tokens", _CACHE_WRITE),
            ("reasoning_tokens", _REASONING),
        ):
            found = _first(attributes, keys)
            if found is not None:
                counts[name] = _count(found[1], found[0])
    except _BadCount as exc:
        return UsageReading(TokenUsage(), UsageStatus.INVALID, str(exc))
    usage = TokenUsage(**counts)
    if usage.input_tokens == 0 and usage.output_tokens == 0:
        return UsageReading(usage, UsageStatus.MISSING, "no token usage reported")
    if usage.cache_read_tokens + usage.cache_write_tokens > usage.input_tokens:
        return UsageReading(usage, UsageStatus.INVALID, "cache tokens exceed input tokens")
    if usage.reasoning_tokens > usage.output_tokens:
        return UsageReading(usage, UsageStatus.INVALID, "reasoning tokens exceed output tokens")
    return UsageReading(usage, UsageStatus.OK)
