"""The admin commands of `otel-cycles authority`: one handler per command, and `run` for errors and exit codes.

A handler takes the parsed arguments and an `AdminClient`, calls the server and prints a readable view (or, with
`--json`, the server's JSON). `run` turns every failure into one line on stderr and an exit code: 1 refused by the
server, 2 usage, 3 unreachable; and keeps `... | head` quiet when the reader goes away.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from otel_cycles._tables import amount, print_json, print_table

if TYPE_CHECKING:  # imported when a command runs: httpx alone costs ~0.3 s, which `--help` should not pay
    from otel_cycles.authority.admin_client import AdminClient

__all__ = ["Handler", "run"]

Handler = Callable[[argparse.Namespace, "AdminClient"], None]


class Refused(Exception):
    """The command cannot be done as asked (exit 1), e.g. the tenant already exists."""


class Usage(Exception):
    """The arguments cannot make a request (exit 2), e.g. --caps is not JSON."""


def run(handler: Handler, args: argparse.Namespace) -> int:
    """Run `handler` against `args.url`; return the exit code (0 ok, 1 refused, 2 usage, 3 unreachable)."""
    from otel_cycles.authority.admin_client import AdminClient, AdminError, InvalidScope, MissingAdminKey, Unreachable

    admin_key = args.admin_key or os.environ.get("CYCLES_ADMIN_API_KEY")
    try:
        with AdminClient(args.url, admin_key) as client:
            handler(args, client)
        sys.stdout.flush()
    except AdminError as exc:
        return _fail(f"{exc.message or exc.code} ({exc.code}, HTTP {exc.status})", 1)
    except Refused as exc:
        return _fail(str(exc), 1)
    except (MissingAdminKey, InvalidScope, Usage) as exc:
        return _fail(str(exc), 2)
    except Unreachable as exc:
        return _fail(str(exc), 3)
    except BrokenPipeError:
        # The reader (`| head`) closed the pipe: send the rest nowhere so the exit-time flush stays silent.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _date(value: Any, length: int = 16) -> str:
    """`2026-12-02T07:38:59.853Z` -> `2026-12-02 07:38` (UTC; `length=10`: the day); epoch ms likewise."""
    if isinstance(value, int):
        value = datetime.fromtimestamp(value / 1000, tz=timezone.utc).isoformat()
    if not isinstance(value, str) or "T" not in value:
        return "-" if value is None else str(value)
    return value.replace("T", " ")[:length]


def _details(title: str, record: dict[str, Any]) -> None:
    """One record as a two-column table: amounts in words, times shortened, lists joined."""
    rows = []
    for key, value in record.items():
        if isinstance(value, dict) and "amount" in value:
            text = amount(value)
        elif key.endswith(("_at", "_at_ms")):
            text = _date(value)
        elif isinstance(value, list):
            text = ", ".join(str(v) for v in value) or "-"
        elif isinstance(value, dict):
            text = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        else:
            text = str(value)
        rows.append((key, text))
    print_table(title, ["field", "value"], rows, wrap=1)


def _emit(args: argparse.Namespace, body: Any, human: Callable[[], None]) -> None:
    if args.json:
        print_json(body)
    else:
        human()


# ---- tenants


def tenant_create(args: argparse.Namespace, client: AdminClient) -> None:
    """Create a tenant (an existing id is refused, as for budgets)."""
    body, created = client.create_tenant(args.tenant_id, args.name)
    if not created:
        raise Refused(f"tenant {args.tenant_id} already exists")
    _emit(args, body, lambda: print(f"created tenant {body['tenant_id']} ({body.get('name', '')})"))


def tenant_list(args: argparse.Namespace, client: AdminClient) -> None:
    """List tenants."""
    tenants = client.list_tenants(args.status)
    rows = [(t["tenant_id"], t.get("name", ""), t.get("status", ""), _date(t.get("created_at"))) for t in tenants]
    _emit(args, tenants, lambda: print_table(None, ["tenant", "name", "status", "created (UTC)"], rows, wrap=1))


def tenant_show(args: argparse.Namespace, client: AdminClient) -> None:
    """Show one tenant."""
    body = client.get_tenant(args.tenant_id)
    _emit(args, body, lambda: _details(f"tenant {args.tenant_id}", body))


# ---- API keys


def api_key_create(args: argparse.Namespace, client: AdminClient) -> None:
    """Create an API key; its secret is printed once (--permission, repeatable, grants more than the runtime set)."""
    body = client.create_api_key(args.tenant_id, args.name, args.permission)

    def human() -> None:
        print(f"key_secret: {body['key_secret']}")
        print("  shown once: store it now (the agent's CYCLES_API_KEY)")
        print(f"key_id: {body['key_id']}  tenant: {body['tenant_id']}  expires: {_date(body.get('expires_at'))}")
        print(textwrap.fill(f"permissions: {', '.join(body.get('permissions') or [])}", 80, subsequent_indent="  "))

    _emit(args, body, human)


def api_key_list(args: argparse.Namespace, client: AdminClient) -> None:
    """List API keys (never their secrets)."""
    keys = client.list_api_keys(args.tenant, args.status)
    rows = [
        (
            k["key_id"],
            k["tenant_id"],
            k.get("name", ""),
            k.get("status", ""),
            _date(k.get("expires_at"), 10),
            ", ".join(k.get("permissions") or []),
        )
        for k in keys
    ]
    columns = ["key", "tenant", "name", "status", "expires", "permissions"]
    _emit(args, keys, lambda: print_table(None, columns, rows, wrap=-1))


def api_key_revoke(args: argparse.Namespace, client: AdminClient) -> None:
    """Revoke an API key: it fails authentication from now on (permanent)."""
    body = client.revoke_api_key(args.key_id, args.reason)
    _emit(args, body, lambda: print(f"revoked key {body['key_id']} of tenant {body['tenant_id']}"))


# ---- budgets


def _budget_rows(budgets: Iterable[dict[str, Any]], status: bool) -> tuple[list[str], list[tuple[str, ...]]]:
    budgets = list(budgets)
    debt = any((b.get("debt") or {}).get("amount") for b in budgets)
    columns = ["scope", *(["status"] if status else []), "allocated", "spent", "reserved", "remaining"]
    columns += ["debt"] if debt else []
    rows = []
    for b in budgets:
        row = [b["scope_path"] if "scope_path" in b else b["scope"], *([b.get("status", "")] if status else [])]
        row += [amount(b.get(k)) for k in ("allocated", "spent", "reserved", "remaining")]
        row += [amount(b.get("debt"))] if debt else []
        rows.append(tuple(row))
    return columns, rows


def budget_create(args: argparse.Namespace, client: AdminClient) -> None:
    """Create a budget at a scope (an existing scope and unit is refused)."""
    body = client.create_budget(
        args.scope,
        args.allocated,
        unit=args.unit,
        overdraft_limit=args.overdraft_limit,
        commit_overage_policy=args.commit_overage_policy,
    )
    _emit(args, body, lambda: print(f"created budget {body['scope']}: {amount(body.get('allocated'))} allocated"))


def budget_fund(args: argparse.Namespace, client: AdminClient) -> None:
    """Fund a budget: CREDIT, DEBIT, RESET, REPAY_DEBT or RESET_SPENT."""
    body = client.fund(args.scope, args.operation, args.amount, args.unit)

    def human() -> None:
        print(
            f"{args.operation} {amount({'unit': args.unit, 'amount': args.amount})} on {args.scope}: allocated "
            f"{amount(body.get('previous_allocated'))} -> {amount(body.get('new_allocated'))}, remaining "
            f"{amount(body.get('new_remaining'))}"
        )

    _emit(args, body, human)


def budget_list(args: argparse.Namespace, client: AdminClient) -> None:
    """List a tenant's budgets (--status, --scope prefix)."""
    budgets = [
        b
        for b in client.list_budgets(args.tenant_id)
        if (args.status is None or b.get("status") == args.status)
        and (args.scope is None or b["scope"].startswith(args.scope.lower()))
    ]
    _emit(args, budgets, lambda: print_table(None, *_budget_rows(budgets, status=True)))


