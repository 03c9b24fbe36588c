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

`judge` turns a call's caps into a `Verdict`; the callback carries it out (or, in shadow mode, only records it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runcycles import Caps

from otel_cycles import attributes as attr

__all__ = ["Verdict", "caps_attributes", "judge", "step_limit", "tool_allowed"]

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
