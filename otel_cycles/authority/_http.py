"""The authority's HTTP application: one request in, one full HTTP/1.1 response out, routed to its handler.

Handlers are synchronous: each request is parsed, validated and applied to the SQLite ledger on the event-loop
thread (an operation is ~100 µs), then answered. The runtime-plane handlers live in `_http_runtime`, the admin
plane's in `_http_admin`; `_http_protocol` frames the bytes of a connection into the calls to `handle`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from otel_cycles.authority._errors import CyclesProtocolError
from otel_cycles.authority._http_admin import AdminHandlers
from otel_cycles.authority._http_messages import Request, ResponseWriter, new_request_id, trace_id
from otel_cycles.authority._http_runtime import RuntimeHandlers
from otel_cycles.authority.ledger import SQLiteLedger

__all__ = ["LIVENESS_PATH", "AuthorityApp"]

_log = logging.getLogger("otel_cycles.authority")

Handler = Callable[[Request], tuple[int, Any]]

LIVENESS_PATH = "/actuator/health/liveness"
"""The reference server's liveness probe (Spring Boot actuator): no authentication, `{"status": "UP"}`."""


def _liveness(req: Request) -> tuple[int, Any]:
    return 200, {"status": "UP"}


class AuthorityApp(RuntimeHandlers, AdminHandlers):
    """Routes requests to `SQLiteLedger` operations and renders responses as raw HTTP/1.1 bytes.

    Args:
        ledger: The ledger to serve.
        admin_key: Secret expected in `X-Admin-API-Key` (kept only as a sha256 digest); None disables the admin plane.
    """

    def __init__(self, ledger: SQLiteLedger, admin_key: str | None) -> None:
        super().__init__(ledger, admin_key)
        self.responses = ResponseWriter()

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> bytes:
        """Handle one request and return the full HTTP response bytes (never raises)."""
        request_id = new_request_id()
        trace = trace_id(headers)
        extra: list[tuple[str, str]] = []
        req: Request | None = None
        try:
            path, _, query = target.partition("?")
            req = Request(method, path, query, headers, body)
            handler, allowed = self._route(path, method)
            if handler is None:
                if allowed:
                    extra.append(("Allow", ", ".join(allowed)))
                    raise CyclesProtocolError(405, "INVALID_REQUEST", f"Method {method} not allowed on {path}")
                raise CyclesProtocolError(404, "NOT_FOUND", f"No route for {path}")
            status, out = handler(req)
            if req.tenant is not None:
                extra.append(("X-Cycles-Tenant", req.tenant))
            return self.responses.render(status, out, request_id, trace, extra)
        except CyclesProtocolError as exc:
            if req is not None and req.tenant is not None:  # authenticated, then refused: say as whom
                extra.append(("X-Cycles-Tenant", req.tenant))
            return self.responses.error(exc, request_id, trace, extra)
        except Exception:  # the boundary: an unexpected failure is a 500, never a dropped connection
            _log.exception("authority: internal error handling %s %s", method, target[:200])
            err = CyclesProtocolError(500, "INTERNAL_ERROR", "Internal error")
            return self.responses.error(err, request_id, trace)

    def _route(self, path: str, method: str) -> tuple[Handler | None, list[str]]:
        if path == LIVENESS_PATH:
            return ({"GET": _liveness}.get(method), ["GET"])
        parts = path.split("/")
        # parts[0] is "" for an absolute path; expect "", "v1", ...
        if len(parts) < 3 or parts[0] or parts[1] != "v1":
            return None, []
        rest = parts[2:]
        table: dict[str, Handler]
        if rest[0] == "reservations":
            if len(rest) == 1:
                table = {"POST": self._reserve, "GET": self._list}
            elif len(rest) == 2:
                table = {"GET": self._get_reservation}
            elif len(rest) == 3 and rest[2] in ("commit", "release", "extend"):
                table = {"POST": {"commit": self._commit, "release": self._release, "extend": self._extend}[rest[2]]}
            else:
                return None, []
        elif len(rest) == 1 and rest[0] in ("decide", "events", "balances"):
            table = {"decide": {"POST": self._decide}, "events": {"POST": self._event}}.get(
                rest[0], {"GET": self._balances}
            )
        elif rest == ["auth", "introspect"]:
            table = {"GET": self._introspect}
        elif rest[0] == "admin" and len(rest) >= 2:
            table = self._admin_table(rest[1:])
        else:
            return None, []
        if not table:
            return None, []
        handler = table.get(method)
        return handler, sorted(table)

    def _admin_table(self, rest: list[str]) -> dict[str, Handler]:
        if rest == ["tenants"]:
            return {"POST": self._admin_create_tenant, "GET": self._admin_list_tenants}
        if len(rest) == 2 and rest[0] == "tenants":
            return {"GET": self._admin_get_tenant, "PATCH": self._admin_patch_tenant}
        if rest == ["policies"]:
            return {"POST": self._admin_create_policy, "GET": self._admin_list_policies}
        if len(rest) == 2 and rest[0] == "policies":
            return {"GET": self._admin_get_policy, "PATCH": self._admin_patch_policy}
        if rest == ["api-keys"]:
            return {"POST": self._admin_create_key, "GET": self._admin_list_keys}
        if len(rest) == 2 and rest[0] == "api-keys":
            return {"DELETE": self._admin_revoke_key}
        if rest == ["budgets"]:
            return {
                "POST": self._admin_create_budget,
                "GET": self._admin_list_budgets,
                "PATCH": self._admin_patch_budget,
            }
        if len(rest) == 2 and rest[0] == "budgets" and rest[1] in ("fund", "freeze", "unfreeze", "close"):
            op = rest[1]
            if op == "fund":
                return {"POST": self._admin_fund}
            status = {"freeze": "FROZEN", "unfreeze": "ACTIVE", "close": "CLOSED"}[op]
            return {"POST": lambda req: self._admin_budget_status(req, status)}
        return {}
