"""How the callback stops an agent before a call: which `GovernanceStop`, and what happens to the call's span.

A stop is raised from a before-hook, after AnyAgent opened the call's span; nothing else would ever end that span, so
`stop` ends it (status ERROR, with the decision attributes) and adds it to the agent trace, so the partial trace the
exception carries ends with the call that was not made.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

from any_agent.callbacks import Context
from opentelemetry.trace import Span, Status, StatusCode
from runcycles import CyclesClient

from otel_cycles import attributes as attr
from otel_cycles._accounting import TOOL_KIND, UNIT
from otel_cycles._registry import RunState
from otel_cycles._reserve import Denied, Rejected, Unavailable
from otel_cycles.analysis import limiting_scope
from otel_cycles.errors import AuthorityUnavailable, BudgetExceeded, GovernanceStop, ReservationRejected

__all__ = ["budget_exceeded", "deny", "failure", "stop"]

logger = logging.getLogger(__name__)


def budget_exceeded(
    client: CyclesClient, subject: dict[str, Any], result: Denied, estimate: int, kind: str, name: str
) -> BudgetExceeded:
    """The stop of a denied reservation, naming the scope with the least budget left (one balances request)."""
    scope, remaining = limiting_scope(client, subject)
    where = f" at {scope} (remaining {remaining} {UNIT})" if scope else ""
    return BudgetExceeded(
        f"Budget denied {kind} {name!r}: {result.reason_code}{where}; requested {estimate} {UNIT}",
        reason_code=result.reason_code,
        scope=scope,
        remaining=remaining,
        estimate=estimate,
        action_kind=kind,
        action_name=name,
    )


def failure(result: Unavailable | Rejected, base_url: str, kind: str, name: str) -> GovernanceStop:
    """The stop of a reservation that got no decision: the authority was unreachable, or rejected the request."""
    if isinstance(result, Unavailable):
        return AuthorityUnavailable(
            f"Cycles authority at {base_url} is unreachable ({result.message}); "
            "the call was not made (fail-closed). Set fail_open=True to let calls proceed.",
            base_url=base_url,
            action_kind=kind,
            action_name=name,
        )
    return ReservationRejected(
        f"{result.message} (HTTP {result.status})",
        status=result.status,
        reason_code=result.error_code,
        action_kind=kind,
        action_name=name,
    )


def deny(context: Context, span: Span, run: RunState, error: GovernanceStop, *, kind: str, name: str) -> NoReturn:
    """Stop the agent before a call the authority (or its caps) did not allow: `cycles.decision=DENY` on the span."""
    values: dict[str, Any] = {
        attr.CYCLES_DECISION: "DENY",
        attr.CYCLES_REASON_CODE: error.reason_code or "BUDGET_EXCEEDED",
        attr.CYCLES_ACTION_KIND: kind,
        attr.CYCLES_ACTION_NAME: name,
        attr.CYCLES_UNIT: UNIT,
    }
    if isinstance(error, BudgetExceeded):
        if error.scope:
            values[attr.CYCLES_SCOPE_PATH] = error.scope
        if error.remaining is not None:
            values[attr.CYCLES_BUDGET_REMAINING] = error.remaining
    span.set_attributes(values)
    if kind == TOOL_KIND:
        # smolagents and llama_index swallow exceptions raised before a tool call; remember the denial so the
        # next LLM call of this run is denied too and the run still stops.
        with run.lock:
            run.denial = error
    stop(context, span, error)


def stop(context: Context, span: Span, error: GovernanceStop) -> NoReturn:
    """End the span AnyAgent opened (it would otherwise never end), keep it in the trace, and raise."""
    span.set_status(Status(StatusCode.ERROR, str(error)))
    span.end()
    try:
        context.trace.add_span(span)
    except Exception:  # the partial trace is a nicety; the stop itself must happen
        logger.debug("otel-cycles could not add the stopped span to the agent trace", exc_info=True)
    raise error
