"""Reserve a run's next calls in the background as soon as they are known, taking round trips off the critical path.

An LLM call that answered with tool calls is followed by those tool calls, and by another LLM call once the tools
return. As soon as the answer is in (`after_llm_call`), the reservations of the tools it names and of that next LLM
call are sent from the Settlement's lookahead lane, beside (not behind) the answer's commit, by one lane thread in
that order: the tools come first (their hooks come right after the answer), and a single-threaded authority answers
in arrival order. A lookahead its call finds still unsent (the agent's thread outran the lane, as tinyagent's does
when a tool follows its answer at once) is sent by the call itself: the same request, made once, and the lane waits
for it before it sends the rest of the batch, so the next LLM call's never competes with it. The next LLM call's is
sized with headroom: the same amount for fixed estimates, twice the last one for estimates priced from a request that
grows with every step; a tool's is its estimate. The call's before-hook adopts its lookahead when it is back,
ALLOWed, for the same action, at least as big as that call's own estimate, and at least half its lease left;
otherwise it is released in the background and the call reserves as usual. So whether a call is denied never depends
on a lookahead: a lookahead that was denied, unreachable or too small only costs the round trip it would have cost
anyway.

Held budget is bounded: a lookahead is made only when the last reservation reported at least `HEADROOM` times its
amount remaining in every affected scope, so it cannot starve a tight budget (the tools' lookaheads together are made
only when they are no bigger than the next LLM call's); a call or tool that is denied while its run holds lookaheads
releases them and asks again; and the end of the run releases unused ones before it waits for the run's
settlements, so nothing is left ACTIVE.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.trace import StatusCode
from runcycles import CyclesClient

from otel_cycles import attributes as attr
from otel_cycles._reserve import Allowed, ReserveResult, reserve

__all__ = ["HEADROOM", "Lookahead", "ToolRace", "asks_for_tools", "named_tools", "next_amount", "worth_it"]

HEADROOM = 20
"""A lookahead is made only if every scope the last reservation touched had >= HEADROOM x its amount remaining."""

_GROWING_SOURCES = frozenset({"priced", "callable"})
"""Estimate sources whose next amount is not known in advance (the request grows by the answer and tool results)."""

_FINAL_ANSWER_TOOLS = ("final_answer",)
"""Tools that end a run (tinyagent, smolagents): an answer calling one is not followed by another LLM call."""


def asks_for_tools(span: Any) -> bool:
    """Whether an LLM span's answer is a tool call other than a final answer (so another LLM call follows)."""
    values = getattr(span, "attributes", None) or {}
    status = getattr(getattr(span, "status", None), "status_code", None)
    if values.get(attr.GEN_AI_OUTPUT_TYPE) != "json" or status is StatusCode.ERROR:
        return False
    output = values.get(attr.GEN_AI_OUTPUT)
    return not (isinstance(output, str) and any(f'"{tool}"' in output for tool in _FINAL_ANSWER_TOOLS))


def next_amount(estimate: int, source: str) -> int:
    """The amount to reserve ahead for the call after one estimated at `estimate` from `source`."""
    return 2 * estimate if source in _GROWING_SOURCES else estimate


def named_tools(attributes: Mapping[str, Any]) -> list[str]:
    """The tools an LLM span's answer calls, as AnyAgent's span generation records them (`gen_ai.output` is a JSON
    list of `{"tool.name": ..., "tool.args": ...}` when `gen_ai.output.type` is `json`); [] if none or unreadable."""
    output = attributes.get("gen_ai.output")
    if attributes.get("gen_ai.output.type") != "json" or not isinstance(output, str) or '"tool.name"' not in output:
        return []
    try:
        calls = json.loads(output)
    except ValueError:
        return []
    if not isinstance(calls, list):
        return []
    return [str(call["tool.name"]) for call in calls if isinstance(call, dict) and call.get("tool.name")]


def worth_it(amount: int, balances: Any) -> bool:
    """Whether the authority's reported balances leave room for a speculative hold of `amount`.

    Servers may omit balances (they are optional in the protocol); then only the denial fallbacks bound the hold.
    """
    remaining = [int(balance.remaining.amount) for balance in balances or [] if balance.remaining is not None]
    return not remaining or min(remaining) >= HEADROOM * amount


