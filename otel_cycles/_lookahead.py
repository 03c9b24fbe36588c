"""Reserve a run's next calls as soon as they are known, taking round trips off the critical path.

An LLM call that answered with tool calls is followed by those tool calls, and by another LLM call once the tools
return. As soon as the answer is in (`after_llm_call`), the reservation requests of the tools it names and of that
next LLM call are written, in that order, each on its own keep-alive connection (`_lean_client.Exchange`), by the
agent's own thread; their answers are read by the calls that claim them. The requests leave before the answer's
commit and before the framework runs the tools, and a single-threaded authority answers in arrival order, so the
tools' come back first. No thread hands them over: a lane thread that sent them before (docs/design.md) competed
with the agent's for the interpreter lock, and with tinyagent, whose tools run right after the answer, it lost the
race to the tools' own hooks. A client that is not lean (a user's subclass of `CyclesClient`) cannot send this way:
then each call sends its lookahead itself, which costs what reserving would.

The next LLM call's lookahead is sized with headroom: the same amount for fixed estimates, twice the last one for
estimates priced from a request that grows with every step; a tool's is its estimate. The call's before-hook adopts
its lookahead when it is ALLOWed, for the same action, at least as big as that call's own estimate, and with at
least half its lease left (counted from when it was sent); otherwise it is released in the background and the call
reserves as usual. So whether a call is denied never depends on a lookahead: a lookahead that was denied,
unreachable or too small only costs the round trip it would have cost anyway.

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
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.trace import StatusCode

from otel_cycles import attributes as attr
from otel_cycles._reserve import Allowed, ReserveResult, SentReservation

__all__ = ["HEADROOM", "Lookahead", "asks_for_tools", "named_tools", "next_amount", "worth_it"]

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


class Lookahead:
    """One reservation request made ahead for a run's next call, claimed by at most one call. Thread-safe.

    Sent when the answer is in (`start`) and read by the call that claims it; one that could not be sent is sent by
    its call instead, or never (a run that drops it).
    """

    def __init__(self, body: dict[str, Any], amount: int) -> None:
        self.body = body
        self.amount = amount
        self.sent_at = 0.0
        """`time.monotonic()` when the request was sent (the lease is counted from there)."""
        self._lock = threading.Lock()  # guards _read and sent_at
        self._read: SentReservation | None = None
        """The request `start` sent, its answer not read yet."""

    @property
    def key(self) -> str:
        """The reservation request's idempotency key."""
        return str(self.body["idempotency_key"])

    @property
    def action(self) -> dict[str, Any]:
        action: dict[str, Any] = self.body["action"]
        return action

    def start(self, starter: Callable[[dict[str, Any]], SentReservation | None]) -> None:
        """Send the request now with `starter` (`_reserve.start_reserve`), unless it was; its claim reads the answer.
        If it cannot be sent that way, it stays unsent."""
        with self._lock:  # held while sending (one write): a claim from another thread then finds it sent
            if self._read is None and not self.sent_at:
                self.sent_at = time.monotonic()
                self._read = starter(self.body)
                if self._read is None:
                    self.sent_at = 0.0

    def claim(self, send_here: Callable[[dict[str, Any]], ReserveResult] | None = None) -> tuple[Allowed | None, str]:
        """Take the reservation: read the answer of the request `start` sent or, if it was never sent, send it now with
        `send_here` (the call's own reservation request), or without one, never.

        Returns it with outcome `claimed`, or None with why not: `not_sent` (never sent), `not_allowed` (denied or
        unreachable).
        """
        with self._lock:
            read, self._read = self._read, None
            if read is None and send_here is not None:
                self.sent_at = time.monotonic()
        if read is not None:
            result = read.read()
        elif send_here is not None:
            result = send_here(self.body)
        else:
            return None, "not_sent"
        if isinstance(result, Allowed):
            return result, "claimed"
        return None, "not_allowed"

    def unread_fileno(self) -> int | None:
        """The socket its answer arrives on, if it was sent and nobody has claimed it yet; else None."""
        with self._lock:
            return self._read.fileno() if self._read is not None else None

    def lease_left_ms(self, allowed: Allowed, ttl_ms: int) -> int:
        """Milliseconds of lease the claimed reservation has left now, at least (counted from when it was sent)."""
        lease_ms = allowed.response.remaining_ttl_ms
        if lease_ms is None:
            lease_ms = ttl_ms
        return int(lease_ms - (time.monotonic() - self.sent_at) * 1000)
