"""`otel-cycles authority …`: serve the embedded authority, and operate any Cycles server over its admin plane.

`serve` runs the embedded authority; every other command is an HTTP client (`admin_client.AdminClient`) whose
handlers live in `_cli_commands`. Output is a table (80 columns) or, with `--json`, the server's JSON. Errors are one
line on stderr. Exit codes: 0 ok; 1 the server refused (not found, conflict, invalid) or `serve` could not start;
2 usage error; 3 the server is unreachable.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from otel_cycles.authority import _cli_commands as cmd

__all__ = ["MIN_ADMIN_KEY_LENGTH", "add_authority_command"]

DEFAULT_URL = "http://127.0.0.1:7878"
MIN_ADMIN_KEY_LENGTH = 16
"""`serve` refuses shorter admin keys: the admin key can create tenants, keys and budgets."""
UNITS = ("USD_MICROCENTS", "TOKENS", "CREDITS", "RISK_POINTS")


def _cmd_serve(args: argparse.Namespace) -> int:
    """Serve the authority (runtime + admin planes) until interrupted."""
    import sqlite3

    from otel_cycles.authority import serve

    admin_key = args.admin_key or os.environ.get("CYCLES_ADMIN_API_KEY")
    if admin_key and len(admin_key) < MIN_ADMIN_KEY_LENGTH:
        print(f"error: the admin key must be at least {MIN_ADMIN_KEY_LENGTH} characters", file=sys.stderr)
        return 2
    if not admin_key:
        import secrets

        admin_key = "cyc_admin_" + secrets.token_hex(16)
        print(f"admin key (X-Admin-API-Key): {admin_key}", file=sys.stderr, flush=True)
    ttl = args.key_ttl_days or None  # 0: keys never expire
    try:
        serve(
            args.db,
            host=args.host,
            port=args.port,
            admin_key=admin_key,
            sweep_interval_s=args.sweep_interval,
            key_ttl_days=ttl,
        )
    except (OSError, sqlite3.Error) as exc:
        if isinstance(exc, sqlite3.Error) or exc.filename:  # the database file, not the socket
            print(f"error: cannot open the ledger {args.db}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        else:  # the port is taken, or the interface does not exist
            print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _client_args(parser: argparse.ArgumentParser, *, admin: bool = True) -> None:
    url = os.environ.get("CYCLES_BASE_URL") or DEFAULT_URL
    parser.add_argument(
        "--url", default=url, help=f"server base URL (default: $CYCLES_BASE_URL or {DEFAULT_URL}; now {url})"
    )
    if admin:
        parser.add_argument("--admin-key", help="admin secret (default: $CYCLES_ADMIN_API_KEY)")
    parser.add_argument("--json", action="store_true", help="print the server's JSON instead of a table")


def _command(group: Any, name: str, handler: cmd.Handler, *, admin: bool = True) -> argparse.ArgumentParser:
    doc = handler.__doc__ or ""
    parser: argparse.ArgumentParser = group.add_parser(name, help=doc.split("\n")[0], description=doc)
    parser.set_defaults(handler=lambda args: cmd.run(handler, args))
    _client_args(parser, admin=admin)
    return parser


def _group(commands: Any, name: str, help_text: str) -> Any:
    group = commands.add_parser(name, help=help_text).add_subparsers(dest=f"{name}_command", metavar="COMMAND")
    group.required = True
    return group


def _add_serve(commands: Any) -> None:
    serve = commands.add_parser("serve", help=_cmd_serve.__doc__, description=_cmd_serve.__doc__)
    serve.add_argument("--db", help="SQLite file (created 0600); omitted = in-memory")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=7878, help="TCP port, 0 = any free port (default 7878)")
    serve.add_argument(
        "--admin-key",
        help=f"admin secret, at least {MIN_ADMIN_KEY_LENGTH} characters "
        "(default: $CYCLES_ADMIN_API_KEY, else a random one, printed)",
    )
    serve.add_argument("--sweep-interval", type=float, default=1.0, help="seconds between expiry sweeps")
    serve.add_argument("--key-ttl-days", type=float, default=90, help="lifetime of new API keys (0 = never expire)")
    serve.set_defaults(handler=_cmd_serve)


def _add_tenant(commands: Any) -> None:
    tenant = _group(commands, "tenant", "tenants: create, list, show")
    create = _command(tenant, "create", cmd.tenant_create)
    create.add_argument("tenant_id")
    create.add_argument("--name", help="display name (default: the id)")
    listing = _command(tenant, "list", cmd.tenant_list)
    listing.add_argument("--status", choices=["ACTIVE", "SUSPENDED", "CLOSED"])
    _command(tenant, "show", cmd.tenant_show).add_argument("tenant_id")


def _add_api_key(commands: Any) -> None:
    keys = _group(commands, "api-key", "API keys: create, list, revoke")
    create = _command(keys, "create", cmd.api_key_create)
    create.add_argument("tenant_id")
    create.add_argument("--name", default="default")
    create.add_argument(
        "--permission",
        action="append",
        metavar="PERMISSION",
        help="grant a permission (repeatable; default: the runtime permissions an agent needs)",
    )
    listing = _command(keys, "list", cmd.api_key_list)
    listing.add_argument("--tenant", help="only this tenant's keys")
    listing.add_argument("--status", choices=["ACTIVE", "REVOKED", "EXPIRED"])
    revoke = _command(keys, "revoke", cmd.api_key_revoke)
    revoke.add_argument("key_id")
    revoke.add_argument("--reason")


def _add_budget(commands: Any) -> None:
    budget = _group(commands, "budget", "budgets: create, fund, list, show, freeze, unfreeze, close")
    create = _command(budget, "create", cmd.budget_create)
    create.add_argument("scope", help="e.g. tenant:acme/workspace:prod")
    create.add_argument("allocated", type=int, help="amount in the unit (USD_MICROCENTS: 100000000 = $1)")
    create.add_argument("--unit", default="USD_MICROCENTS", choices=UNITS)
    create.add_argument("--overdraft-limit", type=int, default=0)
    create.add_argument("--commit-overage-policy", choices=["REJECT", "ALLOW_IF_AVAILABLE", "ALLOW_WITH_OVERDRAFT"])
    fund = _command(budget, "fund", cmd.budget_fund)
    fund.add_argument("scope")
    fund.add_argument("operation", choices=["CREDIT", "DEBIT", "RESET", "REPAY_DEBT", "RESET_SPENT"])
    fund.add_argument("amount", type=int)
    fund.add_argument("--unit", default="USD_MICROCENTS", choices=UNITS)
    listing = _command(budget, "list", cmd.budget_list)
    listing.add_argument("tenant_id")
    listing.add_argument("--status", choices=["ACTIVE", "FROZEN", "CLOSED"])
    listing.add_argument("--scope", help="only scopes starting with this prefix, e.g. tenant:acme/workspace:prod")
    for name, handler in (
        ("show", cmd.budget_show),
        ("freeze", cmd.budget_freeze),
        ("unfreeze", cmd.budget_unfreeze),
        ("close", cmd.budget_close),
    ):
        one = _command(budget, name, handler)
        one.add_argument("scope")
        one.add_argument("--unit", default="USD_MICROCENTS", choices=UNITS)


def _add_policy(commands: Any) -> None:
    policy = _group(commands, "policy", "policies whose caps the authority puts on allowed decisions: create, list")
    create = _command(policy, "create", cmd.policy_create)
    create.add_argument("tenant_id")
    create.add_argument("scope_pattern", help="tenant:t/agent:a (exact), tenant:t/* (descendants), agent:*, */agent:a")
    create.add_argument("--name", help="unique per tenant (default: '<scope_pattern> @<priority>')")
    create.add_argument("--priority", type=int, default=0, help="the highest-priority matching policy wins")
    create.add_argument("--caps", help="Caps as JSON, e.g. '{\"max_tokens\": 512}' (the flags below add to it)")
    create.add_argument("--max-tokens", type=int)
    create.add_argument("--max-steps", type=int, help="caps.max_steps_remaining")
    create.add_argument("--cooldown-ms", type=int)
    create.add_argument("--allow-tool", action="append", metavar="TOOL", help="caps.tool_allowlist (repeatable)")
    create.add_argument("--deny-tool", action="append", metavar="TOOL", help="caps.tool_denylist (repeatable)")
    create.add_argument("--description")
    create.add_argument("--effective-from", help="RFC 3339 date-time, e.g. 2026-01-01T00:00:00Z")
    create.add_argument("--effective-until", help="RFC 3339 date-time (exclusive)")
    listing = _command(policy, "list", cmd.policy_list)
    listing.add_argument("tenant_id")
    listing.add_argument("--status", choices=["ACTIVE", "DISABLED"])
    listing.add_argument("--scope-pattern")


def _add_reservation(commands: Any) -> None:
    reservation = _group(commands, "reservation", "reservations: list, show")
    listing = _command(reservation, "list", cmd.reservation_list)
    listing.add_argument("tenant_id")
    listing.add_argument("--status", choices=["ACTIVE", "COMMITTED", "RELEASED", "EXPIRED"])
    listing.add_argument("--scope", help="only reservations whose scope starts with this prefix")
    _command(reservation, "show", cmd.reservation_show).add_argument("reservation_id")


def add_authority_command(subparsers: Any) -> None:
    """Add the `authority` command (serve, tenant, api-key, budget, reservation, balances, policy)."""
    authority = subparsers.add_parser(
        "authority",
        help="the embedded Cycles-compatible budget authority, and the admin commands for any Cycles server",
        description="Exit codes: 0 ok, 1 refused by the server (or serve could not start), 2 usage, 3 unreachable.",
    )
    commands = authority.add_subparsers(dest="authority_command", metavar="COMMAND")
    commands.required = True
    _add_serve(commands)
    _add_tenant(commands)
    _add_api_key(commands)
    _add_budget(commands)
    _add_reservation(commands)
    _add_policy(commands)
    balances = _command(commands, "balances", cmd.balances)
    balances.add_argument("tenant_id")
    balances.add_argument(
        "--api-key", help="read with this tenant key (default: $CYCLES_API_KEY) instead of the admin key"
    )
