"""Environment variables read by otel-cycles, each with its default.

Precedence everywhere: constructor argument > environment variable > default. A malformed value is logged and the
default used; a malformed constructor argument raises `ValueError`. The Cycles connection itself (`CYCLES_BASE_URL`,
`CYCLES_API_KEY`, `CYCLES_TENANT`, timeouts, retries, journal) is read by `runcycles.CyclesConfig.from_env()`.
"""

from __future__ import annotations

import logging
import os

__all__ = [
    "CYCLES_BREAKER_COOLDOWN_S",
    "CYCLES_CAPTURE_CONTENT",
    "CYCLES_ESTIMATE_BUFFER",
    "CYCLES_EXIT_TIMEOUT_S",
    "CYCLES_FAIL_OPEN",
    "CYCLES_LLM_OUTPUT_ALLOWANCE",
    "CYCLES_LOOKAHEAD",
    "CYCLES_OVERAGE_POLICY",
    "CYCLES_RESERVATION_TTL_MS",
    "CYCLES_RESERVE_TIMEOUT_S",
    "CYCLES_SETTLE_TIMEOUT_S",
    "CYCLES_SHADOW",
    "CYCLES_SOFT_LANDING",
    "CYCLES_SOFT_LANDING_FLOOR",
    "CYCLES_UNKNOWN_MODEL_ESTIMATE",
]

logger = logging.getLogger(__name__)

CYCLES_FAIL_OPEN = "CYCLES_FAIL_OPEN"
"""`true` lets calls proceed when the authority is unreachable (recorded on the span and in `cycles.fail_open`).
Default: `false` (fail-closed: the agent stops with `AuthorityUnavailable`)."""
CYCLES_RESERVATION_TTL_MS = "CYCLES_RESERVATION_TTL_MS"
"""Reservation TTL in milliseconds (the authority caps it at 1 h). Default: `60000`."""
CYCLES_OVERAGE_POLICY = "CYCLES_OVERAGE_POLICY"
"""Commit overage policy: `REJECT`, `ALLOW_IF_AVAILABLE` or `ALLOW_WITH_OVERDRAFT`. Default: `ALLOW_IF_AVAILABLE`."""
CYCLES_LLM_OUTPUT_ALLOWANCE = "CYCLES_LLM_OUTPUT_ALLOWANCE"
"""Output tokens assumed for an LLM call whose request sets no `max_tokens`. Default: `1024`."""
CYCLES_ESTIMATE_BUFFER = "CYCLES_ESTIMATE_BUFFER"
"""Fraction added on top of a priced estimate (`0.2` = +20 %, the spec's recommended buffer). Default: `0.2`."""
CYCLES_UNKNOWN_MODEL_ESTIMATE = "CYCLES_UNKNOWN_MODEL_ESTIMATE"
"""USD_MICROCENTS reserved (and committed) for a model with no known price. Default: `2000000` ($0.02)."""
CYCLES_SETTLE_TIMEOUT_S = "CYCLES_SETTLE_TIMEOUT_S"
"""Seconds the end of a run waits for its commits and releases to be sent. `0` disables the wait. Default: `10`."""
CYCLES_LOOKAHEAD = "CYCLES_LOOKAHEAD"
"""`false` stops reserving the tool calls an answer names, and the run's next LLM call, in the background (see
`otel_cycles._lookahead`). Default: `true`."""
CYCLES_RESERVE_TIMEOUT_S = "CYCLES_RESERVE_TIMEOUT_S"
"""Seconds one reservation may take on the critical path, its same-key retry included; past it the authority counts
as unreachable (fail-closed: the agent stops; fail-open: the call proceeds). Default: `3`."""
CYCLES_BREAKER_COOLDOWN_S = "CYCLES_BREAKER_COOLDOWN_S"
"""Seconds an authority found down is left alone before one call probes it again (doubled after each failed probe,
up to 60 s). Default: `2`."""
CYCLES_EXIT_TIMEOUT_S = "CYCLES_EXIT_TIMEOUT_S"
"""Seconds the interpreter's exit waits for commits and events still being sent (none if the authority is known
down); what is left stays in runcycles' journal and is sent by the next run. Default: `3`."""
CYCLES_CAPTURE_CONTENT = "CYCLES_CAPTURE_CONTENT"
"""`false` strips prompt and completion content (`gen_ai.input.messages`, `gen_ai.output`, tool args) from exported
spans (see `otel_cycles.ContentFilterSpanProcessor`). Default: `true`."""

CYCLES_SHADOW = "CYCLES_SHADOW"
"""`true`: shadow mode. Every call is still decided by the authority and recorded, nothing is stopped or refused.
Default: `false`."""
CYCLES_SOFT_LANDING = "CYCLES_SOFT_LANDING"
"""`true`: an LLM call denied at its full estimate reserves what the budget can still pay and is clamped to the
output tokens that buys. Default: `false`."""
CYCLES_SOFT_LANDING_FLOOR = "CYCLES_SOFT_LANDING_FLOOR"
"""Fewest output tokens a soft landing may clamp a call to; below that the call is denied. Default: `256`."""


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    logger.warning("Ignoring %s=%r: expected true or false; using %s", name, raw, default)
    return default


def env_number(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= minimum:
        logger.warning("Ignoring %s=%r: expected a number >= %s; using %s", name, raw, minimum, default)
        return default
    return value


def env_choice(name: str, default: str, choices: frozenset[str]) -> str:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.strip().upper() in choices:
        return raw.strip().upper()
    logger.warning("Ignoring %s=%r: expected one of %s; using %s", name, raw, sorted(choices), default)
    return default
