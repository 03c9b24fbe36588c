"""Honour the caps of an `ALLOW_WITH_CAPS` decision (protocol `Caps`): what each cap means for one governed call.

Pure rules over the parsed protocol response (`runcycles.Caps`), so they work the same against any Cycles server:

- `tool_allowlist` / `tool_denylist`: a non-empty allowlist admits only its tools (the denylist is then ignored);
  otherwise the denylist's tools are forbidden. Names match exactly. A forbidden tool is refused before it runs.
  (The protocol says "if tool_allowlist is non-empty"; runcycles' `Caps.is_tool_allowed` treats an empty allowlist
  as "nothing allowed", so we do not call it.)
- `max_tokens`: an LLM call's request is clamped to at most that many output tokens (`_clamp`); where the request
  cannot be clamped the call is refused.
- `max_steps_remaining`: a cap received at the run's k-th governed call allows k + N governed calls in all; the next
  call is refused before it is reserved. The tightest cap seen in the run wins, so a policy that repeats the same
  number on every decision still ends the run.
- `cooldown_ms`: the call starts no earlier than `cooldown_ms` after the run's previous governed call started. The
  hook waits for that (it is synchronous, so it blocks the agent), up to a bound; a longer cooldown refuses the call.

`judge` turns a call's caps into a `Verdict`; `review` adds what the run's state and the callback's settings make of
it (a clamp the run cannot apply, a soft landing's bound) and the span attributes and metrics; the callback carries it
out (or, in shadow mode, only records it). `steps_refusal` and `count_step` keep the run's step count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from runcycles import Caps

from otel_cycles import attributes as attr
from otel_cycles import metrics
from otel_cycles._registry import RunState
from otel_cycles.errors import ActionNotPermitted

__all__ = [
    "Review",
    "Verdict",
    "caps_attributes",
    "clamp_bypassed",
    "count_step",
    "judge",
    "review",
    "step_limit",
    "steps_refusal",
    "tool_allowed",
]

logger = logging.getLogger(__name__)

TOOL_NOT_ALLOWED = "TOOL_NOT_ALLOWED"
MAX_STEPS_REACHED = "MAX_STEPS_REACHED"
COOLDOWN_TOO_LONG = "COOLDOWN_TOO_LONG"
MAX_TOKENS_UNENFORCEABLE = "MAX_TOKENS_UNENFORCEABLE"


def tool_allowed(caps: Caps, tool: str) -> bool:
    """Whether `caps` let `tool` run (protocol precedence: a non-empty allowlist wins over the denylist)."""
    if caps.tool_allowlist:
        return tool in caps.tool_allowlist
    return not (caps.tool_denylist and tool in caps.tool_denylist)


def step_limit(current: int | None, steps_done: int, caps: Caps | None) -> int | None:
    """The run's limit on governed calls after a decision at its `steps_done`-th call (None: no limit)."""
    if caps is None or caps.max_steps_remaining is None:
        return current
    limit = steps_done + caps.max_steps_remaining
    return limit if current is None else min(current, limit)


def caps_attributes(caps: Caps) -> dict[str, Any]:
    """The `cycles.caps.*` span attributes of `caps` (only the caps that are set)."""
    values: dict[str, Any] = {}
    if caps.max_tokens is not None:
        values[attr.CYCLES_CAPS_MAX_TOKENS] = caps.max_tokens
    if caps.max_steps_remaining is not None:
        values[attr.CYCLES_CAPS_MAX_STEPS_REMAINING] = caps.max_steps_remaining
    if caps.tool_allowlist:
        values[attr.CYCLES_CAPS_TOOL_ALLOWLIST] = list(caps.tool_allowlist)
    if caps.tool_denylist:
        values[attr.CYCLES_CAPS_TOOL_DENYLIST] = list(caps.tool_denylist)
    if caps.cooldown_ms is not None:
        values[attr.CYCLES_CAPS_COOLDOWN_MS] = caps.cooldown_ms
    return values


@dataclass(frozen=True)
class Verdict:
    """What the caps of one call require."""

    refusal: str | None = None
    """A reason code (`TOOL_NOT_ALLOWED`, ...) if the call must not run."""
    message: str = ""
    clamp: int | None = None
    """Output-token bound for an LLM call's request."""
    wait_s: float = 0.0
    """Cooldown to wait before the call."""
    enforced: Sequence[str] = ()
    """Which caps this call is bound by (`max_tokens`, `tool`, `cooldown`, `max_steps`), for the metric."""


