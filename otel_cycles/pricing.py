"""Prices: token usage → USD (`Decimal`) → Cycles `USD_MICROCENTS` (`int`), via genai-prices.

Money stays `Decimal` until it goes on the wire. Actual costs round half-even; estimates round up (ceiling), so a
reservation is never smaller than the priced request. A model with no known price is never priced at 0: callers get
`None` and fall back to a conservative, configurable amount.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from functools import lru_cache

import genai_prices

from otel_cycles._usage import TokenUsage

__all__ = ["MICROCENTS_PER_USD", "CostBreakdown", "ModelId", "normalize_model_id", "price_usage", "register_price"]

logger = logging.getLogger(__name__)

MICROCENTS_PER_USD = Decimal(100_000_000)
"""1 USD = 100 cents = 10^8 USD_MICROCENTS (Cycles protocol `UnitEnum`)."""

_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class ModelId:
    """A model identity normalised across frameworks (tinyagent reports `gpt-4o`, the others `openai:gpt-4o`)."""

    provider: str | None
    name: str

    @property
    def ref(self) -> str:
        """`provider:name`, or just `name` when the provider is unknown; used as the Cycles action name."""
        return f"{self.provider}:{self.name}" if self.provider else self.name


def normalize_model_id(raw: object, default_provider: str | None = None) -> ModelId | None:
    """Parse `openai:gpt-4o`, `openai/gpt-4o` or `gpt-4o` (with `default_provider`); None if malformed."""
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    if not text or len(text) > 256 or any(ch.isspace() for ch in text):
        return None
    for separator in (":", "/"):
        provider, sep, name = text.partition(separator)
        if sep:
            if not provider or not name:
                return None
            return ModelId(provider.lower(), name)
    return ModelId(default_provider.lower() if default_provider else None, text)


@dataclass(frozen=True)
class CostBreakdown:
    """The priced cost of one call."""

    input_usd: Decimal
    output_usd: Decimal

    @property
    def total_usd(self) -> Decimal:
        return self.input_usd + self.output_usd

    @property
    def microcents(self) -> int:
        """Total in USD_MICROCENTS, rounded half-even (the amount committed)."""
        return usd_to_microcents(self.total_usd)


def usd_to_microcents(usd: Decimal, *, estimate: bool = False) -> int:
    """Convert USD to USD_MICROCENTS: ceiling for estimates, half-even for actual costs."""
    rounding = ROUND_CEILING if estimate else ROUND_HALF_EVEN
    return int((usd * MICROCENTS_PER_USD).to_integral_value(rounding=rounding))


@dataclass(frozen=True)
class _CustomPrice:
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cache_read_per_mtok: Decimal | None


_custom_prices: dict[str, _CustomPrice] = {}
_custom_lock = threading.Lock()


def register_price(
    model: str,
    *,
    input_per_mtok: Decimal | float | str,
    output_per_mtok: Decimal | float | str,
    cache_read_per_mtok: Decimal | float | str | None = None,
) -> None:
    """Set the USD price per million tokens for `model` (`provider:name` or `name`), overriding genai-prices.

    Use it for negotiated prices, fine-tuned or self-hosted models. Applies process-wide.
    """
    key = normalize_model_id(model)
    if key is None:
        raise ValueError(f"malformed model id {model!r}")
    price = _CustomPrice(
        Decimal(str(input_per_mtok)),
        Decimal(str(output_per_mtok)),
        None if cache_read_per_mtok is None else Decimal(str(cache_read_per_mtok)),
    )
    if min(price.input_per_mtok, price.output_per_mtok) < 0:
        raise ValueError("prices must not be negative")
    with _custom_lock:
        _custom_prices[key.ref] = price


def _custom_price_for(model: ModelId) -> _CustomPrice | None:
    with _custom_lock:
        return _custom_prices.get(model.ref) or _custom_prices.get(model.name)


def _knows(provider: str | None, name: str) -> bool:
    try:
        genai_prices.calc_price(genai_prices.Usage(input_tokens=1, output_tokens=1), name, provider_id=provider)
    except LookupError:
        return False
    return True


@lru_cache(maxsize=1024)
def _genai_prices_provider(provider: str | None, name: str) -> tuple[bool, str | None]:
    """(known, provider_id to pass): the given provider if genai-prices has the model there, else auto-detection.

    Cached because unknown models are common and genai-prices raises for them.
    """
    if provider is not None and _knows(provider, name):
        return True, provider
    return _knows(None, name), None


def price_usage(model: ModelId, usage: TokenUsage) -> CostBreakdown | None:
    """Price `usage` for `model`; None when the model has no known price. Never raises on unknown models."""
    custom = _custom_price_for(model)
    if custom is not None:
        cache_read = usage.cache_read_tokens if custom.cache_read_per_mtok is not None else 0
        input_usd = Decimal(usage.input_tokens - cache_read) * custom.input_per_mtok / _MILLION
        if custom.cache_read_per_mtok is not None:
            input_usd += Decimal(cache_read) * custom.cache_read_per_mtok / _MILLION
        return CostBreakdown(input_usd, Decimal(usage.output_tokens) * custom.output_per_mtok / _MILLION)
    known, provider = _genai_prices_provider(model.provider, model.name)
    if not known:
        return None
    calc = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
        ),
        model.name,
        provider_id=provider,
    )
    return CostBreakdown(calc.input_price, calc.output_price)


def _max_rate(price: object) -> Decimal | None:
    """The highest per-MTok rate of a plain or tiered genai-prices price (the safe side for an estimate)."""
    if price is None:
        return Decimal(0)
    if isinstance(price, Decimal):
        return price
    base = getattr(price, "base", None)
    tiers = getattr(price, "tiers", None)
    if isinstance(base, Decimal) and isinstance(tiers, list):
        rates: list[Decimal] = [base, *(tier.price for tier in tiers)]
        return max(rates)
    return None


@lru_cache(maxsize=1024)
def _estimate_rates(provider: str | None, name: str) -> tuple[Decimal, Decimal] | None:
    known, provider_id = _genai_prices_provider(provider, name)
    if not known:
        return None
    model_price = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=1, output_tokens=1), name, provider_id=provider_id
    ).model_price
    input_rate, output_rate = _max_rate(model_price.input_mtok), _max_rate(model_price.output_mtok)
    if input_rate is None or output_rate is None:
        return None
    return input_rate, output_rate


def estimate_microcents(model: ModelId, input_tokens: int, output_tokens: int, buffer: Decimal) -> int | None:
    """A conservative reservation amount (highest tier rates, plus `buffer`, rounded up); None if unknown.

    Cached per model, so it costs a few microseconds on the critical path instead of a full price calculation.
    """
    custom = _custom_price_for(model)
    if custom is not None:
        rates: tuple[Decimal, Decimal] | None = (custom.input_per_mtok, custom.output_per_mtok)
    else:
        rates = _estimate_rates(model.provider, model.name)
    if rates is None:
        return None
    usd = (Decimal(input_tokens) * rates[0] + Decimal(output_tokens) * rates[1]) / _MILLION
    return usd_to_microcents(usd * (1 + buffer), estimate=True)


def warm_up() -> None:
    """Load the bundled price snapshot now (~150 ms) rather than on the first priced call."""
    _genai_prices_provider("openai", "gpt-4o")
