"""Exceptions raised by the governance callback.

Every exception that stops an agent is an AnyAgent `AgentCancel`, so AnyAgent re-raises it unwrapped with the
partial trace attached (`exc.trace`) instead of wrapping it in `AgentRunError`:

```
ValueError
 └── ConfigurationError         raised at construction: a setting is missing or malformed (tenant, base URL)
AgentCancel (any_agent)
 └── GovernanceStop              the callback stopped the agent before a call; never raised for a finished call
      ├── BudgetExceeded         the authority denied the reservation (budget, debt, overdraft, frozen, closed)
      ├── AuthorityUnavailable   the authority could not be reached and fail-open is off (the default)
      ├── ReservationRejected    the authority refused the request itself (no budget for the scope, bad key, ...)
      └── ActionNotPermitted     the authority's caps forbid the call (tool not allowed, steps used up, ...)
```
"""

from __future__ import annotations

from any_agent import AgentCancel

__all__ = [
    "ActionNotPermitted",
    "AuthorityUnavailable",
    "BudgetExceeded",
    "ConfigurationError",
    "GovernanceStop",
    "ReservationRejected",
]

DENIAL_REASONS = frozenset(
    {
        "BUDGET_EXCEEDED",
        "DEBT_OUTSTANDING",
        "OVERDRAFT_LIMIT_EXCEEDED",
        "BUDGET_FROZEN",
        "BUDGET_CLOSED",
        "TENANT_CLOSED",
    }
)
"""Error and reason codes that mean "no budget for this call" rather than "the request was wrong"."""


class ConfigurationError(ValueError):
    """A setting is missing or malformed; raised when the callback is built, before any agent runs.

    The message names the setting and how to fix it (e.g. `tenant required: pass tenant=... or set CYCLES_TENANT`).
    """


class GovernanceStop(AgentCancel):
    """Base of every exception the budget callback raises to stop an agent before a call.

    Attributes:
        reason_code: The Cycles error or reason code (`BUDGET_EXCEEDED`, ...) or a local code.
        action_kind: `llm.completion` or `tool.execution`.
        action_name: The model id or tool name that was about to run.
    """

    def __init__(
        self,
        message: str,
        *,
        reason_code: str | None = None,
        action_kind: str | None = None,
        action_name: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason_code = reason_code
        self.action_kind = action_kind
        self.action_name = action_name


class BudgetExceeded(GovernanceStop):
    """The Cycles authority denied the reservation; the call was not made.

    Catch this to degrade gracefully (cached answer, cheaper model, skipped stage). `exc.trace` holds the
    partial AgentTrace, whose last span is the denied call (status ERROR, `cycles.decision=DENY`).

    Attributes:
        scope: The scope path the denial applies to (the deepest budgeted scope of the subject), if known.
        remaining: Remaining budget at that scope in `unit`, if the authority reported it.
        unit: Unit of `remaining` (`USD_MICROCENTS`).
        estimate: The amount that was requested.
    """

    def __init__(
        self,
        message: str,
        *,
        reason_code: str | None = "BUDGET_EXCEEDED",
        scope: str | None = None,
        remaining: int | None = None,
        unit: str = "USD_MICROCENTS",
        estimate: int | None = None,
        action_kind: str | None = None,
        action_name: str | None = None,
    ) -> None:
        super().__init__(message, reason_code=reason_code, action_kind=action_kind, action_name=action_name)
        self.scope = scope
        self.remaining = remaining
        self.unit = unit
        self.estimate = estimate


class AuthorityUnavailable(GovernanceStop):
    """The authority at `base_url` did not answer (transport error, timeout, 5xx) and fail-open is off.

    Attributes:
        base_url: The authority that could not be reached.
    """

    def __init__(self, message: str, *, base_url: str, action_kind: str | None = None, action_name: str | None = None):
        super().__init__(message, reason_code="AUTHORITY_UNAVAILABLE", action_kind=action_kind, action_name=action_name)
        self.base_url = base_url


class ReservationRejected(GovernanceStop):
    """The authority rejected the reservation request itself (HTTP 4xx other than a budget denial).

    Typical causes: no budget exists for any scope of the subject (404), the API key belongs to another tenant (403),
    or a budget exists in another unit (400 UNIT_MISMATCH). Fix the configuration; retrying will not help.

    Attributes:
        status: The HTTP status of the rejection.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        reason_code: str | None,
        action_kind: str | None = None,
        action_name: str | None = None,
    ) -> None:
        super().__init__(message, reason_code=reason_code, action_kind=action_kind, action_name=action_name)
        self.status = status


class ActionNotPermitted(GovernanceStop):
    """The caps of an `ALLOW_WITH_CAPS` decision forbid the call; it was not made and its reservation was released.

    `reason_code` says which cap: `TOOL_NOT_ALLOWED` (tool allowlist/denylist), `MAX_STEPS_REACHED`
    (`max_steps_remaining` used up), `COOLDOWN_TOO_LONG` (`cooldown_ms` longer than the callback waits) or
    `MAX_TOKENS_UNENFORCEABLE` (a `max_tokens` cap on a request that cannot be clamped).
    """
