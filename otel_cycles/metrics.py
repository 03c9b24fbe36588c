"""OpenTelemetry metrics emitted by the governance layer.

Instruments come from the global MeterProvider (a no-op until one is configured, e.g. by `configure_export`).
Attribute values are bounded: model and scope values beyond `_MAX_DISTINCT` distinct ones are reported as `other`,
so a misbehaving caller cannot explode the cardinality of a metrics backend.

| instrument | kind | unit | attributes |
|---|---|---|---|
| `gen_ai.client.token.usage` | histogram (semconv buckets) | `{token}` | operation, provider, token type, model |
| `cycles.cost.committed` | counter | `USD` | model, action kind, scope path, cost source |
| `cycles.reservation.decisions` | counter | `{reservation}` | decision, reason code, action kind |
| `cycles.reservation.duration` | histogram | `s` | action kind, decision |
| `cycles.budget.remaining` | gauge | `USD_MICROCENTS` | scope path, unit |
| `cycles.fail_open` | counter | `{call}` | action kind, breaker state (`closed`: this call found it down) |
| `cycles.breaker.transitions` | counter | `{transition}` | new breaker state (`open`, `half_open`, `closed`) |
| `cycles.usage.rejected` | counter | `{span}` | error.type (`missing`, `invalid`, `unknown_price`) |
| `cycles.settlement.errors` | counter | `{operation}` | error.type (`queue_full`, `internal`, ...) |
| `cycles.lookahead` | counter | `{reservation}` | outcome (`adopted`, `unfit`, `not_allowed`, `not_sent`, ...) |
| `cycles.caps.enforced` | counter | `{call}` | cap (`max_tokens`, `tool`, `cooldown`, `max_steps`), outcome, shadow |
| `cycles.shadow.denials` | counter | `{call}` | reason code, action kind |
| `cycles.soft_landing` | counter | `{call}` | outcome (`landed`, `too_small`, `denied`) |
"""

from __future__ import annotations

import threading

from opentelemetry import metrics

__all__ = ["TOKEN_USAGE_BUCKETS"]

TOKEN_USAGE_BUCKETS = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)
"""Bucket boundaries the GenAI semantic conventions prescribe for `gen_ai.client.token.usage`."""

_MAX_DISTINCT = 200

_meter = metrics.get_meter("otel_cycles")
token_usage = _meter.create_histogram(
    "gen_ai.client.token.usage",
    unit="{token}",
    description="Tokens used per LLM call, as reported on governed spans.",
    explicit_bucket_boundaries_advisory=[float(b) for b in TOKEN_USAGE_BUCKETS],
)
cost_committed = _meter.create_counter(
    "cycles.cost.committed", unit="USD", description="Cost committed to the Cycles authority."
)
decisions = _meter.create_counter(
    "cycles.reservation.decisions", unit="{reservation}", description="Reservation decisions by outcome."
)
reserve_duration = _meter.create_histogram(
    "cycles.reservation.duration",
    unit="s",
    description="Time to obtain a reservation decision (the governance latency on the critical path).",
    explicit_bucket_boundaries_advisory=[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
)
budget_remaining = _meter.create_gauge(
    "cycles.budget.remaining", unit="USD_MICROCENTS", description="Remaining budget at the charged scope."
)
fail_open = _meter.create_counter(
    "cycles.fail_open", unit="{call}", description="Calls let through without a reservation (authority down)."
)
breaker_transitions = _meter.create_counter(
    "cycles.breaker.transitions",
    unit="{transition}",
    description="Circuit breaker state changes per authority (open: known down; half_open: probing; closed).",
)
usage_rejected = _meter.create_counter(
    "cycles.usage.rejected", unit="{span}", description="Spans whose usage could not be priced; estimate committed."
)
settlement_errors = _meter.create_counter(
    "cycles.settlement.errors", unit="{operation}", description="Settlement problems, by error.type."
)
lookahead = _meter.create_counter(
    "cycles.lookahead", unit="{reservation}", description="Lookahead reservations by what became of them."
)
caps_enforced = _meter.create_counter(
    "cycles.caps.enforced", unit="{call}", description="Calls bound by the caps of an ALLOW_WITH_CAPS decision."
)
shadow_denials = _meter.create_counter(
    "cycles.shadow.denials", unit="{call}", description="Shadow mode: calls that would have been stopped, by reason."
)
soft_landing = _meter.create_counter(
    "cycles.soft_landing", unit="{call}", description="Denied LLM calls offered a soft landing, by outcome."
)


class _Bounded:
    """Caps the number of distinct values an attribute may take."""

    def __init__(self, limit: int = _MAX_DISTINCT) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()  # guards _seen

    def __call__(self, value: str | None) -> str:
        if value is None:
            return "unknown"
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self._limit:
                self._seen.add(value)
                return value
        return "other"


bounded_model = _Bounded()
bounded_scope = _Bounded()
