"""The integration guide's `CyclesBudgetCallback`, verbatim in behaviour (shared/seed), as the benchmark baseline.

It reserves a fixed estimate before each LLM call and tool call and commits synchronously in the after-hook, keyed by
one "current" reservation. Kept here only so benchmarks can compare against it; do not use it.
"""

from __future__ import annotations

import uuid
from typing import Any

from any_agent import AgentCancel
from any_agent.callbacks import Callback, Context
from runcycles import (
    Action,
    Amount,
    CommitRequest,
    CyclesClient,
    CyclesMetrics,
    CyclesProtocolError,
    ReservationCreateRequest,
    Subject,
    Unit,
)


class GuideBudgetExceeded(AgentCancel):
    pass


class GuideBudgetCallback(Callback):
    def __init__(self, client: CyclesClient, tenant: str, agent: str | None = None) -> None:
        self.client = client
        self.tenant = tenant
        self.agent = agent
        self.llm_estimate = 2_000_000
        self.tool_estimate = 100_000

    def _reserve(self, context: Context, kind: str, name: str, estimate: int) -> Context:
        key = str(uuid.uuid4())
        res = self.client.create_reservation(
            ReservationCreateRequest(
                idempotency_key=key,
                subject=Subject(tenant=self.tenant, agent=self.agent),
                action=Action(kind=kind, name=name),
                estimate=Amount(unit=Unit.USD_MICROCENTS, amount=estimate),
                ttl_ms=60_000,
            )
        )
        if not res.is_success:
            error = res.get_error_response()
            if error and error.error == "BUDGET_EXCEEDED":
                raise GuideBudgetExceeded(error.message)
            raise CyclesProtocolError("Reservation failed", status=res.status)
        rid = res.get_body_attribute("reservation_id")
        context.shared.setdefault("_cycles_reservations", {})[rid] = key
        context.shared["_cycles_current_rid"] = rid
        return context

    def _commit(self, context: Context, input_tokens: int = 0, output_tokens: int = 0) -> Context:
        rid = context.shared.pop("_cycles_current_rid", None)
        key = context.shared.get("_cycles_reservations", {}).pop(rid, None)
        if not rid or not key:
            return context
        self.client.commit_reservation(
            rid,
            CommitRequest(
                idempotency_key=f"commit-{key}",
                actual=Amount(unit=Unit.USD_MICROCENTS, amount=input_tokens * 250 + output_tokens * 1_000),
                metrics=CyclesMetrics(tokens_input=input_tokens, tokens_output=output_tokens),
            ),
        )
        return context

    def before_llm_call(self, context: Context, *args: Any, **kwargs: Any) -> Context:
        return self._reserve(context, "llm.completion", "gpt-4o", self.llm_estimate)

    def after_llm_call(self, context: Context, *args: Any, **kwargs: Any) -> Context:
        attrs = getattr(context.current_span, "attributes", None) or {}
        return self._commit(
            context, attrs.get("gen_ai.usage.input_tokens", 0), attrs.get("gen_ai.usage.output_tokens", 0)
        )

    def before_tool_execution(self, context: Context, *args: Any, **kwargs: Any) -> Context:
        attrs = getattr(context.current_span, "attributes", None) or {}
        return self._reserve(context, "tool.execution", attrs.get("gen_ai.tool.name", "unknown"), self.tool_estimate)

    def after_tool_execution(self, context: Context, *args: Any, **kwargs: Any) -> Context:
        return self._commit(context)
