"""`CyclesBudgetCallback`: reserve budget before every LLM call and tool execution of an AnyAgent agent.

Flow per call (AnyAgent runs our hooks after it opened the span and before it ends it):

1. `before_llm_call` / `before_tool_execution`: estimate the call, reserve it at the Cycles authority, stamp the
   reservation on the span AnyAgent just opened, and remember it by that span's id (never as one "current"
   reservation, so parallel tool calls and LangChain's executor threads are safe). On denial: end the span with
   ERROR and the denial attributes, add it to the agent trace, raise `BudgetExceeded`; the model is never called.
2. `after_llm_call` / `after_tool_execution`: price the reported usage and stamp the cost on the still-open span,
   so every exporter, whatever its position among the span processors, exports it. With parallel tool calls
   AnyAgent's `current_span` may point at a sibling call by then; `after_tool_execution` finds the call's own span
   (`_frameworks`) and re-targets `current_span`, so AnyAgent ends each tool span exactly once. An LLM answer that
   asks for tools also sends the reservations of those tools and of the run's next LLM call, which their before-hooks
   then adopt (`_lookahead`): the round trips overlap the agent's own work instead of delaying the calls.
   An `ALLOW_WITH_CAPS` decision's caps are honoured in the before-hook (`_caps`): a forbidden tool or a call past
   `max_steps_remaining` is stopped with `ActionNotPermitted` (its reservation released), a cooldown waits, and
   `max_tokens` clamps the request (`_clamp`). With `soft_landing` a denied LLM call reserves what the budget can
   still pay and is clamped to it; with `shadow` nothing is enforced, only recorded (unreserved calls become events).
3. The span ends; `CyclesSpanProcessor.on_end` commits (or releases) in the background.
4. `after_agent_invocation`: settle what the framework never finished (LLM errors, cancels, spans AnyAgent never
   ends: released, or committed if the call's after-hook already priced it) and unused lookaheads, then wait
   (bounded) until the run's commits and releases were sent, so balances are exact on return.

The hooks are synchronous and thread-safe, as every framework but tinyagent requires; tinyagent, which awaits
coroutine hooks, runs the blocking ones on a thread pool so its event loop keeps serving other runs (`_async_hooks`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from any_agent.callbacks import Callback, Context
from opentelemetry.trace import Span, StatusCode
from runcycles import AsyncCyclesClient, CyclesClient, CyclesConfig

from otel_cycles import _async_hooks, _caps, _clamp, _frameworks, _stops, metrics, pricing
from otel_cycles import attributes as attr
from otel_cycles import environment_variables as env
from otel_cycles._accounting import LLM_KIND, TOOL_KIND, cost_attributes, decide, finish_unended
from otel_cycles._breaker import breaker_for
from otel_cycles._heartbeat import heartbeat_for
from otel_cycles._lean_client import lean_client
from otel_cycles._lookahead import Lookahead, asks_for_tools, named_tools, next_amount, worth_it
from otel_cycles._lookahead_runs import RunLookaheads
from otel_cycles._reaper import REAPER
from otel_cycles._registry import REGISTRY, PendingReservation, RunState, span_key
from otel_cycles._reserve import (
    Allowed,
    Denied,
    Rejected,
    ReserveResult,
    SentReservation,
    Unavailable,
    record_decision,
    reserve,
    start_reserve,
)
from otel_cycles._settings import check_base_url, required_tenant
from otel_cycles._settlement import release_body, settlement_for
from otel_cycles.analysis import limiting_scope
from otel_cycles.errors import ActionNotPermitted
from otel_cycles.estimates import DEFAULT_TOOL_ESTIMATE, EstimatePolicy, LlmCall, ToolAmount
from otel_cycles.processor import ensure_processor

__all__ = ["CyclesBudgetCallback"]

logger = logging.getLogger(__name__)

_frameworks.install_span_end_handover()
_frameworks.track_current_span()
_frameworks.fix_agno_unwrap()
_frameworks.quiet_langchain_stop_echo()
_clamp.install()

_OVERAGE_POLICIES = frozenset({"REJECT", "ALLOW_IF_AVAILABLE", "ALLOW_WITH_OVERDRAFT"})
_UNIT = "USD_MICROCENTS"


class CyclesBudgetCallback(Callback):
    """Budget-guards every LLM call and tool execution of the agent it is attached to.

    Args:
        client: A runcycles client; by default one is built from the `CYCLES_*` environment variables.
            An `AsyncCyclesClient` is accepted too (its config is used for a sync client: AnyAgent's hooks are sync).
        tenant, workspace, app, workflow, agent, toolset: The Cycles subject; the budget hierarchy charged is
            tenant > workspace > app > workflow > agent > toolset (levels left unset are skipped). Unset levels fall
            back to the client config (`CYCLES_TENANT`, ...). A tenant is required (`ConfigurationError` without).
        llm_estimate: Reservation per LLM call. None (default): priced from the request (input tokens estimated from
            the messages, output bounded by `max_tokens` or `output_allowance`, plus `estimate_buffer`). An int: a
            fixed amount. A callable: `f(LlmCall) -> int`.
        tool_estimate: Reservation per tool call: an int, a per-tool map or a callable of the tool name.
        action_kind: Cycles action kind of LLM calls (`llm.completion`).
        action_name: Cycles action name of LLM calls; None (default) uses the normalised model id of each call.
        dimensions: Extra subject dimensions, round-tripped by the authority.
        ttl_ms: Reservation TTL (`CYCLES_RESERVATION_TTL_MS`, default 60 s).
        grace_period_ms: Commit grace after the TTL (authority default 5 s).
        overage_policy: `REJECT`, `ALLOW_IF_AVAILABLE` (default) or `ALLOW_WITH_OVERDRAFT` (`CYCLES_OVERAGE_POLICY`).
        tool_cost: What a finished tool call commits; same forms as `tool_estimate`. None: the tool's estimate.
        output_allowance: Output tokens assumed when the request sets no `max_tokens` (default 1024).
        estimate_buffer: Fraction added to priced estimates (default 0.2).
        unknown_model_estimate: Amount reserved and committed for a model with no known price (default 2,000,000).
        fail_open: Let calls proceed when the authority is unreachable (default False: raise AuthorityUnavailable).
            Once it is known down, calls proceed at once; one call probes it after a cool-down (`_breaker`).
        reserve_timeout_s: Bound on one reservation, retry included, before the authority counts as unreachable
            (`CYCLES_RESERVE_TIMEOUT_S`, default 3 s).
        settle_timeout_s: How long the end of a run waits for its commits to be sent (default 10 s; 0: no wait).
        heartbeat: Extend the reservation of a call that outlives its TTL (a long tool call) while it runs. Off, an
            expired reservation's spend is still recorded, through the commit's `POST /v1/events` fallback.
        lookahead: Reserve the tool calls an answer names, and the next LLM call, in the background as soon as the
            answer is in, so their before-hooks need no round trip (`CYCLES_LOOKAHEAD`, default True). Only made while
            the budget has ample room (`otel_cycles._lookahead`); denials are always decided by a fresh reservation.
        attach_processor: Attach a `CyclesSpanProcessor` to the global tracer provider if none is attached, so
            commits happen even when the user sets up no OpenTelemetry at all (callback-only mode).
        shadow: Shadow mode (`CYCLES_SHADOW`, default False): every call is still reserved and decided, the span
            records the decision (`cycles.shadow=true`, `cycles.decision=DENY` where it would have been stopped),
            but nothing is ever stopped, refused, clamped or delayed. Calls that would have been denied are
            recorded as events, so the ledger still sees the spend.
        soft_landing: When an LLM call priced from its request is denied, reserve what every charged scope can still
            pay and clamp the request's output tokens to that (`CYCLES_SOFT_LANDING`, default False).
        soft_landing_floor: Fewest output tokens a soft landing may clamp to (`CYCLES_SOFT_LANDING_FLOOR`, 256).
        cooldown_max_wait_s: Longest wait a `cooldown_ms` cap may impose on a call before it is refused (5 s).
    """

    def __init__(
        self,
        client: CyclesClient | AsyncCyclesClient | None = None,
        tenant: str | None = None,
        workflow: str | None = None,
        agent: str | None = None,
        llm_estimate: int | Callable[[LlmCall], int] | None = None,
        tool_estimate: ToolAmount = DEFAULT_TOOL_ESTIMATE,
        action_kind: str = LLM_KIND,
        action_name: str | None = None,
        *,
        workspace: str | None = None,
        app: str | None = None,
        toolset: str | None = None,
        dimensions: Mapping[str, str] | None = None,
        ttl_ms: int | None = None,
        grace_period_ms: int | None = None,
        overage_policy: str | None = None,
        tool_cost: ToolAmount | None = None,
        output_allowance: int | None = None,
        estimate_buffer: float | None = None,
        unknown_model_estimate: int | None = None,
        fail_open: bool | None = None,
        reserve_timeout_s: float | None = None,
        settle_timeout_s: float | None = None,
        heartbeat: bool = True,
        lookahead: bool | None = None,
        attach_processor: bool = True,
        shadow: bool | None = None,
        soft_landing: bool | None = None,
        soft_landing_floor: int | None = None,
        cooldown_max_wait_s: float = 5.0,
    ) -> None:
        if client is None:
            client = CyclesClient(CyclesConfig.from_env())
        elif isinstance(client, AsyncCyclesClient):
            client = CyclesClient(client._config)
        self.client = client
        config = client._config
        self.tenant = required_tenant(tenant or config.tenant)
        check_base_url(config.base_url)
        self.workspace = workspace or config.workspace
        self.app = app or config.app
        self.workflow = workflow or config.workflow
        self.agent = agent or config.agent
        self.toolset = toolset or config.toolset
        self.dimensions = dict(dimensions or {})
        self.action_kind = action_kind
        self.action_name = action_name
        self.ttl_ms = _positive(ttl_ms, "ttl_ms", env.env_number(env.CYCLES_RESERVATION_TTL_MS, 60_000, minimum=1000))
        self.grace_period_ms = grace_period_ms
        if overage_policy is not None and overage_policy not in _OVERAGE_POLICIES:
            raise ValueError(f"overage_policy must be one of {sorted(_OVERAGE_POLICIES)}, not {overage_policy!r}")
        self.overage_policy = overage_policy or env.env_choice(
            env.CYCLES_OVERAGE_POLICY, "ALLOW_IF_AVAILABLE", _OVERAGE_POLICIES
        )
        buffer = estimate_buffer if estimate_buffer is not None else env.env_number(env.CYCLES_ESTIMATE_BUFFER, 0.2)
        if not 0 <= buffer <= 10:
            raise ValueError(f"estimate_buffer must be between 0 and 10, not {buffer!r}")
        self.estimates = EstimatePolicy(
            llm_estimate=llm_estimate,
            tool_estimate=tool_estimate,
            tool_cost=tool_cost,
            output_allowance=int(
                _positive(output_allowance, "output_allowance", env.env_number(env.CYCLES_LLM_OUTPUT_ALLOWANCE, 1024))
            ),
            buffer=Decimal(str(buffer)),
            unknown_model_estimate=int(
                _positive(
                    unknown_model_estimate,
                    "unknown_model_estimate",
                    env.env_number(env.CYCLES_UNKNOWN_MODEL_ESTIMATE, 2_000_000),
                )
            ),
        )
        """How each call's reservation is sized (`otel_cycles.estimates`)."""
        self.fail_open = fail_open if fail_open is not None else env.env_bool(env.CYCLES_FAIL_OPEN, False)
        self.reserve_timeout_s = _positive(
            reserve_timeout_s, "reserve_timeout_s", env.env_number(env.CYCLES_RESERVE_TIMEOUT_S, 3.0, minimum=0.01)
        )
        self._breaker = breaker_for(config)
        self.settle_timeout_s = (
            settle_timeout_s if settle_timeout_s is not None else env.env_number(env.CYCLES_SETTLE_TIMEOUT_S, 10.0)
        )
        self.heartbeat = heartbeat
        self.lookahead = lookahead if lookahead is not None else env.env_bool(env.CYCLES_LOOKAHEAD, True)
        self.shadow = shadow if shadow is not None else env.env_bool(env.CYCLES_SHADOW, False)
        self.soft_landing = soft_landing if soft_landing is not None else env.env_bool(env.CYCLES_SOFT_LANDING, False)
        self.soft_landing_floor = int(
            _positive(soft_landing_floor, "soft_landing_floor", env.env_number(env.CYCLES_SOFT_LANDING_FLOOR, 256))
        )
        self.cooldown_max_wait_s = cooldown_max_wait_s
        self._subject = self._build_subject()
        self._settlement = settlement_for(client)
        self._wire = lean_client(client)
        """Sends the reservations (`_lean_client`); `client` stays what the user passed, for everything else."""
        self._lookaheads = RunLookaheads(
            self._settlement, int(self.ttl_ms), self._reservation_body, self._start_reservation
        )
        self._state_key = f"otel_cycles.run.{id(self):x}"
        pricing.warm_up()
        if attach_processor:
            ensure_processor()

    # -- AnyAgent hooks -------------------------------------------------------------------------------------------

    def before_agent_invocation(self, context: Context, *args: Any, **kwargs: Any) -> Context:
        run = self._run(context)
        model = pricing.normalize_model_id(_attributes(context.current_span).get(attr.GEN_AI_REQUEST_MODEL))
        if model is not None and model.provider is not None:
            run.default_provider = model.provider
        return context

    def before_llm_call(self, context: Context, *args: Any, **kwargs: Any) -> Context:
        span = _frameworks.started_span(context)
        run = self._run(context)
        raw_model = _attributes(span).get(attr.GEN_AI_REQUEST_MODEL)
        model = pricing.normalize_model_id(raw_model, run.default_provider)
        name = self.action_name or (model.ref if model is not None else "unknown")
        with run.lock:
            run.llm_calls += 1
        if run.denial is not None:
            _stops.deny(context, span, run, run.denial, kind=self.action_kind, name=name)
        estimate, source, price_known = self.estimates.llm(model, args, kwargs)
        floor = self.soft_landing_floor
        landing = source == "priced" and self.soft_landing and not self.shadow
        self._reserve(
            context,
            span,
            run,
            kind=self.action_kind,
            name=name,
            estimate=estimate,
            estimate_source=source,
            model=model,
            extra={attr.CYCLES_PRICE_KNOWN: price_known},
            lookahead_amount=next_amount(estimate, source) if self.lookahead else None,
            landing=(lambda room: self.estimates.landing(model, args, kwargs, room, floor)) if landing else None,
        )
        return context

    def before_tool_execution(self, context: Context, *args: Any, **kwargs: Any) -> Context:
        span = _frameworks.started_span(context)
        run = self._run(context)
        tool = _tool_name(span)
        with run.lock:
            hidden_llm, run.warned_hidden_llm = run.llm_calls == 0 and not run.warned_hidden_llm, True
        if hidden_llm:
            logger.warning(
                "otel-cycles: tool %r runs before any LLM call was seen in this run; the framework hides its LLM calls "
                "from callbacks (smolagents with stream_outputs=True?), so they are not budget-governed",
                tool,
            )
        if run.denial is not None:
            _stops.deny(context, span, run, run.denial, kind=TOOL_KIND, name=tool)
        estimate, source, cost = self.estimates.tool(tool)
        self._reserve(
            context, span, run, kind=TOOL_KIND, name=tool, estimate=estimate, estimate_source=source, tool_cost=cost
        )
        run.open_tool(span, _frameworks.before_tool_call_id(_attributes(span), args, kwargs))
        return context

    def after_llm_call(self, context: Context, *args: Any, **kwargs: Any) -> Context:
        span = context.current_span
        if _clamp.finish(span.get_span_context().trace_id) is False:
            _caps.clamp_bypassed(self._run(context))
        pending = self._stamp_outcome(span)
        if pending is not None and pending.lookahead_amount is not None:
            tools = [(tool, self.estimates.tool(tool)[0]) for tool in named_tools(_attributes(span))]
            self._lookaheads.make(pending, tools, pending.lookahead_amount if asks_for_tools(span) else None)
        return context

    def after_tool_execution(self, context: Context, *args: Any, **kwargs: Any) -> Context:
        span = context.current_span
        run = context.shared.get(self._state_key)
        own = run.take_tool(_frameworks.after_tool_call_id(args, kwargs), span) if isinstance(run, RunState) else None
        if own is not None and own is not span:
            # A parallel call's before-hook moved current_span, and AnyAgent's span generation just wrote this call's
            # output to that sibling. Put the output on this call's span and point current_span at it, so
            # SpanEndCallback (which runs after us) ends and records the right span; the sibling is ended by its own
            # after-hook, which re-targets the same way.
            values, status = _frameworks.tool_output_attributes(args, kwargs)
            own.set_attributes(values)
            own.set_status(status)
            context.current_span = span = own
        if own is not None:
            _frameworks.end_here(context, own)
        self._stamp_outcome(span)
        return context

    def after_agent_invocation(self, context: Context, *args: Any, **kwargs: Any) -> Context:
        run = context.shared.get(self._state_key)
        if not isinstance(run, RunState):
            return context
        _clamp.finish(context.current_span.get_span_context().trace_id)  # a call that errored never took it back
        for key, pending in REGISTRY.open_for_run(run):
            finish_unended(key, pending, "call never finished")
        self._lookaheads.drop(run, "run ended")
        done = False
        if self.settle_timeout_s > 0:
            with run.lock:
                ticket, unreserved = run.last_ticket, run.unreserved
            if unreserved:  # events (the spend of unreserved calls) go through runcycles' engine; a flush waits
                done = self._settlement.flush(self.settle_timeout_s)
            else:
                done = not ticket or self._settlement.settle(ticket, self.settle_timeout_s)
            if not done:
                logger.warning(
                    "otel-cycles: settlements of run %s still pending after %ss", run.run_id, self.settle_timeout_s
                )
        if not done:
            # What has not landed is journaled before the run returns: durable even if the process is killed next.
            self._settlement.journal_pending()
        return context

    def _answer_arriving(self, context: Context, span: Span, *, tool: bool) -> int | None:
        """The socket on which the answer to the reservation this call's before-hook will read is arriving, if that
        reservation was sent ahead (a lookahead) and is still unread; else None (`_async_hooks` awaits it)."""
        run = context.shared.get(self._state_key)
        if not isinstance(run, RunState):
            return None
        action = {"kind": TOOL_KIND, "name": _tool_name(span)[:256]} if tool else None
        return self._lookaheads.unread_fileno(run, action)

    def _run_settled(self, context: Context) -> bool:
        """Whether the end of the run has nothing to wait for: no open reservation, no lookahead, nothing recorded
        as an event, and its last commit or release already attempted (`_async_hooks` then ends it on the loop)."""
        run = context.shared.get(self._state_key)
        if not isinstance(run, RunState):
            return True
        with run.lock:
            idle = not (run.keys or run.lookahead or run.tool_lookaheads or run.unreserved)
            ticket = run.last_ticket
        return idle and self.settle_timeout_s > 0 and (not ticket or self._settlement.wait(ticket, 0))

    # -- internals ------------------------------------------------------------------------------------------------

    def _run(self, context: Context) -> RunState:
        run = context.shared.get(self._state_key)
        if not isinstance(run, RunState):
            # setdefault is atomic under the GIL, so two executor threads cannot create two states.
            run = context.shared.setdefault(self._state_key, RunState(run_id=uuid.uuid4().hex))
        return run

    def _build_subject(self) -> dict[str, Any]:
        subject: dict[str, Any] = {"tenant": self.tenant}
        for level in ("workspace", "app", "workflow", "agent", "toolset"):
            value = getattr(self, level)
            if value:
                subject[level] = value
        if self.dimensions:
            subject["dimensions"] = dict(self.dimensions)
        return subject

    def _reserve(
        self,
        context: Context,
        span: Span,
        run: RunState,
        *,
        kind: str,
        name: str,
        estimate: int,
        estimate_source: str,
        model: pricing.ModelId | None = None,
        tool_cost: int | None = None,
        extra: Mapping[str, Any] | None = None,
        lookahead_amount: int | None = None,
        landing: Callable[[int], tuple[int, int] | None] | None = None,
    ) -> None:
        """Reserve the call, or stop the agent; see the module docstring. `landing` sizes a soft landing."""
        action = {"kind": kind, "name": name[:256]}
        span_attributes: dict[str, Any] = {
            attr.CYCLES_ACTION_KIND: kind,
            attr.CYCLES_ACTION_NAME: action["name"],
            attr.CYCLES_UNIT: _UNIT,
            attr.CYCLES_ESTIMATE_AMOUNT: estimate,
            attr.CYCLES_ESTIMATE_SOURCE: estimate_source,
            **(extra or {}),
        }
        if self.agent:
            span_attributes[attr.GEN_AI_AGENT_NAME] = self.agent
        if self.shadow:
            span_attributes[attr.CYCLES_SHADOW] = True
        refusal = _caps.steps_refusal(run, kind, name, shadow=self.shadow)
        if refusal is not None and not self.shadow:
            span.set_attributes(span_attributes)
            _stops.deny(context, span, run, refusal, kind=kind, name=name)
        started = time.perf_counter()
        ahead = self._lookaheads.claim(run, action, estimate, self._reserve_request)
        landed: int | None = None
        result: ReserveResult
        if ahead is not None:
            lookahead, result = ahead
            body = lookahead.body
            span_attributes[attr.CYCLES_LOOKAHEAD] = True
            span_attributes[attr.CYCLES_RESERVED_AMOUNT] = lookahead.amount
        else:
            body = self._reservation_body(action, estimate)
            result = self._reserve_fresh(run, body)
            if isinstance(result, Denied) and landing is not None:
                result, body, landed = self._soft_land(run, result, body, landing)
                if landed is not None:
                    estimate = body["estimate"]["amount"]
                    span_attributes.update({attr.CYCLES_ESTIMATE_AMOUNT: estimate, attr.CYCLES_SOFT_LANDING: True})
        record_decision(result, kind, time.perf_counter() - started)
        pending = PendingReservation(
            span=span,
            run=run,
            settlement=self._settlement,
            kind=kind,
            action=action,
            subject=self._subject,
            estimate=estimate,
            idempotency_key=body["idempotency_key"],
            reservation_id=None,
            model=model,
            tool_cost=tool_cost,
        )
        if isinstance(result, Allowed):
            self._go_ahead(context, span, pending, result, span_attributes, refusal, landed, lookahead_amount, ahead)
            return
        if isinstance(result, Denied) and not self.shadow:
            span.set_attributes(span_attributes)
            error = _stops.budget_exceeded(self.client, self._subject, result, estimate, kind, name)
            _stops.deny(context, span, run, error, kind=kind, name=name)
        if self.shadow or (isinstance(result, Unavailable) and self.fail_open):
            self._go_unreserved(span, pending, result, span_attributes)
            return
        span.set_attributes(span_attributes)
        assert isinstance(result, (Unavailable, Rejected))
        _stops.stop(context, span, _stops.failure(result, self.client._config.base_url, kind, name))

    def _reserve_fresh(self, run: RunState, body: dict[str, Any]) -> ReserveResult:
        in_flight = self._settlement.outstanding()
        result = self._reserve_request(body)
        if isinstance(result, Denied):
            # Commits queued or in flight when we asked still held their full estimates at the authority, and a
            # lookahead of this run holds budget for a call that may never come. Once the commits have returned
            # the unused part and the lookahead is released, ask again: a denial never depends on the
            # settlement worker's timing or on speculation.
            released = self._lookaheads.drop(run, "a call of the run was denied")
            if in_flight or released:
                self._settlement.settle(max(in_flight, released), self.settle_timeout_s or 5.0)
                body["idempotency_key"] = str(uuid.uuid4())
                result = self._reserve_request(body)
        return result

    def _reserve_request(self, body: dict[str, Any]) -> ReserveResult:
        # Shadow mode proceeds when the authority is down, as fail-open does: both may skip a known-down authority.
        gate = self.fail_open or self.shadow
        return reserve(self._wire, body, timeout_s=self.reserve_timeout_s, breaker=self._breaker, gate=gate)

    def _start_reservation(self, body: dict[str, Any]) -> SentReservation | None:
        return start_reserve(self._wire, body, timeout_s=self.reserve_timeout_s, breaker=self._breaker)

    def _soft_land(
        self, run: RunState, denied: Denied, body: dict[str, Any], landing: Callable[[int], tuple[int, int] | None]
    ) -> tuple[ReserveResult, dict[str, Any], int | None]:
        """Reserve what the budget can still pay for a denied LLM call: (result, request, output tokens bought)."""
        if denied.reason_code != "BUDGET_EXCEEDED" or run.clamp_unsupported:
            return denied, body, None
        _, room = limiting_scope(self.client, self._subject)
        offer = landing(room) if room is not None else None
        if offer is None:
            metrics.soft_landing.add(1, {"outcome": "too_small"})
            return denied, body, None
        amount, tokens = offer
        landed_body = {**body, "idempotency_key": str(uuid.uuid4()), "estimate": {"unit": _UNIT, "amount": amount}}
        result = self._reserve_request(landed_body)
        metrics.soft_landing.add(1, {"outcome": "landed" if isinstance(result, Allowed) else "denied"})
        if not isinstance(result, Allowed):
            return denied, body, None
        return result, landed_body, tokens

    def _go_ahead(
        self,
        context: Context,
        span: Span,
        pending: PendingReservation,
        result: Allowed,
        span_attributes: dict[str, Any],
        refusal: ActionNotPermitted | None,
        landed: int | None,
        lookahead_amount: int | None,
        ahead: tuple[Lookahead, Allowed] | None,
    ) -> None:
        """Carry out an allowed reservation: honour its caps (or, in shadow mode, record them), then register it."""
        run, kind, name = pending.run, pending.kind, str(pending.action["name"])
        response = result.response
        pending.reservation_id = response.reservation_id
        pending.scope_path = response.scope_path
        if lookahead_amount is not None and worth_it(lookahead_amount, response.balances):
            pending.lookahead_amount = lookahead_amount
        span_attributes[attr.CYCLES_RESERVATION_ID] = response.reservation_id
        span_attributes[attr.CYCLES_DECISION] = response.decision.value
        if response.scope_path:
            span_attributes[attr.CYCLES_SCOPE_PATH] = response.scope_path
        remaining = _remaining(response.balances, response.scope_path)
        if remaining is not None:
            span_attributes[attr.CYCLES_BUDGET_REMAINING] = remaining
            metrics.budget_remaining.set(
                remaining, {"cycles.scope_path": metrics.bounded_scope(response.scope_path), "cycles.unit": _UNIT}
            )
        caps = response.caps
        review = _caps.review(
            run,
            caps,
            is_tool=kind == TOOL_KIND,
            kind=kind,
            name=name,
            landed=landed,
            max_wait_s=self.cooldown_max_wait_s,
            shadow=self.shadow,
        )
        span_attributes.update(review.attributes)
        refusal = refusal or review.refusal
        if refusal is not None and self.shadow:
            span_attributes[attr.CYCLES_DECISION] = "DENY"
            span_attributes[attr.CYCLES_REASON_CODE] = refusal.reason_code
            metrics.shadow_denials.add(1, {"cycles.reason_code": refusal.reason_code or "", "cycles.action.kind": kind})
        elif refusal is not None:
            if response.reservation_id is not None:
                body = release_body(pending.idempotency_key, f"caps: {refusal.reason_code}")
                run.note_ticket(self._settlement.release(response.reservation_id, body))
            span.set_attributes(span_attributes)
            _stops.deny(context, span, run, refusal, kind=kind, name=name)
        elif not self.shadow:
            if review.wait_s > 0:
                time.sleep(review.wait_s)  # a cooldown, bounded by cooldown_max_wait_s
            if review.clamp is not None:
                _clamp.bound(span.get_span_context().trace_id, review.clamp)
                span_attributes[attr.CYCLES_CLAMP_MAX_TOKENS] = review.clamp
        _caps.count_step(run, caps)
        span.set_attributes(span_attributes)
        key = span_key(span)
        if key is not None:
            REGISTRY.add(key, pending)
            if self.heartbeat:
                lease_ms = ahead[0].lease_left_ms(result, int(self.ttl_ms)) if ahead else response.remaining_ttl_ms
                heartbeat_for(self.client).watch(key, pending, int(self.ttl_ms), lease_ms)
            REAPER.watch(key, pending)

    def _go_unreserved(
        self, span: Span, pending: PendingReservation, result: ReserveResult, span_attributes: dict[str, Any]
    ) -> None:
        """Let a call go ahead without a reservation (fail-open, or shadow mode); its spend is recorded as an event."""
        kind = pending.kind
        if isinstance(result, Unavailable):
            span_attributes[attr.CYCLES_FAIL_OPEN] = True
            span_attributes[attr.CYCLES_REASON_CODE] = "AUTHORITY_UNAVAILABLE"
            span_attributes[attr.CYCLES_BREAKER_STATE] = result.breaker
            metrics.fail_open.add(1, {"cycles.action.kind": kind, "cycles.breaker.state": result.breaker})
            # The breaker logs once when the authority goes down and once when it is back, not once per call.
            logger.debug(
                "otel-cycles: %s %r proceeds without a reservation (%s)", kind, pending.action["name"], result.message
            )
        else:  # shadow mode: the call would have been stopped
            reason = getattr(result, "reason_code", None) or getattr(result, "error_code", None) or "REJECTED"
            span_attributes[attr.CYCLES_DECISION] = "DENY"
            span_attributes[attr.CYCLES_REASON_CODE] = reason
            pending.unreserved = "shadow_denied"
            metrics.shadow_denials.add(1, {"cycles.reason_code": reason, "cycles.action.kind": kind})
        _caps.count_step(pending.run, None)
        with pending.run.lock:
            pending.run.unreserved = True
        span.set_attributes(span_attributes)
        key = span_key(span)
        if key is not None:
            REGISTRY.add(key, pending)  # settled as an event once the call finishes

    def _reservation_body(self, action: dict[str, Any], amount: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "idempotency_key": str(uuid.uuid4()),
            "subject": self._subject,
            "action": action,
            "estimate": {"unit": _UNIT, "amount": amount},
            "ttl_ms": int(self.ttl_ms),
            "overage_policy": self.overage_policy,
        }
        if self.grace_period_ms is not None:
            body["grace_period_ms"] = self.grace_period_ms
        return body

    def _stamp_outcome(self, span: Span) -> PendingReservation | None:
        """Price the finished call and put its cost on the span; the call's reservation, if it has one."""
        key = span_key(span)
        pending = REGISTRY.get(key) if key is not None else None
        if pending is None or pending.span is not span:
            return None
        errored = _status_code(span) is StatusCode.ERROR
        pending.outcome = decide(pending, _attributes(span), errored)
        span.set_attributes(cost_attributes(pending.outcome))
        return pending


def _attributes(span: Any) -> Mapping[str, Any]:
    values = getattr(span, "attributes", None)
    return values if isinstance(values, Mapping) else {}


def _tool_name(span: Any) -> str:
    return str(_attributes(span).get(attr.GEN_AI_TOOL_NAME) or "unknown")


def _status_code(span: Any) -> StatusCode | None:
    status = getattr(span, "status", None)
    return getattr(status, "status_code", None)


def _remaining(balances: Any, scope_path: str | None) -> int | None:
    for balance in balances or []:
        if balance.scope_path == scope_path:
            return int(balance.remaining.amount)
    return None


def _positive(value: float | None, name: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be positive, not {value!r}")
    return value


_async_hooks.install_for_tinyagent(CyclesBudgetCallback)
