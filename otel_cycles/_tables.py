"""Terminal output shared by the CLI commands: amounts in words, rich tables that fit 80 columns, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from rich.text import Text

__all__ = ["amount", "print_json", "print_table"]

_MICROCENTS_PER_USD = Decimal(100_000_000)


def amount(value: Any) -> str:
    """An `Amount` (`{"unit", "amount"}`) or None as a short string: `$0.50` for USD_MICROCENTS, else `1,000 TOKENS`."""
    if not isinstance(value, dict) or not isinstance(value.get("amount"), int):
        return "-"
    n: int = value["amount"]
    if value.get("unit") == "USD_MICROCENTS":
        usd = Decimal(abs(n)) / _MICROCENTS_PER_USD
        # Cents when whole; else as many decimals as needed (8 at most: 1 µ¢ is 1e-8 USD).
        text = f"{usd:,.2f}" if usd == usd.quantize(Decimal("0.01")) else f"{usd.normalize():,f}"
        return ("-" if n < 0 else "") + "$" + text
    return f"{n:,} {value.get('unit', '')}".strip()


def print_json(value: Any) -> None:
    """Indented JSON on stdout (for scripts and `jq`)."""
    print(json.dumps(value, indent=2))


def print_table(
    title: str | None, columns: Sequence[str], rows: Sequence[Sequence[str | Text]], *, wrap: int = 0
) -> None:
    """A table on stdout: the terminal's width, 80 columns when piped. Column `wrap` (a scope, a list) wraps to make
    the table fit; the others (ids, amounts, dates) stay on one line. Plain `str` cells are printed as they are (no
    rich markup); pass `rich.text.Text` for styled ones."""
    from rich.console import Console
    from rich.table import Table

    if not rows:
        print(f"{title + ': ' if title else ''}none")
        return
    console = Console(width=None if sys.stdout.isatty() else 80)
    table = Table(title=title, title_justify="left", box=None, pad_edge=False, header_style="bold")
    for i, column in enumerate(columns):
        table.add_column(column, overflow="fold", no_wrap=i != wrap % len(columns))
    for row in rows:
        table.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in row))
    console.print(table)
