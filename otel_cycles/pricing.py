"""Prices: token usage → USD (`Decimal`) → Cycles `USD_MICROCENTS` (`int`), via genai-prices.

Money stays `Decimal` until it goes on the wire. Actual costs round half-even; estimates round up (ceiling), so a
reservation is never smaller than the priced request. A model with no known price is never priced at 0: callers get
`None` and fall back to a conservative, configurable amount.

Pricing runs in the after-hook, on the agent's critical path, and a genai-prices calculation costs ~50 us (several
times that on a cold CPU). Most models have one flat, unconditional price, for which genai-prices is linear in the
token counts; for those the per-token rates are probed from genai-prices once, checked against a full calculation,
and reused (`_LinearPrice`). Tiered, time-conditional or otherwise non-linear prices always go through genai-prices.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from functools import lru_cache

import genai_prices
from genai_prices import data_snapshot
from genai_prices.types import ModelPrice, TieredPrices

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


_PROBE = 1_000_000
_LINEAR_UNITS = frozenset(
    {
        "input_mtok",
        "output_mtok",
        "cache_read_mtok",
        "cache_write_mtok",
        "web_searches_kcount",
        "storage_searches_kcount",
    }
)
"""Price keys whose charge is proportional to a token count we report (or to a count we always report as 0)."""


@dataclass(frozen=True)
class _LinearPrice:
    """(input-side, output-side) USD per _PROBE tokens of each kind, as genai-prices charges them."""

    uncached: tuple[Decimal, Decimal]
    cache_read: tuple[Decimal, Decimal]
    cache_write: tuple[Decimal, Decimal]
    output: tuple[Decimal, Decimal]

    def price(self, usage: TokenUsage) -> CostBreakdown:
        uncached = usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens
        counts = (
            (uncached, self.uncached),
            (usage.cache_read_tokens, self.cache_read),
            (usage.cache_write_tokens, self.cache_write),
            (usage.output_tokens, self.output),
        )
        input_usd = sum((Decimal(n) * rate[0] for n, rate in counts), Decimal(0)) / _PROBE
        output_usd = sum((Decimal(n) * rate[1] for n, rate in counts), Decimal(0)) / _PROBE
        return CostBreakdown(input_usd, output_usd)


def _calc(name: str, provider: str | None, usage: TokenUsage) -> CostBreakdown:
    calc = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
        ),
        name,
        provider_id=provider,
    )
    return CostBreakdown(calc.input_price, calc.output_price)


@lru_cache(maxsize=1024)
def _linear_price(provider: str | None, name: str, snapshot_id: int) -> _LinearPrice | None:
    """The probed rates of a model with a flat, unconditional, linear price; None for any other (`snapshot_id` keys
    the cache to the genai-prices data in use, which `UpdatePrices` can replace)."""
    try:
        _, model = data_snapshot.get_snapshot().find_provider_model(name, None, provider, None)
        prices = model.prices
        # Price variants (service tier, batch) apply only with a price context, which we never pass.
        if not isinstance(prices, ModelPrice):
            return None
        used = {key: value for key, value in prices.__dict__.items() if value is not None}
        if not set(used) <= _LINEAR_UNITS or any(isinstance(value, TieredPrices) for value in used.values()):
            return None

        def probe(**counts: int) -> tuple[Decimal, Decimal]:
            values = {"input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0, "cache_write_tokens": 0} | counts
            cost = _calc(name, provider, TokenUsage(**values))
            return cost.input_usd, cost.output_usd

        linear = _LinearPrice(
            uncached=probe(input_tokens=_PROBE),
            cache_read=probe(input_tokens=_PROBE, cache_read_tokens=_PROBE),
            cache_write=probe(input_tokens=_PROBE, cache_write_tokens=_PROBE),
            output=probe(output_tokens=_PROBE),
        )
        check = TokenUsage(
            input_tokens=3_000_017, output_tokens=500_009, cache_read_tokens=1_000_003, cache_write_tokens=7
        )
        if linear.price(check) != _calc(name, provider, check):
            return None
        return linear
    except Exception:  # an unexpected shape in the price data: genai-prices prices it the slow way
        return None


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
    linear = _linear_price(provider, model.name, id(data_snapshot.get_snapshot()))
    return linear.price(usage) if linear is not None else _calc(model.name, provider, usage)


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