def _find_budget(client: AdminClient, scope: str, unit: str) -> dict[str, Any]:
    from otel_cycles.authority.admin_client import scope_tenant

    for b in client.list_budgets(scope_tenant(scope)):
        if b["scope"] == scope.lower() and b["unit"] == unit:
            return b
    raise Refused(f"no {unit} budget at {scope}")


def budget_show(args: argparse.Namespace, client: AdminClient) -> None:
    """Show one budget."""
    body = _find_budget(client, args.scope, args.unit)
    _emit(args, body, lambda: _details(f"budget {body['scope']}", body))


def _set_status(args: argparse.Namespace, client: AdminClient, action: str) -> None:
    body = client.set_budget_status(args.scope, action, args.unit)
    _emit(args, body, lambda: print(f"budget {body['scope']} is now {body['status']}"))


def budget_freeze(args: argparse.Namespace, client: AdminClient) -> None:
    """Freeze a budget: reservations and funding are refused until unfrozen."""
    _set_status(args, client, "freeze")


def budget_unfreeze(args: argparse.Namespace, client: AdminClient) -> None:
    """Unfreeze a frozen budget."""
    _set_status(args, client, "unfreeze")


def budget_close(args: argparse.Namespace, client: AdminClient) -> None:
    """Close a budget for good (an embedded-authority route; the reference closes budgets with their tenant)."""
    _set_status(args, client, "close")


