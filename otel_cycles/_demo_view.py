"""What `otel-cycles demo` shows: a line per governed call while the agent runs, then spend tables and balances.

`ProgressPrinter` is an ordinary AnyAgent callback placed *after* `CyclesBudgetCallback`, so its after-hooks see the
reservation and cost attributes the budget callback stamped on `context.current_span`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from any_agent.callbacks import Callback, Context
from rich import box
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from otel_cycles import attributes as attr
from otel_cycles.analysis import ScopeBalance
from otel_cycles.errors import BudgetExceeded, GovernanceStop
from otel_cycles.pricing import MICROCENTS_PER_USD

__all__ = ["CallRow", "ProgressPrinter", "call_rows", "money", "render_budgets", "render_summary", "short_usd"]

_LLM = "llm.completion"


def usd(microcents: int) -> str:
    """`$0.00046250`: exact, since 1 USD_MICROCENT is 10^-8 USD."""
    return f"${Decimal(microcents) / MICROCENTS_PER_USD:.8f}"


def money(microcents: int) -> str:
    """An amount in both units: `46,250 µ¢ ($0.00046250)`."""
    return f"{microcents:,} µ¢ ({usd(microcents)})"


def short_usd(microcents: int) -> str:
    """`$0.0121`: four decimals, enough to read at a glance (the µ¢ column next to it is exact)."""
    return f"${Decimal(microcents) / MICROCENTS_PER_USD:.4f}"


def scope_label(scope: str) -> str:
    """The last level of a scope path, indented by its depth: `  agent:researcher` (fits 80 columns)."""
    depth = scope.count("/")
    return ("  " * depth) + scope.rsplit("/", 1)[-1]


def call_label(row: CallRow) -> str:
    """`LLM gpt-4o` / `tool search_web`: the provider prefix of a model id is dropped."""
    return ("LLM " + row.name.split(":", 1)[-1]) if row.kind == _LLM else f"tool {row.name}"


@dataclass(frozen=True)
class CallRow:
    """One governed LLM or tool call, read from its span."""

    name: str
    kind: str
    decision: str
    reserved: int
    committed: int | None
    input_tokens: int | None
    output_tokens: int | None


def _row(attributes: Mapping[str, Any]) -> CallRow | None:
    kind = attributes.get(attr.CYCLES_ACTION_KIND)
    if not isinstance(kind, str):
        return None
    committed = attributes.get(attr.CYCLES_ACTUAL_AMOUNT)
    return CallRow(
        name=str(attributes.get(attr.CYCLES_ACTION_NAME, "?")),
        kind=kind,
        decision=str(attributes.get(attr.CYCLES_DECISION, "?")),
        reserved=int(attributes.get(attr.CYCLES_ESTIMATE_AMOUNT, 0)),
        committed=int(committed) if isinstance(committed, int) else None,
        input_tokens=attributes.get("gen_ai.usage.input_tokens"),
        output_tokens=attributes.get("gen_ai.usage.output_tokens"),
    )


def call_rows(spans: Sequence[Any]) -> list[CallRow]:
    """The governed calls among an AgentTrace's spans, in the order they ended (the denied call last)."""
    rows = [_row(getattr(span, "attributes", None) or {}) for span in spans]
    return [row for row in rows if row is not None]


class ProgressPrinter(Callback):
    """Prints each finished call: reserved, committed and what is left of the budget at `scope`.

    The remaining budget is `allocated` minus everything committed so far: commits land in the background, so the
    balance the authority reports at reservation time may still hold an earlier call's full estimate.
    """

    def __init__(self, console: Console, scope: str, allocated: int) -> None:
        self.console = console
        self.scope = scope
        self.remaining = allocated
        self.calls = 0
        self._lock = threading.Lock()  # guards remaining and calls (LangChain runs hooks on executor threads)

    def after_llm_call(self, context: Context, *args: Any, **kwargs: Any) -> Context:
        self._print(context)
        return context

    def after_tool_execution(self, context: Context, *args: Any, **kwargs: Any) -> Context:
        self._print(context)
        return context

    def _print(self, context: Context) -> None:
        row = _row(getattr(context.current_span, "attributes", None) or {})
        if row is None:
            return
        with self._lock:
            self.calls += 1
            self.remaining -= row.committed or 0
            number, remaining = self.calls, self.remaining
        label = "[cyan]LLM [/]" if row.kind == _LLM else "[magenta]tool[/]"
        if number == 1:
            self.console.print(
                f"[dim]  #  call               reserved µ¢  committed µ¢  left at {self.scope.rsplit('/')[-1]}[/]"
            )
        name = row.name.split(":", 1)[-1] if row.kind == _LLM else row.name
        self.console.print(
            f"{number:>3}  {label} {name:<13} {row.reserved:>11,}  [bold]{row.committed or 0:>12,}[/]  "
            f"[green]{remaining:,} µ¢ ({short_usd(remaining)})[/]",
            highlight=False,
        )


