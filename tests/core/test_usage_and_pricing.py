"""Reading usage attributes (with aliases and bad input) and pricing them."""

from __future__ import annotations

from decimal import Decimal

import genai_prices
import pytest
from genai_prices import data_snapshot

from otel_cycles import pricing
from otel_cycles._usage import MAX_TOKENS, TokenUsage, UsageStatus, read_usage
from otel_cycles.pricing import (
    CostBreakdown,
    ModelId,
    normalize_model_id,
    price_usage,
    register_price,
    usd_to_microcents,
)


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5}, TokenUsage(10, 5)),
        ({"gen_ai.usage.prompt_tokens": 10, "gen_ai.usage.completion_tokens": 5}, TokenUsage(10, 5)),
        ({"llm.token_count.prompt": 10, "llm.token_count.completion": 5}, TokenUsage(10, 5)),
        (
            {
                "gen_ai.usage.input_tokens": 100,
                "gen_ai.usage.output_tokens": 50,
                "gen_ai.usage.cache_read.input_tokens": 30,
                "gen_ai.usage.cache_creation.input_tokens": 20,
                "gen_ai.usage.reasoning.output_tokens": 10,
            },
            TokenUsage(100, 50, 30, 20, 10),
        ),
        ({"gen_ai.usage.input_tokens": 10.0, "gen_ai.usage.output_tokens": 5}, TokenUsage(10, 5)),
    ],
)
def test_reads_canonical_and_alias_names(attributes, expected) -> None:
    reading = read_usage(attributes)
    assert reading.status is UsageStatus.OK
    assert reading.usage == expected


@pytest.mark.parametrize(
    ("attributes", "status"),
    [
        ({}, UsageStatus.MISSING),
        (None, UsageStatus.MISSING),
        ({"gen_ai.usage.input_tokens": 0, "gen_ai.usage.output_tokens": 0}, UsageStatus.MISSING),
        ({"gen_ai.usage.input_tokens": -1, "gen_ai.usage.output_tokens": 5}, UsageStatus.INVALID),
        ({"gen_ai.usage.input_tokens": "12", "gen_ai.usage.output_tokens": 5}, UsageStatus.INVALID),
        ({"gen_ai.usage.input_tokens": 1.5, "gen_ai.usage.output_tokens": 5}, UsageStatus.INVALID),
        ({"gen_ai.usage.input_tokens": True, "gen_ai.usage.output_tokens": 5}, UsageStatus.INVALID),
        ({"gen_ai.usage.input_tokens": float("nan"), "gen_ai.usage.output_tokens": 5}, UsageStatus.INVALID),
        ({"gen_ai.usage.input_tokens": MAX_TOKENS + 1, "gen_ai.usage.output_tokens": 5}, UsageStatus.INVALID),
        ({"gen_ai.usage.input_tokens": [1], "gen_ai.usage.output_tokens": 5}, UsageStatus.INVALID),
        (
            {
                "gen_ai.usage.input_tokens": 5,
                "gen_ai.usage.output_tokens": 5,
                "gen_ai.usage.cache_read.input_tokens": 9,
            },
            UsageStatus.INVALID,
        ),
    ],
)
def test_bad_or_missing_usage_is_never_billable(attributes, status) -> None:
    assert read_usage(attributes).status is status


@pytest.mark.parametrize(
    ("raw", "default_provider", "ref"),
    [
        ("openai:gpt-4o", None, "openai:gpt-4o"),
        ("openai/gpt-4o", None, "openai:gpt-4o"),
        ("gpt-4o", "openai", "openai:gpt-4o"),
        ("gpt-4o", None, "gpt-4o"),
        ("OpenAI:gpt-4o", None, "openai:gpt-4o"),
    ],
)
def test_normalize_model_id(raw, default_provider, ref) -> None:
    model = normalize_model_id(raw, default_provider)
    assert model is not None and model.ref == ref


@pytest.mark.parametrize("raw", [None, 42, "", "  ", ":gpt-4o", "openai:", "gpt 4o", "x" * 300])
def test_malformed_model_ids(raw) -> None:
    assert normalize_model_id(raw) is None


def test_prices_match_genai_prices_and_round_half_even() -> None:
    model = normalize_model_id("openai:gpt-4o")
    assert model is not None
    cost = price_usage(model, TokenUsage(1000, 200, cache_read_tokens=100))
    assert cost is not None
    # $2.50/M input, $1.25/M cached input, $10/M output
    assert cost.input_usd == Decimal("0.002375")
    assert cost.output_usd == Decimal("0.002")
    assert cost.microcents == 437_500
    assert usd_to_microcents(Decimal("0.000000005")) == 0  # half-even: 0.5 microcent rounds to 0
    assert usd_to_microcents(Decimal("0.000000015")) == 2
    assert usd_to_microcents(Decimal("0.000000001"), estimate=True) == 1  # estimates round up


def test_unknown_model_is_not_priced_at_zero() -> None:
    model = normalize_model_id("openai:no-such-model-xyz")
    assert model is not None
    assert price_usage(model, TokenUsage(10, 10)) is None


