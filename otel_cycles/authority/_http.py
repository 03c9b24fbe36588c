"""A lean asyncio HTTP/1.1 server (keep-alive, pipelining-safe) routing the Cycles runtime and admin planes.

Handlers are synchronous: each request is parsed, validated and applied to the SQLite ledger on the event-loop
thread (an operation is ~100 µs), then answered. Every response carries `X-Request-Id` and `X-Cycles-Trace-Id`;
errors use the spec's `ErrorResponse` body (`error`, `message`, `request_id`, optional `details`). The trace id is
sent only as a header, because runcycles 0.5.3's strict `ErrorResponse` rejects a `trace_id` body field.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl, unquote

from otel_cycles.authority import _validation as v
from otel_cycles.authority._admin import hash_secret, ledger_view
from otel_cycles.authority._errors import CyclesProtocolError, invalid
from otel_cycles.authority._listing import list_reservations
from otel_cycles.authority._model import DUMPS
from otel_cycles.authority.ledger import SQLiteLedger, payload_hash

__all__ = ["MAX_BODY_BYTES", "AuthorityApp", "HttpProtocol"]

_log = logging.getLogger("otel_cycles.authority")

MAX_BODY_BYTES = 1 << 20
"""Largest accepted request body; larger ones get 413 and the connection is closed."""
MAX_HEAD_BYTES = 64 << 10
_REASONS = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}
_TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_TRACE_RE = re.compile(r"^[0-9a-f]{32}$")
_ZERO_TRACE = "0" * 32
_RID_MAX = 128
_KEY_CACHE_MAX = 10_000

Handler = Callable[["_Request"], tuple[int, Any]]


class _Request:
    __slots__ = ("body", "headers", "method", "params", "path", "tenant")

    def __init__(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.tenant: str | None = None
        self.params: dict[str, str] = {}
        if query:
            try:
                for k, val in parse_qsl(query, keep_blank_values=True, strict_parsing=False, errors="strict"):
                    self.params.setdefault(k, val)
            except (ValueError, UnicodeDecodeError):
                raise invalid("malformed query string") from None

    def json(self) -> Any:
        if not self.body:
            raise invalid("request body is required")
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise invalid(f"malformed JSON body: {exc}") from None


def _trace_id(headers: dict[str, str]) -> str:
    tp = headers.get("traceparent")
    if tp:
        m = _TRACEPARENT_RE.match(tp.strip())
        if m and m.group(1) != _ZERO_TRACE and m.group(2) != "0" * 16:
            return m.group(1)
    xt = headers.get("x-cycles-trace-id")
    if xt:
        xt = xt.strip()
        if _TRACE_RE.match(xt) and xt != _ZERO_TRACE:
            return xt
    return os.urandom(16).hex()


class AuthorityApp:
    """Routes requests to `SQLiteLedger` operations and renders responses as raw HTTP/1.1 bytes.

    Args:
        ledger: The ledger to serve.
        admin_key: Secret expected in `X-Admin-API-Key` (kept only as a sha256 digest); None disables the admin plane.
    """

    def __init__(self, ledger: SQLiteLedger, admin_key: str | None) -> None:
        self.ledger = ledger
        self._admin_hash = hash_secret(admin_key) if admin_key else None
        self._key_cache: dict[str, str] = {}  # sha256(secret) -> tenant; only touched on the loop thread
        self._date = ("", 0.0)

    # ---- response rendering

    def _http_date(self) -> str:
        t = time.time()
        if t - self._date[1] >= 1.0:
            self._date = (formatdate(t, usegmt=True), t)
        return self._date[0]

    def render(
        self, status: int, body: Any, request_id: str, trace_id: str, extra: list[tuple[str, str]] | None = None
    ) -> bytes:
        """Serialize one response (JSON body, mandatory correlation headers, `Content-Length`)."""
        payload = DUMPS(body).encode()
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
            f"X-Request-Id: {request_id}",
            f"X-Cycles-Trace-Id: {trace_id}",
            f"Date: {self._http_date()}",
        ]
        if extra:
            lines.extend(f"{k}: {val}" for k, val in extra)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload

    def error(self, exc: CyclesProtocolError, request_id: str, trace_id: str, extra: Any = None) -> bytes:
        """Render a spec-shaped error response for `exc`."""
        body: dict[str, Any] = {"error": exc.code, "message": exc.message, "request_id": request_id}
        if exc.details:
            body["details"] = exc.details
        return self.render(exc.status, body, request_id, trace_id, extra)

    # ---- dispatch

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> bytes:
        """Handle one request and return the full HTTP response bytes (never raises)."""
        request_id = "req_" + os.urandom(12).hex()
        trace_id = _trace_id(headers)
        extra: list[tuple[str, str]] = []
        try:
            path, _, query = target.partition("?")
            req = _Request(method, path, query, headers, body)
            handler, allowed = self._route(path, method)
            if handler is None:
                if allowed:
                    extra.append(("Allow", ", ".join(allowed)))
                    raise CyclesProtocolError(405, "INVALID_REQUEST", f"Method {method} not allowed on {path}")
                raise CyclesProtocolError(404, "NOT_FOUND", f"No route for {path}")
            status, out = handler(req)
            if req.tenant is not None:
                extra.append(("X-Cycles-Tenant", req.tenant))
            return self.render(status, out, request_id, trace_id, extra)
        except CyclesProtocolError as exc:
            return self.error(exc, request_id, trace_id, extra)
        except Exception:  # the boundary: an unexpected failure is a 500, never a dropped connection
            _log.exception("authority: internal error handling %s %s", method, target[:200])
            err = CyclesProtocolError(500, "INTERNAL_ERROR", "Internal error")
            return self.error(err, request_id, trace_id)

    def _route(self, path: str, method: str) -> tuple[Handler | None, list[str]]:
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
        if rest == ["api-keys"]:
            return {"POST": self._admin_create_key}
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

    # ---- auth helpers

    def _is_admin(self, req: _Request) -> bool:
        key = req.headers.get("x-admin-api-key")
        return (
            bool(key) and self._admin_hash is not None and hmac.compare_digest(hash_secret(key or ""), self._admin_hash)
        )

    def _require_admin(self, req: _Request) -> None:
        if not self._is_admin(req):
            raise CyclesProtocolError(401, "UNAUTHORIZED", "Missing or invalid X-Admin-API-Key")

    def _tenant(self, req: _Request, admin_ok: bool = False) -> str | None:
        """Return the effective tenant for the API key, or None for an admin caller when `admin_ok`."""
        key = req.headers.get("x-cycles-api-key")
        if not key:
            if admin_ok and self._is_admin(req):
                return None
            raise CyclesProtocolError(401, "UNAUTHORIZED", "Missing X-Cycles-API-Key")
        digest = hash_secret(key)
        tenant = self._key_cache.get(digest)
        if tenant is None:
            tenant = self.ledger.authenticate(key)
            if tenant is None:
                raise CyclesProtocolError(401, "UNAUTHORIZED", "Invalid API key")
            if len(self._key_cache) >= _KEY_CACHE_MAX:
                self._key_cache.clear()
            self._key_cache[digest] = tenant
        req.tenant = tenant
        return tenant

    def _authed(self, req: _Request) -> str:
        tenant = self._tenant(req)
        assert tenant is not None
        return tenant

    @staticmethod
    def _check_header_key(req: _Request, parsed: dict[str, Any]) -> None:
        header = req.headers.get("x-idempotency-key")
        if header is not None and header != parsed["idempotency_key"]:
            raise invalid("X-Idempotency-Key header does not match body idempotency_key")

    @staticmethod
    def _check_subject_tenant(tenant: str, subject: dict[str, Any]) -> None:
        if "tenant" in subject and subject["tenant"] != tenant:
            raise CyclesProtocolError(403, "FORBIDDEN", "subject.tenant does not match the API key's tenant")

    @staticmethod
    def _rid(req: _Request) -> str:
        rid = unquote(req.path.split("/")[3])
        if not 1 <= len(rid) <= _RID_MAX:
            raise invalid("reservation_id must be 1-128 characters")
        return rid

    # ---- runtime plane

    def _reserve(self, req: _Request) -> tuple[int, Any]:
        tenant = self._authed(req)
        raw = req.json()
        parsed = v.parse_reserve(raw)
        self._check_header_key(req, parsed)
        self._check_subject_tenant(tenant, parsed["subject"])
        return 200, self.ledger.reserve(tenant, parsed, payload_hash(raw))

    def _decide(self, req: _Request) -> tuple[int, Any]:
        tenant = self._authed(req)
        raw = req.json()
        parsed = v.parse_decide(raw)
        self._check_header_key(req, parsed)
        self._check_subject_tenant(tenant, parsed["subject"])
        return 200, self.ledger.decide(tenant, parsed, payload_hash(raw))

    def _event(self, req: _Request) -> tuple[int, Any]:
        tenant = self._authed(req)
        raw = req.json()
        parsed = v.parse_event(raw)
        self._check_header_key(req, parsed)
        self._check_subject_tenant(tenant, parsed["subject"])
        return 201, self.ledger.create_event(tenant, parsed, payload_hash(raw))

    def _commit(self, req: _Request) -> tuple[int, Any]:
        tenant = self._authed(req)
        rid = self._rid(req)
        raw = req.json()
        parsed = v.parse_commit(raw)
        self._check_header_key(req, parsed)
        return 200, self.ledger.commit(tenant, rid, parsed, payload_hash(raw))

    def _release(self, req: _Request) -> tuple[int, Any]:
        tenant = self._tenant(req, admin_ok=True)
        rid = self._rid(req)
        raw = req.json()
        parsed = v.parse_release(raw)
        self._check_header_key(req, parsed)
        return 200, self.ledger.release(tenant, rid, parsed, payload_hash(raw))

    def _extend(self, req: _Request) -> tuple[int, Any]:
        tenant = self._authed(req)
        rid = self._rid(req)
        raw = req.json()
        parsed = v.parse_extend(raw)
        self._check_header_key(req, parsed)
        return 200, self.ledger.extend(tenant, rid, parsed, payload_hash(raw))

    def _get_reservation(self, req: _Request) -> tuple[int, Any]:
        tenant = self._tenant(req, admin_ok=True)
        return 200, self.ledger.get_reservation(tenant, self._rid(req))

    def _list(self, req: _Request) -> tuple[int, Any]:
        tenant = self._tenant(req, admin_ok=True)
        wanted = req.params.get("tenant")
        if tenant is None:
            if not wanted:
                raise invalid("tenant query parameter is required when using admin key authentication")
            tenant = wanted
        elif wanted and wanted != tenant:
            raise CyclesProtocolError(403, "FORBIDDEN", "tenant filter does not match the API key's tenant")
        return 200, list_reservations(self.ledger, tenant, req.params)

    def _balances(self, req: _Request) -> tuple[int, Any]:
        tenant = self._authed(req)
        params = req.params
        filters = {level: params[level] for level in v.SUBJECT_LEVELS[1:] if params.get(level)}
        wanted = params.get("tenant")
        if not filters and not wanted:
            raise invalid("at least one subject filter (tenant, workspace, app, workflow, agent, toolset) is required")
        if wanted and wanted != tenant:
            raise CyclesProtocolError(403, "FORBIDDEN", "tenant filter does not match the API key's tenant")
        limit = _int_param(params, "limit", 50, 1, 200)
        page, cursor = self.ledger.list_budgets(tenant, filters, limit, params.get("cursor") or None)
        out: dict[str, Any] = {"balances": [b.balance() for b in page], "has_more": cursor is not None}
        if cursor is not None:
            out["next_cursor"] = cursor
        return 200, out

    # ---- admin plane

    def _admin_create_tenant(self, req: _Request) -> tuple[int, Any]:
        self._require_admin(req)
        body, created = self.ledger.create_tenant(_obj(req.json()))
        return (201 if created else 200), body

    def _admin_list_tenants(self, req: _Request) -> tuple[int, Any]:
        self._require_admin(req)
        return 200, {"tenants": self.ledger.list_tenants(), "has_more": False}

    def _admin_get_tenant(self, req: _Request) -> tuple[int, Any]:
        self._require_admin(req)
        return 200, self.ledger.get_tenant(unquote(req.path.split("/")[4]))

    def _admin_patch_tenant(self, req: _Request) -> tuple[int, Any]:
        self._require_admin(req)
        body = _obj(req.json())
        if set(body) - {"status", "name", "metadata"} or "status" not in body:
            raise invalid("only status can be updated here")
        return 200, self.ledger.set_tenant_status(unquote(req.path.split("/")[4]), body["status"])

    def _admin_create_key(self, req: _Request) -> tuple[int, Any]:
        self._require_admin(req)
        return 201, self.ledger.create_api_key(_obj(req.json()))

    def _budget_tenant(self, req: _Request, explicit: str | None) -> str | None:
        """Dual auth: a tenant API key scopes to its tenant; the admin key accepts an explicit `tenant_id`."""
        if req.headers.get("x-cycles-api-key"):
            return self._tenant(req)
        self._require_admin(req)
        return explicit

    def _admin_create_budget(self, req: _Request) -> tuple[int, Any]:
        body = _obj(req.json())
        tenant = self._budget_tenant(req, body.get("tenant_id") if isinstance(body.get("tenant_id"), str) else None)
        return 201, self.ledger.create_budget(body, tenant)

    def _scope_unit(self, req: _Request) -> tuple[str, str]:
        scope, unit = req.params.get("scope"), req.params.get("unit")
        if not scope or not unit:
            raise invalid("scope and unit query parameters are required")
        if unit not in v.UNITS:
            raise invalid("unit is not a UnitEnum value")
        return scope, unit

    def _admin_fund(self, req: _Request) -> tuple[int, Any]:
        tenant = self._budget_tenant(req, req.params.get("tenant_id"))
        scope, unit = self._scope_unit(req)
        return 200, self.ledger.fund(scope, unit, _obj(req.json()), tenant)

    def _admin_budget_status(self, req: _Request, status: str) -> tuple[int, Any]:
        self._require_admin(req)
        scope, unit = self._scope_unit(req)
        if req.body:
            _obj(req.json())
        return 200, self.ledger.set_budget_status(scope, unit, status)

    def _admin_patch_budget(self, req: _Request) -> tuple[int, Any]:
        self._require_admin(req)
        scope, unit = self._scope_unit(req)
        return 200, self.ledger.update_budget(scope, unit, _obj(req.json()))

    def _admin_list_budgets(self, req: _Request) -> tuple[int, Any]:
        tenant = self._budget_tenant(req, req.params.get("tenant_id"))
        if tenant is None:
            raise invalid("tenant_id query parameter is required when using admin key authentication")
        filters = {level: req.params[level] for level in v.SUBJECT_LEVELS[1:] if req.params.get(level)}
        limit = _int_param(req.params, "limit", 50, 1, 200)
        page, cursor = self.ledger.list_budgets(tenant, filters, limit, req.params.get("cursor") or None)
        out: dict[str, Any] = {"ledgers": [ledger_view(b) for b in page], "has_more": cursor is not None}
        if cursor is not None:
            out["next_cursor"] = cursor
        return 200, out


def _obj(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid("request body must be a JSON object")
    return value


def _int_param(params: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(f"{name} must be an integer between {lo} and {hi}") from None
    if not lo <= value <= hi:
        raise invalid(f"{name} must be an integer between {lo} and {hi}")
    return value


class HttpProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection: minimal request parser, keep-alive, in-order (pipelined) responses."""

    def __init__(self, app: AuthorityApp, connections: set[HttpProtocol]) -> None:
        self._app = app
        self._connections = connections
        self._buf = bytearray()
        self._head: tuple[str, str, dict[str, str], int, bool] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self.transport = None

    def _reject(self, status: int, message: str) -> None:
        transport = self.transport
        if transport is None:
            return
        err = CyclesProtocolError(status, "INVALID_REQUEST", message)
        transport.write(
            self._app.error(err, "req_" + os.urandom(12).hex(), os.urandom(16).hex(), [("Connection", "close")])
        )
        transport.close()
        self._buf.clear()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while self.transport is not None:
            if self._head is None:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD_BYTES:
                        self._reject(431, "request head too large")
                    return
                if end > MAX_HEAD_BYTES:
                    self._reject(431, "request head too large")
                    return
                head = bytes(buf[:end]).decode("latin-1")
                del buf[: end + 4]
                if not self._parse_head(head):
                    return
            assert self._head is not None
            method, target, headers, length, keep_alive = self._head
            if len(buf) < length:
                return
            body = bytes(buf[:length])
            del buf[:length]
            self._head = None
            response = self._app.handle(method, target, headers, body)
            if not keep_alive:
                self.transport.write(response)
                self.transport.close()
                return
            self.transport.write(response)

    def _parse_head(self, head: str) -> bool:
        lines = head.split("\r\n")
        request_line = lines[0].split(" ")
        if len(request_line) != 3 or not request_line[2].startswith("HTTP/1."):
            self._reject(400, "malformed request line")
            return False
        method, target, version = request_line
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                self._reject(400, "malformed header line")
                return False
            headers[name.strip().lower()] = value.strip()
        if "transfer-encoding" in headers:
            self._reject(411, "chunked request bodies are not supported; send Content-Length")
            return False
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            self._reject(400, "invalid Content-Length")
            return False
        if length < 0:
            self._reject(400, "invalid Content-Length")
            return False
        if length > MAX_BODY_BYTES:
            self._reject(413, f"request body exceeds {MAX_BODY_BYTES} bytes")
            return False
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        if headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._head = (method, target, headers, length, keep_alive)
        return True
