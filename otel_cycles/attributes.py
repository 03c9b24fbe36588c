"""Span attribute keys: the accounting that travels with every governed LLM and tool span.

The `cycles.*` keys are ours; the `gen_ai.usage.cost.*` keys follow the OpenTelemetry GenAI cost proposal
(semantic-conventions-genai PR #443); `gen_ai.usage.input_cost` / `output_cost` are the keys AnyAgent's
`AgentTrace.cost` sums. These names are a public contract: `collector/config.yaml` and the Grafana dashboard read them.
"""

from __future__ import annotations

__all__ = [
    "CYCLES_ACTION_KIND",
    "CYCLES_ACTION_NAME",
    "CYCLES_ACTUAL_AMOUNT",
    "CYCLES_BUDGET_REMAINING",
    "CYCLES_CAPS_COOLDOWN_MS",
    "CYCLES_CAPS_ENFORCED",
    "CYCLES_CAPS_MAX_STEPS_REMAINING",
    "CYCLES_CAPS_MAX_TOKENS",
    "CYCLES_CAPS_TOOL_ALLOWLIST",
    "CYCLES_CAPS_TOOL_DENYLIST",
    "CYCLES_CLAMP_MAX_TOKENS",
    "CYCLES_DECISION",
    "CYCLES_ESTIMATE_AMOUNT",
    "CYCLES_ESTIMATE_SOURCE",
    "CYCLES_BREAKER_STATE",
    "CYCLES_FAIL_OPEN",
    "CYCLES_LOOKAHEAD",
    "CYCLES_PRICE_KNOWN",
    "CYCLES_REASON_CODE",
    "CYCLES_RELEASED",
    "CYCLES_RESERVATION_ID",
    "CYCLES_RESERVED_AMOUNT",
    "CYCLES_SCOPE_PATH",
    "CYCLES_SHADOW",
    "CYCLES_SOFT_LANDING",
    "CYCLES_UNIT",
    "GEN_AI_AGENT_NAME",
    "GEN_AI_OPERATION_NAME",
    "GEN_AI_OUTPUT",
    "GEN_AI_OUTPUT_TYPE",
    "GEN_AI_PROVIDER_NAME",
    "GEN_AI_REQUEST_MAX_TOKENS",
    "GEN_AI_REQUEST_MODEL",
    "GEN_AI_RESPONSE_MODEL",
    "GEN_AI_TOOL_NAME",
    "GEN_AI_USAGE_COST_AMOUNT",
    "GEN_AI_USAGE_COST_CURRENCY",
    "GEN_AI_USAGE_COST_SOURCE",
    "GEN_AI_USAGE_INPUT_COST",
    "GEN_AI_USAGE_OUTPUT_COST",
]