def test_register_price_overrides() -> None:
    register_price("acme:house-llm", input_per_mtok="1", output_per_mtok="2")
    model = normalize_model_id("acme:house-llm")
    assert model is not None
    cost = price_usage(model, TokenUsage(1_000_000, 500_000))
    assert cost is not None and cost.total_usd == Decimal(2)
    with pytest.raises(ValueError):
        register_price("bad id with spaces", input_per_mtok=1, output_per_mtok=1)


def _every_model() -> list[tuple[str, str]]:
    """(provider, model id) of every model in the genai-prices data that its own id finds."""
    snapshot = data_snapshot.get_snapshot()
    found = []
    for provider in snapshot.providers:
        for model in provider.models:
            try:
                snapshot.find_provider_model(model.id, None, provider.id, None)
            except LookupError:
                continue
            found.append((provider.id, model.id))
    return found


FAST_PATH_USAGES = [
    # (input, output, cache read, cache write): zero, one token of each kind, typical calls, all-cached input,
    # odd primes, and counts far past any context window (rounding and big-Decimal behaviour).
    (0, 0, 0, 0),
    (1, 0, 0, 0),
    (0, 1, 0, 0),
    (1, 1, 1, 0),
    (1, 1, 0, 1),
    (1_000, 200, 100, 0),
    (12_345, 678, 0, 9_000),
    (5_000, 5_000, 5_000, 0),
    (999_983, 7_919, 104_729, 299_993),
    (10**8, 10**7, 3 * 10**7, 2 * 10**7),
]


def _fast_path_models() -> list[tuple[str, str]]:
    snapshot_id = id(data_snapshot.get_snapshot())
    return [(p, m) for p, m in _every_model() if pricing._linear_price(p, m, snapshot_id) is not None]


def test_the_fast_path_prices_every_model_that_has_one_exactly_like_genai_prices() -> None:
    """For every model in the genai-prices data that has cached linear rates (`_LinearPrice`, the fast path), and for
    each usage in FAST_PATH_USAGES, the fast path equals a full genai-prices calculation to the last Decimal digit.

    Deterministic: every such model, every usage (models without a fast path are priced by genai-prices itself)."""
    snapshot_id = id(data_snapshot.get_snapshot())
    models = _fast_path_models()
    assert len(models) > 1000  # the whole data set, not a sample
    for provider, name in models:
        linear = pricing._linear_price(provider, name, snapshot_id)
        assert linear is not None
        for input_tokens, output_tokens, cache_read, cache_write in FAST_PATH_USAGES:
            cache_write = min(cache_write, input_tokens - cache_read)
            usage = TokenUsage(input_tokens, output_tokens, cache_read, cache_write)
            calc = genai_prices.calc_price(
                genai_prices.Usage(
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    cache_read_tokens=cache_read,
                    cache_write_tokens=cache_write,
                ),
                name,
                provider_id=provider,
            )
            expected = CostBreakdown(calc.input_price, calc.output_price)
            assert linear.price(usage) == expected, (provider, name, usage)


def test_price_usage_takes_the_fast_path_where_there_is_one() -> None:
    """`price_usage` (what the after-hook calls) agrees with genai-prices on a usage with every kind of token, for
    every fast-path model (it picks the same provider genai-prices would)."""
    usage = TokenUsage(3_000, 500, cache_read_tokens=1_000, cache_write_tokens=7)
    for provider, name in _fast_path_models():
        calc = genai_prices.calc_price(
            genai_prices.Usage(input_tokens=3_000, output_tokens=500, cache_read_tokens=1_000, cache_write_tokens=7),
            name,
            provider_id=provider,
        )
        assert price_usage(ModelId(provider, name), usage) == CostBreakdown(calc.input_price, calc.output_price)


def test_most_models_take_the_fast_path() -> None:
    linear = [pricing._linear_price(p, m, id(data_snapshot.get_snapshot())) for p, m in _every_model()]
    assert sum(rate is not None for rate in linear) > len(linear) / 2
    assert pricing._linear_price("openai", "gpt-4o", id(data_snapshot.get_snapshot())) is not None


def test_request_sizing_counts_every_message_of_a_pydantic_request() -> None:
    """Frameworks pass messages as pydantic models (LlamaIndex, smolagents, ADK); sizing walks each one's
    `model_dump()`. Those dumps are temporaries, and CPython hands a freed dict's address to the next one: when the
    walk remembered objects by id only, every message after the first looked already seen and was not counted
    (this request sized at 101 tokens)."""
    from pydantic import BaseModel

    from otel_cycles._request_size import CHARS_PER_TOKEN, size_request

    class Message(BaseModel):
        role: str
        content: str

    messages = [Message(role="user", content=letter * 400) for letter in "abcdefgh"]
    chars = sum(len(m.role) + len(m.content) for m in messages)  # what the oracle counts: every string once
    assert size_request((), {"messages": messages}).input_tokens == -(-chars // CHARS_PER_TOKEN)
