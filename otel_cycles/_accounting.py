"""Decide what a finished call costs: commit the priced usage, commit the estimate, or release.

One rule set, used by the callback's after-hooks (to stamp the span before it ends, so every exporter sees the
cost) and by the span processor (to commit). The rules:

- LLM span with valid usage and a known price → commit the priced usage (`gen_ai.usage.cost.source=local`).
- LLM span with usage but no known price, or with missing (0/0), or invalid usage, that did not error
  → commit the estimate (`source=estimate`): unknown is never free.
- Tool span that finished → commit the tool's flat cost (`source=estimate`, since no usage is reported).
- Any span with ERROR status and no usable usage → release the reservation.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from opentelemetry.trace import Status, StatusCode
from runcycles import CyclesMetrics
from runcycles.lifecycle import _build_commit_body, _build_event_fallback_body

from otel_cycles import attributes as attr
from otel_cycles import metrics
from otel_cycles._registry import REGISTRY, Outcome, PendingReservation, SpanKey
from otel_cycles._settlement import release_body
from otel_cycles._usage import UsageStatus, read_usage
from otel_cycles.pricing import MICROCENTS_PER_USD, price_usage

UNIT = "USD_MICROCENTS"
LLM_KIND = "llm.completion"
TOOL_KIND = "tool.execution"


def decide(pending: PendingReservation, attributes: Mapping[str, Any] | None, errored: bool) -> Outcome:
    """Apply the rules above to a finished span."""
    if pending.kind != LLM_KIND:
        if errored:
            return Outcome(False, 0, "released", reason="tool call failed")
        amount = pending.tool_cost if pending.tool_cost is not None else pending.estimate
        return Outcome(True, amount, "estimate")
    reading = read_usage(attributes)
    if reading.status is UsageStatus.OK:
        breakdown = price_usage(pending.model, reading.usage) if pending.model is not None else None
        if breakdown is not None:
            return Outcome(True, breakdown.microcents, "local", reading, breakdown)
        return Outcome(True, pending.estimate, "estimate", reading, reason="model has no known price")
    if errored:
        return Outcome(False, 0, "released", reading, reason="LLM call failed")
    return Outcome(True, pending.estimate, "estimate", reading, reason=reading.problem)


def _usd(microcents: int) -> float:
    return float(Decimal(microcents) / MICROCENTS_PER_USD)


def cost_attributes(outcome: Outcome) -> dict[str, Any]:
    """The span attributes that export the outcome (`cycles.actual.amount`, `gen_ai.usage.cost.*`, ...)."""
    values: dict[str, Any] = {
        attr.CYCLES_ACTUAL_AMOUNT: outcome.amount,
        attr.GEN_AI_USAGE_COST_AMOUNT: _usd(outcome.amount),
        attr.GEN_AI_USAGE_COST_CURRENCY: "USD",
    }
    if not outcome.commit:
        values[attr.CYCLES_RELEASED] = True
        return values
    values[attr.GEN_AI_USAGE_COST_SOURCE] = outcome.source
    if outcome.breakdown is not None:
        values[attr.GEN_AI_USAGE_INPUT_COST] = float(outcome.breakdown.input_usd)
        values[attr.GEN_AI_USAGE_OUTPUT_COST] = float(outcome.breakdown.output_usd)
    else:
        # Estimated: attribute it all to input so AgentTrace.cost still sums to the committed amount.
        values[attr.GEN_AI_USAGE_INPUT_COST] = _usd(outcome.amount)
        values[attr.GEN_AI_USAGE_OUTPUT_COST] = 0.0
    return values


def settle(pending: PendingReservation, outcome: Outcome, *, latency_ms: int | None = None) -> None:
    """Hand the outcome to the reservation's Settlement (journaled commit, or release).

    Never does network I/O on the calling thread. A commit's metrics are recorded when its bodies are built, by the
    settlement worker (`_commit_bodies`), so the thread ending the span does only the queueing.
    """
    settlement = pending.settlement
    key = pending.idempotency_key
    ticket = 0
    if not outcome.commit:
        if pending.reservation_id is not None:
            ticket = settlement.release(pending.reservation_id, release_body(key, outcome.reason or "released"))
    else:
        if pending.reservation_id is not None:
            # The worker builds the bodies, and records the metrics then, off the thread ending the span.
            ticket = settlement.commit(pending.reservation_id, lambda: _commit_bodies(pending, outcome, latency_ms))
        else:
            # Fail-open call or shadow-mode denial: no reservation to commit against, so record the spend directly as
            # an event (the protocol's default overage policy, ALLOW_IF_AVAILABLE, never rejects an event).
            _, event_body = _commit_bodies(pending, outcome, latency_ms)
            event_body["metadata"]["recovery_reason"] = pending.unreserved
            settlement.record_event(f"unreserved-{key}", event_body)
    pending.run.note_ticket(ticket)


def _commit_bodies(
    pending: PendingReservation, outcome: Outcome, latency_ms: int | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The commit request body of `outcome` and its `POST /v1/events` fallback (runcycles' own builders).

    Called once per commit (by the settlement worker, or by whoever journals the commit first), so it also records
    the commit's metrics once its bodies are built.
    """
    usage = outcome.usage.usage if outcome.usage is not None and outcome.usage.status is UsageStatus.OK else None
    call_metrics = CyclesMetrics(
        tokens_input=usage.input_tokens if usage else None,
        tokens_output=usage.output_tokens if usage else None,
        latency_ms=latency_ms,
        model_version=pending.model.name[:128] if pending.model else None,
    )
    if usage is not None and (usage.cache_read_tokens or usage.cache_write_tokens or usage.reasoning_tokens):
        call_metrics.custom = {
            "cache_read_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
        }
    body = _build_commit_body(
        outcome.amount,
        UNIT,
        call_metrics,
        {"cost_source": outcome.source},
        idempotency_key=f"commit-{pending.idempotency_key}",
    )
    reference = pending.reservation_id or f"unreserved-{pending.idempotency_key}"
    fallback = _build_event_fallback_body(reference, pending.subject, pending.action, body)
    _record_metrics(pending, outcome)
    return body, fallback


