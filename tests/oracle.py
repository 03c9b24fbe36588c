"""The pricing oracle of the test suite: what a governed call should have committed, computed without otel_cycles.

It knows only what the test tells it and what the framework reported, never what otel-cycles stamped:

- a tool call that finished commits the flat cost the test configured for that tool (`tool_costs`, by tool name);
  a tool the oracle was not told about fails the test (KeyError), so a test cannot fall back to the code's own figure;
- an LLM call whose framework-reported usage (`gen_ai.usage.*`: input, output, cache read, cache write, reasoning)
  is valid and whose model genai-prices knows commits genai-prices' price of that usage, called here directly;
  reasoning tokens are part of the output tokens (semconv), so they are priced as output;
- an LLM call with no usable usage (none, 0/0, invalid) or an unpriced model commits the fixed amount the test
  configured for it (`unpriced_llm`: its `llm_estimate` or `unknown_model_estimate`); unset, the test fails;
- a call that ended with ERROR status and has no usable usage commits nothing (its reservation is released).

The span's status and `gen_ai.usage.*` attributes are the framework's (AnyAgent's), not otel-cycles'; the tool and
model names are read from what the test configured or AnyAgent reported (`gen_ai.tool.name`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import genai_prices

MICROCENTS_PER_USD = Decimal(100_000_000)
DEFAULT_TOOL_COST = 100_000
"""The README's default cost of a tool call ($0.001), for tests that configure none."""

_INPUT = "gen_ai.usage.input_tokens"
_OUTPUT = "gen_ai.usage.output_tokens"
_CACHE_READ = "gen_ai.usage.cache_read.input_tokens"
_CACHE_WRITE = "gen_ai.usage.cache_creation.input_tokens"
_REASONING = "gen_ai.usage.reasoning.output_tokens"


def llm_price(
    input_tokens: int,
    output_tokens: int,
    *,
    cache_read: int = 0,
    cache_write: int = 0,
    model: str = "gpt-4o",
    provider: str = "openai",
) -> int:
    """genai-prices' price of one LLM call's usage in USD_MICROCENTS (half-even); LookupError if the model is
    unknown."""
    price = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
        ),
        model,
        provider_id=provider,
    )
    return int((price.total_price * MICROCENTS_PER_USD).to_integral_value(rounding=ROUND_HALF_EVEN))


def _count(value: Any) -> int | None:
    """A token count the oracle accepts: a non-negative integer (or integral float); None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        return None
    return int(value) if value >= 0 else None


@dataclass(frozen=True)
class Oracle:
    """What each governed call should commit, from the test's own configuration (see the module docstring)."""

    tool_costs: Mapping[str, int] = field(default_factory=dict)
    """Flat cost per tool name, as the test configured it (`tool_cost=`, or the default for `tool_estimate`)."""
    unpriced_llm: int | None = None
    """What an LLM call without priceable usage commits, as the test configured it; None: such a call fails."""
    model: str = "gpt-4o"
    provider: str = "openai"

    def usage_price(self, attributes: Mapping[str, Any]) -> int | None:
        """genai-prices' price of the reported usage; None when there is no valid usage or the model is unknown."""
        counts = {
            name: _count(attributes.get(name, 0)) for name in (_INPUT, _OUTPUT, _CACHE_READ, _CACHE_WRITE, _REASONING)
        }
        if any(value is None for value in counts.values()):
            return None
        values = {name: int(value or 0) for name, value in counts.items()}
        if values[_INPUT] + values[_OUTPUT] == 0 or values[_INPUT] > 10**9 or values[_OUTPUT] > 10**9:
            return None
        if values[_CACHE_READ] + values[_CACHE_WRITE] > values[_INPUT] or values[_REASONING] > values[_OUTPUT]:
            return None
        try:
            return llm_price(
                values[_INPUT],
                values[_OUTPUT],
                cache_read=values[_CACHE_READ],
                cache_write=values[_CACHE_WRITE],
                model=self.model,
                provider=self.provider,
            )
        except LookupError:
            return None

    def expected(self, span: Any) -> int:
        """What one finished governed span's call should have committed (0: released, or never reserved)."""
        attributes: Mapping[str, Any] = span.attributes or {}
        errored = span.status.status_code.name == "ERROR"
        if "gen_ai.tool.name" in attributes or str(span.name).startswith("execute_tool"):
            if errored:
                return 0
            name = str(attributes.get("gen_ai.tool.name"))
            if name not in self.tool_costs:
                raise KeyError(f"the oracle was not told the cost of tool {name!r}: pass it in tool_costs")
            return int(self.tool_costs[name])
        priced = self.usage_price(attributes)
        if priced is not None:
            return priced
        if errored:
            return 0
        if self.unpriced_llm is None:
            raise KeyError(f"span {span.name!r} has no priceable usage and the oracle was given no unpriced_llm amount")
        return self.unpriced_llm

    def spent(self, spans: Iterable[Any]) -> int:
        """The expected spend of the governed spans (those otel-cycles reserved for: `cycles.action.kind` set)."""
        return sum(self.expected(span) for span in spans if (span.attributes or {}).get("cycles.action.kind"))