def render_budgets(console: Console, budgets: Sequence[tuple[str, int]]) -> None:
    """The budget hierarchy the demo created, as a tree."""
    tree = Tree("[bold]budgets[/]")
    node = tree
    for scope, amount in budgets:
        node = node.add(f"{scope.rsplit('/', 1)[-1]}  {money(amount)}")
    console.print(tree, highlight=False)


def _table(title: str) -> Table:
    # SIMPLE_HEAD draws no vertical rules: the tables fit 80 columns (a terminal's and a pipe's default width).
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)


def _spans_table(rows: Sequence[CallRow]) -> Table:
    table = _table("Spend per span, in µ¢ (1 µ¢ = 10⁻⁸ USD)")
    for column in ("#", "call", "decision", "reserved", "committed", "tokens in/out"):
        table.add_column(column, justify="left" if column in ("call", "decision") else "right", no_wrap=True)
    for number, row in enumerate(rows, 1):
        tokens = ""
        if row.kind == _LLM and row.committed is not None:
            reported = bool(row.input_tokens or row.output_tokens)
            tokens = f"{row.input_tokens}/{row.output_tokens}" if reported else "none*"
        committed = f"{row.committed:,}" if row.committed is not None else "—"
        style = "red" if row.decision == "DENY" else None
        table.add_row(str(number), call_label(row), row.decision, f"{row.reserved:,}", committed, tokens, style=style)
    total = sum(row.committed or 0 for row in rows)
    table.add_section()
    table.add_row("", "total", "", "", f"{total:,}", short_usd(total), style="bold")
    return table


def _scopes_table(balances: Sequence[ScopeBalance]) -> Table:
    table = _table("Budget per scope, in µ¢ (from the authority)")
    for column in ("scope", "allocated", "spent", "reserved", "remaining", "left USD"):
        table.add_column(column, justify="left" if column == "scope" else "right", no_wrap=True)
    for b in balances:
        allocated = f"{b.allocated:,}" if b.allocated is not None else "—"
        table.add_row(
            scope_label(b.scope_path), allocated, f"{b.spent:,}", f"{b.reserved:,}", f"{b.remaining:,}",
            short_usd(b.remaining),
        )  # fmt: skip
    return table


def _stop_text(stop: GovernanceStop | None, calls: int) -> str:
    if stop is None:
        return "[green]The agent finished within its budget.[/]"
    what = "LLM call" if stop.action_kind == _LLM else "tool call"
    text = f"[bold red]Stopped[/] before {what} #{calls + 1} ({stop.action_name}): [bold]{stop.reason_code}[/]"
    if isinstance(stop, BudgetExceeded) and stop.scope is not None:
        text += (
            f"\n  it needed a reservation of {money(stop.estimate or 0)},\n  but "
            f"[bold]{scope_label(stop.scope).strip()}[/] had {money(stop.remaining or 0)} left.\n"
            "  The call was never made: no tokens were bought that the\n  budget could not pay for."
        )
    return text


def _notes(rows: Sequence[CallRow], output_allowance: int) -> list[str]:
    """Why the numbers look the way they do: the reserve/cost ratio of LLM calls, and calls without token usage."""
    notes: list[str] = []
    priced = [row for row in rows if row.kind == _LLM and row.committed and row.output_tokens]
    if priced:
        ratio = sum(row.reserved for row in priced) / sum(row.committed or 0 for row in priced)
        if ratio >= 2:
            notes.append(
                f"An LLM call reserves ~{ratio:.0f}x what it costs: the request sets no max_tokens, so its estimate "
                f"assumes {output_allowance:,} output tokens at the output price (+20 %); the calls used "
                f"~{sum(row.output_tokens or 0 for row in priced) // len(priced)}. Set max_tokens on the model (or "
                "output_allowance= / CYCLES_LLM_OUTPUT_ALLOWANCE) to reserve closer to the cost, or use a soft "
                "landing so the last calls still fit (see the README)."
            )
    if any(
        row.kind == _LLM and row.committed is not None and not (row.input_tokens or row.output_tokens) for row in rows
    ):
        notes.append(
            "* none: the framework reported no token usage for these calls, so their estimate was committed "
            "(llama_index does this by default; otel_cycles.llama_index_model_type() reads the real usage)."
        )
    return notes


def render_summary(
    console: Console,
    rows: Sequence[CallRow],
    balances: Sequence[ScopeBalance],
    stop: GovernanceStop | None,
    output_allowance: int = 1024,
) -> None:
    """The end of the demo: spend per span and per scope, the stop, and the cross-check against the authority."""
    console.print()
    console.print(_spans_table(rows))
    console.print(_scopes_table(balances))
    finished = sum(1 for row in rows if row.committed is not None)
    console.print(_stop_text(stop, finished), highlight=False)
    for note in _notes(rows, output_allowance):
        console.print(f"[dim]{note}[/]", highlight=False)
    total = sum(row.committed or 0 for row in rows)
    agree = all(b.spent == total and b.reserved == 0 for b in balances)
    mark = "[green]✓[/]" if agree else "[red]✗[/]"
    console.print(
        f"{mark} committed on spans {money(total)} {'=' if agree else '≠'} spent at every scope;\n  "
        f"{'nothing' if agree else 'something'} left reserved.",
        highlight=False,
    )