CYCLES_RESERVATION_ID = "cycles.reservation.id"
"""Id of the Cycles reservation that guards this span (absent when denied or failed open)."""
CYCLES_DECISION = "cycles.decision"
"""The authority's decision: `ALLOW`, `ALLOW_WITH_CAPS` or `DENY`."""
CYCLES_REASON_CODE = "cycles.reason_code"
"""Why the call was denied (`BUDGET_EXCEEDED`, `DEBT_OUTSTANDING`, ...); set on denial and on fail-open."""
CYCLES_SCOPE_PATH = "cycles.scope_path"
"""Deepest budget scope charged, e.g. `tenant:acme/workflow:research/agent:writer`."""
CYCLES_UNIT = "cycles.unit"
"""Unit of the amounts below; always `USD_MICROCENTS` (1 USD = 10^8)."""
CYCLES_ESTIMATE_AMOUNT = "cycles.estimate.amount"
"""The call's estimate: the amount reserved before it (or covered by a larger lookahead reservation)."""
CYCLES_ESTIMATE_SOURCE = "cycles.estimate.source"
"""How the estimate was made: `priced` (from the request), `fixed`, `tool_map`, `callable` or `fallback`."""
CYCLES_ACTUAL_AMOUNT = "cycles.actual.amount"
"""Amount committed for the call (0 when the reservation was released)."""
CYCLES_BUDGET_REMAINING = "cycles.budget.remaining"
"""Remaining budget at the deepest budgeted scope right after the reservation (or at the denial)."""
CYCLES_PRICE_KNOWN = "cycles.price.known"
"""False when the model has no known price and a conservative fallback amount was used instead."""
CYCLES_FAIL_OPEN = "cycles.fail_open"
"""True when the authority was unreachable and the call proceeded because fail-open is enabled."""
CYCLES_BREAKER_STATE = "cycles.breaker.state"
"""On a fail-open call: `closed` if this call found the authority down, `open`/`half_open` if it was known down
already and the call proceeded without asking it (see `otel_cycles._breaker`)."""
CYCLES_RELEASED = "cycles.released"
"""True when the reservation was released instead of committed (errored call, span never ended)."""
CYCLES_LOOKAHEAD = "cycles.lookahead"
"""True when the call adopted the reservation made ahead of it while the previous step's tools ran."""
CYCLES_RESERVED_AMOUNT = "cycles.reserved.amount"
"""Amount the adopted lookahead reservation holds (>= the estimate); set only with `cycles.lookahead`."""
CYCLES_CAPS_MAX_TOKENS = "cycles.caps.max_tokens"
"""Caps of an `ALLOW_WITH_CAPS` decision: the output-token cap of the call (set only when the authority sent it)."""
CYCLES_CAPS_MAX_STEPS_REMAINING = "cycles.caps.max_steps_remaining"
"""Caps: governed calls the run may still make after this one."""
CYCLES_CAPS_TOOL_ALLOWLIST = "cycles.caps.tool_allowlist"
"""Caps: the only tools allowed (string array)."""
CYCLES_CAPS_TOOL_DENYLIST = "cycles.caps.tool_denylist"
"""Caps: tools not allowed (string array)."""
CYCLES_CAPS_COOLDOWN_MS = "cycles.caps.cooldown_ms"
"""Caps: minimum milliseconds between the starts of the run's governed calls."""
CYCLES_CAPS_ENFORCED = "cycles.caps.enforced"
"""What the caps did to this call (string array): `max_tokens`, `tool`, `cooldown`, `max_steps`; in shadow mode
what they would have done."""
CYCLES_CLAMP_MAX_TOKENS = "cycles.clamp.max_tokens"
"""The output-token bound put on this LLM call's request (the caps' `max_tokens` or the soft landing's)."""
CYCLES_SHADOW = "cycles.shadow"
"""True in shadow mode: the decision on the span was recorded, not enforced."""
CYCLES_SOFT_LANDING = "cycles.soft_landing"
"""True when the call was denied at its full estimate and reserved what the budget could still pay instead."""
CYCLES_ACTION_KIND = "cycles.action.kind"
"""Cycles action kind: `llm.completion` or `tool.execution`."""
CYCLES_ACTION_NAME = "cycles.action.name"
"""Cycles action name: the normalised model id (`openai:gpt-4o`) or the tool name."""

GEN_AI_USAGE_COST_AMOUNT = "gen_ai.usage.cost.amount"
"""Cost of the call in `gen_ai.usage.cost.currency` (a float, USD)."""
GEN_AI_USAGE_COST_CURRENCY = "gen_ai.usage.cost.currency"
"""ISO 4217 currency of the cost: `USD`."""
GEN_AI_USAGE_COST_SOURCE = "gen_ai.usage.cost.source"
"""`local` when priced from reported token usage, `estimate` when the estimate was committed instead."""
GEN_AI_USAGE_INPUT_COST = "gen_ai.usage.input_cost"
"""Input-side cost in USD; AnyAgent's `AgentTrace.cost` sums it."""
GEN_AI_USAGE_OUTPUT_COST = "gen_ai.usage.output_cost"
"""Output-side cost in USD; AnyAgent's `AgentTrace.cost` sums it."""

GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_OUTPUT = "gen_ai.output"
"""AnyAgent: the LLM answer (text, or the tool calls as JSON)."""
GEN_AI_OUTPUT_TYPE = "gen_ai.output.type"
"""AnyAgent: `text`, or `json` when the answer is tool calls."""
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
