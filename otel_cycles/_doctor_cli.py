"""`otel-cycles doctor`: the command line and the rendering of `otel_cycles.doctor`'s findings (table or JSON)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from rich.text import Text

from otel_cycles._tables import print_json, print_table

if TYPE_CHECKING:
    from otel_cycles.doctor import Check

__all__ = ["add_doctor_command"]

SUBJECT_LEVELS = ("tenant", "workspace", "app", "workflow", "agent", "toolset")
_MARK = {"ok": Text("ok", "green"), "warn": Text("WARN", "yellow"), "fail": Text("FAIL", "red")}


def render(checks: list[Check]) -> None:
    """Print the findings as a table, then one fix line per problem."""
    from otel_cycles.doctor import exit_code

    print_table(None, ["", "check", "result"], [(_MARK[c.status], c.name, c.detail) for c in checks], wrap=2)
    problems = [c for c in checks if c.fix and c.status in ("fail", "warn")]
    if problems:
        print()
        for c in problems:
            print(f"fix ({c.name}): {c.fix}")
    code = exit_code(checks)
    print("\nall checks passed" if code == 0 else f"\n{len(problems)} problem(s) found")


def _cmd_doctor(args: argparse.Namespace) -> int:
    """Check the Cycles deployment the callback would use (CYCLES_* variables, or flags): never changes the ledger."""
    from otel_cycles.doctor import as_json, diagnose, exit_code, settings_from_env

    overrides: dict[str, Any] = {
        "base_url": args.url,
        "api_key": args.api_key,
        "admin_url": args.admin_url,
        "unit": args.unit,
        "estimate": args.estimate,
        "timeout_s": args.timeout,
    }
    overrides |= {level: getattr(args, level) for level in SUBJECT_LEVELS}
    checks = diagnose(settings_from_env(overrides))
    if args.json:
        print_json(as_json(checks))
    else:
        render(checks)
    return exit_code(checks)


def add_doctor_command(subparsers: Any) -> None:
    """Add `doctor` to the CLI."""
    doctor = subparsers.add_parser(
        "doctor",
        help="check a Cycles deployment: reachability, key, budgets, caps, clock",
        description=str(_cmd_doctor.__doc__) + " Exit codes: 0 no problem, 1 problems found, 2 no URL or API key, "
        "3 the authority is unreachable.",
    )
    doctor.add_argument("--url", help="runtime base URL (default: $CYCLES_BASE_URL)")
    doctor.add_argument("--api-key", help="tenant API key (default: $CYCLES_API_KEY)")
    for level in SUBJECT_LEVELS:
        doctor.add_argument(f"--{level}", help=f"subject {level} (default: $CYCLES_{level.upper()})")
    doctor.add_argument("--admin-url", help="where to ask /v1/auth/introspect (default: the runtime URL)")
    doctor.add_argument("--unit", default="USD_MICROCENTS", help="budget unit (default USD_MICROCENTS)")
    doctor.add_argument("--estimate", type=int, default=1, help="amount the dry run asks for (default 1)")
    doctor.add_argument("--timeout", type=float, default=5.0, help="seconds per request (default 5)")
    doctor.add_argument("--json", action="store_true", help="print the findings as JSON")
    doctor.set_defaults(handler=_cmd_doctor)
