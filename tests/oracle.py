"""The pricing oracle of the test suite: what a governed span should have committed, computed without otel_cycles.

genai-prices on the span's reported usage; for tool calls, the flat tool cost (`tool_cost`, or the reservation
estimate when the callback commits the estimate); for LLM calls whose usage could not be priced
(`gen_ai.usage.cost.source` is not `local`), the reservation estimate, as the documented rule says.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import genai_prices

MICROCENTS_PER_USD = Decimal(100_000_000)


def priced_microcents(
    attributes: Mapping[str, Any], *, model: str = "gpt-4o", provider: str = "openai", tool_cost: int | None = None
) -> int:
    """The USD_MICROCENTS the span's call should have cost."""
    if attributes["cycles.action.kind"] == "tool.execution":
        return tool_cost if tool_cost is not None else int(attributes["cycles.estimate.amount"])
    if attributes.get("gen_ai.usage.cost.source") != "local":
        return int(attributes["cycles.estimate.amount"])
    price = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=attributes["gen_ai.usage.input_tokens"], output_tokens=attributes["gen_ai.usage.output_tokens"]
        ),
        model,
        provider_id=provider,
    )
    return int((price.total_price * MICROCENTS_PER_USD).to_integral_value())