def judge(
    caps: Caps,
    *,
    is_tool: bool,
    name: str,
    since_last_start_s: float | None,
    max_wait_s: float,
) -> Verdict:
    """The verdict of `caps` on the call `name` (a tool if `is_tool`, else an LLM call).

    `since_last_start_s`: seconds since the run's previous governed call started (None: this is the first).
    """
    if is_tool and not tool_allowed(caps, name):
        return Verdict(TOOL_NOT_ALLOWED, f"tool {name!r} is not permitted by the authority's caps", enforced=("tool",))
    enforced: list[str] = []
    wait_s = 0.0
    if caps.cooldown_ms and since_last_start_s is not None:
        wait_s = max(0.0, caps.cooldown_ms / 1000 - since_last_start_s)
        if wait_s > max_wait_s:
            message = f"cooldown of {caps.cooldown_ms} ms needs a {wait_s:.1f} s wait (more than {max_wait_s} s)"
            return Verdict(COOLDOWN_TOO_LONG, message, enforced=("cooldown",))
        if wait_s > 0:
            enforced.append("cooldown")
    clamp = None if is_tool else caps.max_tokens
    if clamp is not None:
        enforced.append("max_tokens")
    if caps.max_steps_remaining is not None:
        enforced.append("max_steps")
    return Verdict(clamp=clamp, wait_s=wait_s, enforced=tuple(enforced))


@dataclass(frozen=True)
class Review:
    """What the callback does with an allowed call under its caps."""

    refusal: ActionNotPermitted | None = None
    clamp: int | None = None
    """Output-token bound for the request (the caps' `max_tokens` or a soft landing's, whichever is lower)."""
    wait_s: float = 0.0
    attributes: dict[str, Any] = field(default_factory=dict)
    """The `cycles.caps.*` span attributes."""


def review(
    run: RunState,
    caps: Caps | None,
    *,
    is_tool: bool,
    kind: str,
    name: str,
    landed: int | None,
    max_wait_s: float,
    shadow: bool,
) -> Review:
    """Review an allowed call: its caps' verdict, a soft landing's bound (`landed`), the run's clamp support."""
    with run.lock:
        since = None if run.last_start is None else time.monotonic() - run.last_start
        clamp_unsupported = run.clamp_unsupported
    verdict = judge(caps, is_tool=is_tool, name=name, since_last_start_s=since, max_wait_s=max_wait_s) if caps else None
    verdict = verdict or Verdict()
    clamp = min((t for t in (verdict.clamp, landed) if t is not None), default=None)
    attributes = caps_attributes(caps) if caps is not None else {}
    if verdict.enforced:
        attributes[attr.CYCLES_CAPS_ENFORCED] = list(verdict.enforced)
    refusal = None
    if verdict.refusal is not None:
        refusal = ActionNotPermitted(verdict.message, reason_code=verdict.refusal, action_kind=kind, action_name=name)
    elif clamp is not None and clamp_unsupported:
        refusal = ActionNotPermitted(
            f"this run's requests bypass the output-token clamp; a call capped at {clamp} tokens is not made",
            reason_code=MAX_TOKENS_UNENFORCEABLE,
            action_kind=kind,
            action_name=name,
        )
    outcome = "shadow" if shadow else "refused" if refusal is not None else "applied"
    for cap in verdict.enforced:
        metrics.caps_enforced.add(1, {"cycles.cap": cap, "outcome": outcome, "cycles.shadow": shadow})
    return Review(refusal, clamp, verdict.wait_s, attributes)


def steps_refusal(run: RunState, kind: str, name: str, *, shadow: bool) -> ActionNotPermitted | None:
    """The stop of a call the caps' `max_steps_remaining` leave no room for, if this is one (checked before the
    call is reserved, so there is nothing to release)."""
    with run.lock:
        limit = run.step_limit if run.step_limit is not None and run.steps >= run.step_limit else None
    if limit is None:
        return None
    metrics.caps_enforced.add(1, {"cycles.cap": "max_steps", "outcome": "refused", "cycles.shadow": shadow})
    return ActionNotPermitted(
        f"the run made the {limit} governed calls its caps allow (max_steps_remaining); {kind} {name!r} not made",
        reason_code=MAX_STEPS_REACHED,
        action_kind=kind,
        action_name=name,
    )


def count_step(run: RunState, caps: Caps | None) -> None:
    """Count a governed call that goes ahead, under the caps its decision carried."""
    with run.lock:
        run.steps += 1
        run.step_limit = step_limit(run.step_limit, run.steps, caps)
        run.last_start = time.monotonic()


def clamp_bypassed(run: RunState) -> None:
    """A clamped request of `run` did not go through the clamp (`_clamp`): refuse the run's later clamped calls."""
    with run.lock:
        run.clamp_unsupported = True
    metrics.caps_enforced.add(1, {"cycles.cap": "max_tokens", "outcome": "bypassed", "cycles.shadow": False})
    logger.warning(
        "otel-cycles: an LLM request of run %s did not go through any-llm, so its output tokens were not clamped "
        "(a custom model_type?); later calls of the run that need a clamp are refused",
        run.run_id,
    )
