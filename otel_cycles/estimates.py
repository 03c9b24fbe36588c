"""How much to reserve before a call, and what a finished tool call costs.

LLM calls are priced from the request by default: input tokens estimated from the messages (`_request_size`),
output bounded by the request's `max_tokens` or an allowance, at the model's highest tier rates, plus a buffer,
rounded up. A fixed amount or a callable overrides that. A model with no known price gets a conservative fallback
amount and is flagged, never priced at 0. Tool calls reserve a flat amount, a per-tool amount, or a callable's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from otel_cycles import pricing
from otel_cycles._request_size import size_request

__all__ = ["DEFAULT_TOOL_ESTIMATE", "EstimatePolicy", "LlmCall", "ToolAmount"]

DEFAULT_TOOL_ESTIMATE = 100_000
"""USD_MICROCENTS reserved (and, unless `tool_cost` says otherwise, committed) per tool call: $0.001."""

ToolAmount = int | Mapping[str, int] | Callable[[str], int]
"""A flat amount, a per-tool map (tools not in it fall back to the default), or a callable of the tool name."""


@dataclass(frozen=True)
class LlmCall:
    """What an `llm_estimate` callable is given to size a reservation."""

    model: str
    """Normalised model id, e.g. `openai:gpt-4o`."""
    input_tokens: int
    """Input tokens estimated from the request (characters / 4)."""
    max_output_tokens: int | None
    """The request's `max_tokens`, if it set one."""
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]


def check_amount(value: Any, name: str) -> Any:
    """Validate a USD_MICROCENTS amount argument (callables and None pass through)."""
    if value is None or callable(value):
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int (USD_MICROCENTS), not {value!r}")
    return value


def _check_tool_amount(value: Any, name: str) -> ToolAmount:
    if isinstance(value, Mapping):
        for tool, amount in value.items():
            check_amount(amount, f"{name}[{tool!r}]")
        return value
    checked: ToolAmount = check_amount(value, name)
    return checked


def _tool_amount(value: ToolAmount | None, tool: str) -> tuple[int, str]:
    if isinstance(value, Mapping):
        if tool in value:
            return int(value[tool]), "tool_map"
        return DEFAULT_TOOL_ESTIMATE, "fixed"
    if callable(value):
        return int(check_amount(value(tool), "tool amount")), "callable"
    if value is None:
        return DEFAULT_TOOL_ESTIMATE, "fixed"
    return int(value), "fixed"


def price_known(model: pricing.ModelId | None) -> bool:
    """Whether `model` has a known price (custom or genai-prices)."""
    return model is not None and pricing.estimate_microcents(model, 1, 1, Decimal(0)) is not None


class EstimatePolicy:
    """The estimate settings of one callback; see `CyclesBudgetCallback` for the meaning of each argument."""

    def __init__(
        self,
        *,
        llm_estimate: int | Callable[[LlmCall], int] | None,
        tool_estimate: ToolAmount,
        tool_cost: ToolAmount | None,
        output_allowance: int,
        buffer: Decimal,
        unknown_model_estimate: int,
    ) -> None:
        self.llm_estimate = check_amount(llm_estimate, "llm_estimate")
        self.tool_estimate = _check_tool_amount(tool_estimate, "tool_estimate")
        self.tool_cost = None if tool_cost is None else _check_tool_amount(tool_cost, "tool_cost")
        self.output_allowance = output_allowance
        self.buffer = buffer
        self.unknown_model_estimate = unknown_model_estimate

    def llm(
        self, model: pricing.ModelId | None, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[int, str, bool]:
        """(amount, estimate source, whether the model has a known price) for one LLM call."""
        if isinstance(self.llm_estimate, int):
            return self.llm_estimate, "fixed", price_known(model)
        size = size_request(args, kwargs)
        if callable(self.llm_estimate):
            call = LlmCall(model.ref if model else "unknown", size.input_tokens, size.max_output_tokens, args, kwargs)
            return check_amount(self.llm_estimate(call), "llm_estimate()"), "callable", price_known(model)
        output_tokens = size.max_output_tokens or self.output_allowance
        amount = (
            pricing.estimate_microcents(model, size.input_tokens, output_tokens, self.buffer)
            if model is not None
            else None
        )
        if amount is None:
            return self.unknown_model_estimate, "fallback", False
        return amount, "priced", True

    def landing(
        self, model: pricing.ModelId | None, args: tuple[Any, ...], kwargs: Mapping[str, Any], room: int, floor: int
    ) -> tuple[int, int] | None:
        """Soft landing: (amount, output tokens) of the priced call with the most output tokens, fewer than the
        request asked for and at least `floor`, whose estimate fits in `room`; None if even `floor` does not fit."""
        if model is None or self.llm_estimate is not None:
            return None
        size = size_request(args, kwargs)

        def amount(tokens: int) -> int | None:
            return pricing.estimate_microcents(model, size.input_tokens, tokens, self.buffer)

        wanted = size.max_output_tokens or self.output_allowance
        fits = amount(floor)
        if floor >= wanted or fits is None or fits > room:
            return None
        low, high = floor, wanted - 1  # amount(low) fits; find the largest token count that still does
        while low < high:
            middle = (low + high + 1) // 2
            found = amount(middle)
            if found is not None and found <= room:
                low = middle
            else:
                high = middle - 1
        landed = amount(low)
        return (landed, low) if landed is not None else None

    def tool(self, tool: str) -> tuple[int, str, int | None]:
        """(amount to reserve, estimate source, flat cost to commit or None for "the reserved amount")."""
        amount, source = _tool_amount(self.tool_estimate, tool)
        cost = _tool_amount(self.tool_cost, tool)[0] if self.tool_cost is not None else None
        return amount, source, cost
