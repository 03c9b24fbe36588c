"""HTTP requests and responses as the authority's handlers see them: parsed requests, query helpers, rendering.

Every response carries `X-Request-Id` and `X-Cycles-Trace-Id`; errors use the spec's `ErrorResponse` body (`error`,
`message`, `request_id`, optional `details`). The trace id is sent only as a header, because runcycles 0.5.3's strict
`ErrorResponse` rejects a `trace_id` body field.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from otel_cycles.authority._errors import CyclesProtocolError, invalid
from otel_cycles.authority._model import DUMPS, Budget
from otel_cycles.authority._validation import SUBJECT_LEVELS

if TYPE_CHECKING:
    from otel_cycles.authority.ledger import SQLiteLedger

__all__ = [
    "MAX_JSON_DEPTH",
    "Request",
    "ResponseWriter",
    "body_object",
    "budget_page",
    "int_param",
    "new_request_id",
    "subject_filters",
    "trace_id",
]

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
MAX_JSON_DEPTH = 64
"""Deepest accepted nesting of a JSON request body (objects and arrays); deeper bodies get 400."""
_TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_TRACE_RE = re.compile(r"^[0-9a-f]{32}$")
_ZERO_TRACE = "0" * 32


class Request:
    """One request: method, path, single-valued query `params`, lowercased `headers`, raw body."""

    __slots__ = ("body", "headers", "method", "params", "path", "tenant")

    def __init__(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.tenant: str | None = None
        """The authenticated tenant, set by the auth helpers and echoed as `X-Cycles-Tenant`."""
        self.params: dict[str, str] = {}
        if query:
            try:
                for k, val in parse_qsl(query, keep_blank_values=True, strict_parsing=False, errors="strict"):
                    self.params.setdefault(k, val)
            except (ValueError, UnicodeDecodeError):
                raise invalid("malformed query string") from None

    def json(self) -> Any:
        """Decode the body as JSON; 400 when it is missing, malformed, nested deeper than `MAX_JSON_DEPTH`, or
        holds what JSON cannot round-trip (`NaN`/`Infinity`, unpaired UTF-16 surrogates)."""
        body = self.body
        if not body:
            raise invalid("request body is required")
        try:
            value = json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
        except RecursionError:
            raise invalid(f"malformed JSON body: nested deeper than {MAX_JSON_DEPTH} levels") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise invalid(f"malformed JSON body: {exc}") from None
        # Cheap byte counts first: only a body with many containers is walked for its depth.
        if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and _depth_exceeds(value, MAX_JSON_DEPTH):
            raise invalid(f"malformed JSON body: nested deeper than {MAX_JSON_DEPTH} levels")
        if b"\\u" in body:
            try:  # a lone surrogate decodes fine but cannot be stored or echoed as UTF-8
                DUMPS(value).encode()
            except UnicodeEncodeError:
                raise invalid("malformed JSON body: unpaired UTF-16 surrogate in a string") from None
        return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):  # 1e400 overflows to infinity, which JSON cannot carry back out
        raise ValueError(f"number {text[:32]} is out of range")
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def new_request_id() -> str:
    """Return a fresh `X-Request-Id` value."""
    return "req_" + os.urandom(12).hex()


def trace_id(headers: dict[str, str]) -> str:
    """Return the trace id from `traceparent`, else `X-Cycles-Trace-Id`, else a new random one."""
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


def body_object(value: Any) -> dict[str, Any]:
    """Return a decoded body that must be a JSON object; 400 otherwise."""
    if not isinstance(value, dict):
        raise invalid("request body must be a JSON object")
    return value


def int_param(params: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    """Parse integer query parameter `name` in `[lo, hi]`; absent or blank gives `default`."""
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


def subject_filters(params: dict[str, str]) -> dict[str, str]:
    """Return the non-blank below-tenant subject levels (workspace … toolset) among the query `params`."""
    return {level: params[level] for level in SUBJECT_LEVELS[1:] if params.get(level)}


def budget_page(
    ledger: SQLiteLedger,
    tenant: str,
    filters: dict[str, str],
    params: dict[str, str],
    field: str,
    view: Callable[[Budget], dict[str, Any]],
) -> dict[str, Any]:
    """Return one page of `tenant`'s budgets as `{field: [view(b)...], has_more, next_cursor?}` (`limit`, `cursor`)."""
    limit = int_param(params, "limit", 50, 1, 200)
    page, cursor = ledger.list_budgets(tenant, filters, limit, params.get("cursor") or None)
    out: dict[str, Any] = {field: [view(b) for b in page], "has_more": cursor is not None}
    if cursor is not None:
        out["next_cursor"] = cursor
    return out


class ResponseWriter:
    """Renders responses as raw HTTP/1.1 bytes (JSON body, correlation headers, a `Date` refreshed each second)."""

    def __init__(self) -> None:
        self._date = ("", 0.0)

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