# ---- reservations and balances


def reservation_list(args: argparse.Namespace, client: AdminClient) -> None:
    """List a tenant's reservations, newest first (--status, --scope prefix)."""
    found = [
        r
        for r in client.reservations(args.tenant_id, args.status)
        if args.scope is None or r["scope_path"].startswith(args.scope.lower())
    ]
    rows = [(r["reservation_id"], r["status"], r["scope_path"], amount(r.get("reserved"))) for r in found]
    _emit(args, found, lambda: print_table(None, ["reservation", "status", "scope", "reserved"], rows, wrap=2))


def reservation_show(args: argparse.Namespace, client: AdminClient) -> None:
    """Show one reservation."""
    body = client.get_reservation(args.reservation_id)
    _emit(args, body, lambda: _details(f"reservation {args.reservation_id}", body))


# ---- policies


def policy_create(args: argparse.Namespace, client: AdminClient) -> None:
    """Create a policy for a tenant; allowed decisions on matching scopes carry its caps (ALLOW_WITH_CAPS)."""
    import json

    try:
        caps: Any = json.loads(args.caps) if args.caps else {}
    except ValueError as exc:
        raise Usage(f"--caps is not valid JSON: {exc}") from None
    if not isinstance(caps, dict):
        raise Usage("--caps must be a JSON object")
    for field, value in (
        ("max_tokens", args.max_tokens),
        ("max_steps_remaining", args.max_steps),
        ("cooldown_ms", args.cooldown_ms),
        ("tool_allowlist", args.allow_tool),
        ("tool_denylist", args.deny_tool),
    ):
        if value is not None:
            caps[field] = value
    body: dict[str, Any] = {
        "tenant_id": args.tenant_id,
        "name": args.name or f"{args.scope_pattern} @{args.priority}",
        "scope_pattern": args.scope_pattern,
        "priority": args.priority,
    }
    if caps or args.caps:
        body["caps"] = caps
    for field in ("description", "effective_from", "effective_until"):
        if getattr(args, field):
            body[field] = getattr(args, field)
    _, created = client.request("POST", "/v1/admin/policies", body=body)
    _emit(args, created, lambda: _details(f"policy {created['policy_id']}", created))


def policy_list(args: argparse.Namespace, client: AdminClient) -> None:
    """List a tenant's policies, highest priority first (--status, --scope-pattern)."""
    params = {"tenant_id": args.tenant_id}
    params |= {k: v for k, v in (("status", args.status), ("scope_pattern", args.scope_pattern)) if v}
    found = client.pages("/v1/admin/policies", "policies", params)

    def caps_text(caps: Any) -> str:
        return ", ".join(f"{k}={v}" for k, v in (caps or {}).items()) or "-"

    rows = [(p["name"], p["scope_pattern"], str(p.get("priority", 0)), p.get("status", ""), caps_text(p.get("caps")))
            for p in found]  # fmt: skip
    _emit(args, found, lambda: print_table(None, ["policy", "pattern", "priority", "status", "caps"], rows, wrap=-1))


def balances(args: argparse.Namespace, client: AdminClient) -> None:
    """Show a tenant's balances (with --api-key or $CYCLES_API_KEY read as that tenant, else with the admin key)."""
    api_key = args.api_key or os.environ.get("CYCLES_API_KEY")
    found = client.balances(args.tenant_id, api_key) if api_key else client.list_budgets(args.tenant_id)
    _emit(args, found, lambda: print_table(None, *_budget_rows(found, status=not api_key)))