class ToolRace:
    """Whether the lane sends an agent's tool lookaheads before the tools' own hooks ask for them. Thread-safe.

    A tool lookahead only pays when the lane's thread sends it before the tool's before-hook runs. With tinyagent that
    hook comes right after the answer, on the thread holding the interpreter lock, and nearly always sends the request
    itself: the lane's thread then only competes with the agent's for the lock, and the next LLM call's lookahead
    waits behind the tool's. Measured (`benchmarks.bench_agents`, tinyagent, 20/0 ms, 8 calls, 80 rounds, side by
    side): 0.65 of the guide's overhead with tool lookaheads, 0.55 without; with the openai framework the lane is
    first (the tool's hook comes about a millisecond later) and they take the tool's round trip off the critical
    path. So each callback keeps score over its last `WINDOW` tool lookaheads and makes them only while the lane was
    first in at least `MIN_SHARE` of them, trying again every `PROBE_EVERY`th answer, so a change is noticed.
    """

    WINDOW = 16
    MIN_SHARE = 0.25
    PROBE_EVERY = 8

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lane_first: deque[bool] = deque(maxlen=self.WINDOW)
        self._answers = 0

    def record(self, lane_first: bool) -> None:
        """Note who sent a tool lookahead its call claimed: the lane (True) or the call itself (False)."""
        with self._lock:
            self._lane_first.append(lane_first)

    def worth_it(self) -> bool:
        """Whether this answer's tool calls should be reserved ahead (counts the answer)."""
        with self._lock:
            self._answers += 1
            seen = len(self._lane_first)
            if seen < self.WINDOW // 4 or self._answers % self.PROBE_EVERY == 0:
                return True
            return sum(self._lane_first) >= self.MIN_SHARE * seen


class Lookahead:
    """One background reservation request for a run's next LLM call. Thread-safe.

    States: queued → sent → done (sent by the lane, or by the call that claims it first), or queued → cancelled
    (dropped before anyone sent it: it never will be).
    """

    def __init__(self, body: dict[str, Any], amount: int) -> None:
        self.body = body
        self.amount = amount
        self.result: ReserveResult | None = None
        self.received_at = 0.0
        """`time.monotonic()` when the response arrived."""
        self.sent_by_call = False
        """Its call found it unsent and sent it itself (the lane was not first)."""
        self._lock = threading.Lock()  # guards _state and _abandoned
        self._state = "queued"
        self._abandoned = False
        self._done = threading.Event()

    @property
    def key(self) -> str:
        """The reservation request's idempotency key."""
        return str(self.body["idempotency_key"])

    @property
    def action(self) -> dict[str, Any]:
        action: dict[str, Any] = self.body["action"]
        return action

    def send(self, client: CyclesClient, timeout: float) -> Allowed | None:
        """Make the request (on the lookahead lane), or, if its call is sending it, wait up to `timeout` for that.
        Returns an ALLOWed reservation nobody will claim any more, which the caller must release; else None."""
        with self._lock:
            queued = self._state == "queued"
            if queued:
                self._state = "sent"
        if not queued:
            self._done.wait(timeout)  # the batch's next request goes out only after this one was answered
            return None
        return self._finish(reserve(client, self.body))

    def _finish(self, result: ReserveResult) -> Allowed | None:
        with self._lock:
            self.result, self.received_at, self._state = result, time.monotonic(), "done"
            orphaned = self._abandoned
        self._done.set()
        return result if orphaned and isinstance(result, Allowed) else None

    def claim(
        self, timeout: float, send_here: Callable[[dict[str, Any]], ReserveResult] | None = None
    ) -> tuple[Allowed | None, str]:
        """Take the reservation, waiting up to `timeout` if the request is in flight. If it is still unsent, send it
        now with `send_here` (the call's own reservation request), or, without one, cancel it.

        Returns it with outcome `claimed`, or None with why not: `not_sent` (cancelled unsent), `not_allowed` (denied
        or unreachable), `late` (not back in time: the worker releases it when it is).
        """
        with self._lock:
            queued = self._state == "queued"
            if queued:
                self._state = "sent" if send_here is not None else "cancelled"
        if queued:
            if send_here is None:
                self._done.set()  # the lane skips it without waiting
                return None, "not_sent"
            self.sent_by_call = True
            self._finish(send_here(self.body))
        elif not self._done.wait(timeout):
            with self._lock:
                if self._state != "done":
                    self._abandoned = True
                    return None, "late"
        if isinstance(self.result, Allowed):
            return self.result, "claimed"
        return None, "not_allowed"

    def lease_left_ms(self, allowed: Allowed, ttl_ms: int) -> int:
        """Milliseconds of lease the claimed reservation has left now."""
        lease_ms = allowed.response.remaining_ttl_ms
        if lease_ms is None:
            lease_ms = ttl_ms
        return int(lease_ms - (time.monotonic() - self.received_at) * 1000)
