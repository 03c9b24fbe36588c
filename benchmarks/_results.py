"""Write a benchmark's figures into its own `## <title>` section of BENCHMARKS.md (keeping the others) and JSON."""

from __future__ import annotations

import json
import os
import platform
import re
from datetime import date
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
"""Machine-readable figures of each benchmark (`<name>.json`), beside the Markdown tables."""
_HEADER = "# Benchmarks\n\nMeasured figures, each section written by the command it names. Machine: {machine}.\n"


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_section(title: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or append) the section `## {title}` with `body`, stamped with today's date."""
    text = path.read_text() if path.exists() else _HEADER.format(machine=machine())
    # The load average says whether other jobs shared the machine while the figures were taken.
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    stamp = f"_Measured {date.today().isoformat()} on {machine()}; load average {load} (1, 5, 15 min) when written._"
    section = f"## {title}\n\n{stamp}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text.rstrip() + "\n")


def write_json(path: Path, figures: dict[str, Any]) -> None:
    """Write a benchmark's raw figures, stamped with the date and the machine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stamped = {"date": date.today().isoformat(), "machine": machine(), **figures}
    path.write_text(json.dumps(stamped, indent=2, sort_keys=True) + "\n")