def _record_metrics(pending: PendingReservation, outcome: Outcome) -> None:
    model = metrics.bounded_model(pending.model.ref if pending.model else None)
    metrics.cost_committed.add(
        _usd(outcome.amount),
        {
            "gen_ai.request.model": model if pending.kind == LLM_KIND else "",
            "cycles.action.kind": pending.kind,
            "cycles.scope_path": metrics.bounded_scope(pending.scope_path),
            "gen_ai.usage.cost.source": outcome.source,
        },
    )
    if pending.kind != LLM_KIND:
        return
    if outcome.usage is not None and outcome.usage.status is not UsageStatus.OK:
        metrics.usage_rejected.add(1, {"error.type": outcome.usage.status.value})
    elif outcome.source == "estimate":
        metrics.usage_rejected.add(1, {"error.type": "unknown_price"})
    if outcome.usage is None or outcome.usage.status is not UsageStatus.OK:
        return
    usage = outcome.usage.usage
    common = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": (pending.model.provider if pending.model else None) or "unknown",
        "gen_ai.request.model": model,
    }
    metrics.token_usage.record(usage.input_tokens, {**common, "gen_ai.token.type": "input"})
    metrics.token_usage.record(usage.output_tokens, {**common, "gen_ai.token.type": "output"})


def finish_unended(key: SpanKey, pending: PendingReservation, reason: str) -> None:
    """Settle a reservation whose span was never ended (errors, cancels, cancelled tasks, thread races).

    Committed if its after-hook already priced the finished call, else released. The span is ended here, so the
    span processor settles it and exporters see it; if no processor sees it end, it is settled directly.
    """
    span = pending.span
    # No after-hook will take it now; a run whose Context outlives it (any-agent keeps cancelled runs' Contexts)
    # would otherwise keep the span referenced from RunState.tools.
    pending.run.forget_tool(key)
    finished = pending.outcome is not None and pending.outcome.commit
    if span.is_recording():
        if not finished:
            span.set_attributes({attr.CYCLES_RELEASED: True, attr.CYCLES_ACTUAL_AMOUNT: 0})
            span.set_status(Status(StatusCode.ERROR, f"{reason}; reservation released"))
        span.end()
    leftover = REGISTRY.pop(key)
    if leftover is not None:
        outcome = leftover.outcome if finished and leftover.outcome is not None else None
        settle(leftover, outcome or Outcome(False, 0, "released", reason=reason))
