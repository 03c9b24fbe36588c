"""`otel-cycles authority …`: serve the embedded authority, and set it up over its admin plane."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

__all__ = ["add_authority_command"]

_DEFAULT_URL = "http://127.0.0.1:7878"


def _cmd_serve(args: argparse.Namespace) -> int:
    """Serve the authority (runtime + admin planes) until interrupted."""
    from otel_cycles.authority import serve

    admin_key = args.admin_key or os.environ.get("CYCLES_ADMIN_API_KEY")
    if not admin_key:
        import secrets

        admin_key = "cyc_admin_" + secrets.token_hex(16)
        print(f"admin key (X-Admin-API-Key): {admin_key}", file=sys.stderr, flush=True)
    ttl = args.key_ttl_days or None  # 0: keys never expire
    serve(args.db, host=args.host, port=args.port, admin_key=admin_key, sweep_interval_s=args.sweep_interval,
          key_ttl_days=ttl)  # fmt: skip
    return 0


def _admin_key(args: argparse.Namespace) -> str:
    key: str | None = args.admin_key or os.environ.get("CYCLES_ADMIN_API_KEY")
    if not key:
        raise SystemExit("an admin key is required: --admin-key or CYCLES_ADMIN_API_KEY")
    return key


def _call(args: argparse.Namespace, method: str, path: str, *, body: Any = None, params: Any = None,
          headers: dict[str, str] | None = None) -> int:  # fmt: skip
    import httpx

    try:
        resp = httpx.request(method, args.url.rstrip("/") + path, json=body, params=params, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        print(f"error: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 2
    try:
        print(json.dumps(resp.json(), indent=2))
    except ValueError:
        print(resp.text)
    return 0 if resp.is_success else 1


def _cmd_tenant_create(args: argparse.Namespace) -> int:
    """Create a tenant (POST /v1/admin/tenants)."""
    body = {"tenant_id": args.tenant_id, "name": args.name or args.tenant_id}
    return _call(args, "POST", "/v1/admin/tenants", body=body, headers={"X-Admin-API-Key": _admin_key(args)})


def _cmd_api_key_create(args: argparse.Namespace) -> int:
    """Create an API key; the secret is printed once as key_secret (POST /v1/admin/api-keys)."""
    body = {"tenant_id": args.tenant_id, "name": args.name}
    return _call(args, "POST", "/v1/admin/api-keys", body=body, headers={"X-Admin-API-Key": _admin_key(args)})


def _cmd_budget_create(args: argparse.Namespace) -> int:
    """Create a budget (POST /v1/admin/budgets)."""
    unit = args.unit
    body: dict[str, Any] = {"scope": args.scope, "unit": unit, "allocated": {"unit": unit, "amount": args.allocated}}
    if args.overdraft_limit:
        body["overdraft_limit"] = {"unit": unit, "amount": args.overdraft_limit}
    if args.commit_overage_policy:
        body["commit_overage_policy"] = args.commit_overage_policy
    body["tenant_id"] = args.scope.split("/")[0].partition(":")[2].lower()
    return _call(args, "POST", "/v1/admin/budgets", body=body, headers={"X-Admin-API-Key": _admin_key(args)})


def _cmd_budget_fund(args: argparse.Namespace) -> int:
    """Fund a budget: CREDIT, DEBIT, RESET, REPAY_DEBT or RESET_SPENT (POST /v1/admin/budgets/fund)."""
    unit = args.unit
    params = {"scope": args.scope, "unit": unit, "tenant_id": args.scope.split("/")[0].partition(":")[2].lower()}
    body = {"operation": args.operation, "amount": {"unit": unit, "amount": args.amount}}
    headers = {"X-Admin-API-Key": _admin_key(args)}
    return _call(args, "POST", "/v1/admin/budgets/fund", body=body, params=params, headers=headers)


def _cmd_balances(args: argparse.Namespace) -> int:
    """Show balances: with --api-key via GET /v1/balances, else via the admin plane (GET /v1/admin/budgets)."""
    api_key = args.api_key or os.environ.get("CYCLES_API_KEY")
    if api_key:
        return _call(args, "GET", "/v1/balances", params={"tenant": args.tenant}, headers={"X-Cycles-API-Key": api_key})
    params = {"tenant_id": args.tenant}
    return _call(args, "GET", "/v1/admin/budgets", params=params, headers={"X-Admin-API-Key": _admin_key(args)})


def _client_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("CYCLES_BASE_URL", _DEFAULT_URL), help="authority base URL")
    parser.add_argument("--admin-key", help="admin secret (default: $CYCLES_ADMIN_API_KEY)")


def add_authority_command(subparsers: Any) -> None:
    """Add the `authority` command (serve, tenant create, api-key create, budget create/fund, balances, policy)."""
    authority = subparsers.add_parser("authority", help="the embedded Cycles-compatible budget authority")
    commands = authority.add_subparsers(dest="authority_command", metavar="COMMAND")
    commands.required = True

    serve = commands.add_parser("serve", help=_cmd_serve.__doc__, description=_cmd_serve.__doc__)
    serve.add_argument("--db", help="SQLite file (created 0600); omitted = in-memory")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=7878, help="TCP port, 0 = any free port (default 7878)")
    serve.add_argument("--admin-key", help="admin secret (default: $CYCLES_ADMIN_API_KEY, else a random one)")
    serve.add_argument("--sweep-interval", type=float, default=1.0, help="seconds between expiry sweeps")
    serve.add_argument("--key-ttl-days", type=float, default=90, help="lifetime of new API keys (0 = never expire)")
    serve.set_defaults(handler=_cmd_serve)

    tenant = commands.add_parser("tenant", help="tenants").add_subparsers(dest="tenant_command", metavar="COMMAND")
    tenant.required = True
    create = tenant.add_parser("create", help=_cmd_tenant_create.__doc__)
    create.add_argument("tenant_id")
    create.add_argument("--name")
    _client_args(create)
    create.set_defaults(handler=_cmd_tenant_create)

    keys = commands.add_parser("api-key", help="API keys").add_subparsers(dest="key_command", metavar="COMMAND")
    keys.required = True
    create = keys.add_parser("create", help=_cmd_api_key_create.__doc__)
    create.add_argument("tenant_id")
    create.add_argument("--name", default="default")
    _client_args(create)
    create.set_defaults(handler=_cmd_api_key_create)

    budget = commands.add_parser("budget", help="budgets").add_subparsers(dest="budget_command", metavar="COMMAND")
    budget.required = True
    create = budget.add_parser("create", help=_cmd_budget_create.__doc__)
    create.add_argument("scope", help="e.g. tenant:acme/workspace:prod")
    create.add_argument("allocated", type=int)
    create.add_argument("--unit", default="USD_MICROCENTS")
    create.add_argument("--overdraft-limit", type=int, default=0)
    create.add_argument("--commit-overage-policy", choices=["REJECT", "ALLOW_IF_AVAILABLE", "ALLOW_WITH_OVERDRAFT"])
    _client_args(create)
    create.set_defaults(handler=_cmd_budget_create)
    fund = budget.add_parser("fund", help=_cmd_budget_fund.__doc__)
    fund.add_argument("scope")
    fund.add_argument("operation", choices=["CREDIT", "DEBIT", "RESET", "REPAY_DEBT", "RESET_SPENT"])
    fund.add_argument("amount", type=int)
    fund.add_argument("--unit", default="USD_MICROCENTS")
    _client_args(fund)
    fund.set_defaults(handler=_cmd_budget_fund)

    balances = commands.add_parser("balances", help=_cmd_balances.__doc__)
    balances.add_argument("tenant")
    balances.add_argument("--api-key", help="tenant API key (default: $CYCLES_API_KEY); else the admin key is used")
    _client_args(balances)
    balances.set_defaults(handler=_cmd_balances)

    _add_policy_commands(commands)


# ---- `authority policy create|list` (issue 11): policies whose caps the authority puts on allowed decisions


def _cmd_policy_create(args: argparse.Namespace) -> int:
    """Create a policy for a tenant (POST /v1/admin/policies); matching allowed decisions carry its caps."""
    try:
        caps: dict[str, Any] = json.loads(args.caps) if args.caps else {}
    except ValueError as exc:
        raise SystemExit(f"--caps is not valid JSON: {exc}") from None
    if not isinstance(caps, dict):
        raise SystemExit("--caps must be a JSON object")
    for field, value in (("max_tokens", args.max_tokens), ("max_steps_remaining", args.max_steps),
                         ("cooldown_ms", args.cooldown_ms), ("tool_allowlist", args.allow_tool),
                         ("tool_denylist", args.deny_tool)):  # fmt: skip
        if value is not None:
            caps[field] = value
    body: dict[str, Any] = {"tenant_id": args.tenant_id, "name": args.name or f"{args.scope_pattern} @{args.priority}",
                            "scope_pattern": args.scope_pattern, "priority": args.priority}  # fmt: skip
    if caps or args.caps:
        body["caps"] = caps
    for field in ("description", "effective_from", "effective_until"):
        if getattr(args, field):
            body[field] = getattr(args, field)
    return _call(args, "POST", "/v1/admin/policies", body=body, headers={"X-Admin-API-Key": _admin_key(args)})


def _cmd_policy_list(args: argparse.Namespace) -> int:
    """List a tenant's policies, highest priority first (GET /v1/admin/policies)."""
    params = {"tenant_id": args.tenant_id, "limit": args.limit}
    params |= {k: v for k, v in (("status", args.status), ("scope_pattern", args.scope_pattern),
                                 ("cursor", args.cursor)) if v}  # fmt: skip
    return _call(args, "GET", "/v1/admin/policies", params=params, headers={"X-Admin-API-Key": _admin_key(args)})


def _add_policy_commands(commands: Any) -> None:
    policy = commands.add_parser("policy", help="policies (caps)").add_subparsers(dest="policy_command", metavar="CMD")
    policy.required = True
    create = policy.add_parser("create", help=_cmd_policy_create.__doc__, description=_cmd_policy_create.__doc__)
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
    _client_args(create)
    create.set_defaults(handler=_cmd_policy_create)
    listing = policy.add_parser("list", help=_cmd_policy_list.__doc__, description=_cmd_policy_list.__doc__)
    listing.add_argument("tenant_id")
    listing.add_argument("--status", choices=["ACTIVE", "DISABLED"])
    listing.add_argument("--scope-pattern")
    listing.add_argument("--limit", type=int, default=200, help="page size, 1-200 (default 200)")
    listing.add_argument("--cursor", help="next_cursor of the previous page")
    _client_args(listing)
    listing.set_defaults(handler=_cmd_policy_list)
