"""The `otel-cycles` command line: one `_cmd_<name>` per subcommand, `main(argv)` returns the exit code."""

from __future__ import annotations

import argparse
import sys

from otel_cycles import __version__


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-cycles", description=__doc__)
    parser.add_argument("--version", action="version", version=f"otel-cycles {__version__}")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    subcommands.required = True

    from otel_cycles.authority._cli import add_authority_command

    add_authority_command(subcommands)

    from otel_cycles.demo import add_demo_command

    add_demo_command(subcommands)

    from otel_cycles._doctor_cli import add_doctor_command

    add_doctor_command(subcommands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with `argv` (default: `sys.argv[1:]`) and return the process exit code."""
    parser = _build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    handler = args.handler
    result: int = handler(args)
    return result
