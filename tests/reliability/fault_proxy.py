"""A fault-injecting HTTP proxy on loopback, placed between a runcycles client and the embedded authority.

Each request is matched against the proxy's `rules` (first match wins; a rule may apply a limited number of times;
a path matches as a substring, or exactly when it ends with `$`):

* `delay`: wait before forwarding (the authority still sees the request: a slow network or server);
* `status`: answer with this status, body and headers without forwarding (5xx, 429 + Retry-After);
* `after`: forward, then drop the connection (`drop`), cut the body short (`truncate`), add keys or nulls to the
  JSON body (`mutate`), or change the status code (`rewrite_status`): the authority *did* apply the operation;
* `hold`: never forward and never answer until `release_held()` (a request the process never got to send).

Every request is logged (`log`) with its arrival time, so tests can check retry spacing and idempotency keys.
Only ever binds 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class Rule:
    """One fault. `method`/`path` select requests (`path` matches as a substring); `times` limits uses (None: all)."""

    path: str = ""
    method: str | None = None
    times: int | None = None
    delay_s: float = 0.0
    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    after: str | None = None
    """`drop`, `truncate`, `mutate` or `rewrite_status` (applied to the forwarded response)."""
    mutate: Callable[[Any], Any] | None = None
    rewrite_status: int | None = None
    hold: bool = False
    first_per_path: bool = False
    """Apply only to the first request for each distinct path (e.g. the first attempt of every commit)."""
    used: int = 0
    seen: set[str] = field(default_factory=set)

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.used >= self.times:
            return False
        if not ((self.method is None or self.method == method) and _path_matches(self.path, path)):
            return False
        if self.first_per_path:
            if path in self.seen:
                return False
            self.seen.add(path)
        return True


@dataclass
class Logged:
    at: float
    method: str
    path: str
    idempotency_key: str | None
    fault: str


class FaultProxy:
    """Forwards to `upstream` (a base URL) unless a rule says otherwise. Use as a context manager."""

    def __init__(self, upstream: str, port: int = 0) -> None:
        self.upstream = upstream
        self.rules: list[Rule] = []
        self.log: list[Logged] = []
        self._lock = threading.Lock()
        self._held = threading.Event()
        self._http = httpx.Client(timeout=30)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                proxy._serve(self)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._held.set()
        self._server.shutdown()
        self._server.server_close()
        self._http.close()

    def add(self, **kwargs: Any) -> Rule:
        rule = Rule(**kwargs)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def release_held(self) -> None:
        """Let held requests go: they are closed without ever reaching the authority."""
        self._held.set()

    def requests(self, path: str = "", method: str | None = None) -> list[Logged]:
        with self._lock:
            return [e for e in self.log if _path_matches(path, e.path) and (method is None or e.method == method)]

    def _pick(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path):
                    rule.used += 1
                    return rule
        return None

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        method, path = handler.command, handler.path
        rule = self._pick(method, path)
        fault = "none" if rule is None else (rule.after or ("hold" if rule.hold else None) or str(rule.status or ""))
        fault = fault or ("delay" if rule is not None and rule.delay_s else "none")
        with self._lock:
            self.log.append(Logged(time.monotonic(), method, path, handler.headers.get("X-Idempotency-Key"), fault))
        if rule is not None and rule.hold:
            self._held.wait(timeout=120)
            _drop(handler)
            return
        if rule is not None and rule.delay_s:
            time.sleep(rule.delay_s)
        if rule is not None and rule.status is not None:
            payload = (
                b""
                if rule.body is None
                else (rule.body if isinstance(rule.body, bytes) else json.dumps(rule.body).encode())
            )
            _respond(handler, rule.status, payload, {"Content-Type": "application/json", **rule.headers})
            return
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP}
        try:
            upstream = self._http.request(method, self.upstream + path, content=body, headers=headers)
        except httpx.HTTPError:
            _respond(handler, 502, b'{"error":"INTERNAL_ERROR","message":"upstream unreachable"}', {})
            return
        status, payload = upstream.status_code, upstream.content
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
        if rule is not None and rule.after == "drop":
            _drop(handler)
            return
        if rule is not None and rule.after == "truncate":
            _respond(handler, status, payload, out_headers, truncate=True)
            return
        if rule is not None and rule.after == "mutate" and rule.mutate is not None:
            payload = json.dumps(rule.mutate(json.loads(payload))).encode()
        if rule is not None and rule.after == "rewrite_status" and rule.rewrite_status is not None:
            status = rule.rewrite_status
        _respond(handler, status, payload, out_headers)


def _path_matches(pattern: str, path: str) -> bool:
    """A substring match; a trailing `$` asks for the exact path (query string ignored)."""
    if pattern.endswith("$"):
        return path.split("?")[0] == pattern[:-1]
    return pattern in path


def _respond(
    handler: BaseHTTPRequestHandler, status: int, payload: bytes, headers: dict[str, str], truncate: bool = False
) -> None:
    handler.send_response(status)
    for key, value in headers.items():
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(payload)))
    if truncate:
        handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(payload[: len(payload) // 2] if truncate else payload)
    handler.wfile.flush()
    if truncate:
        _drop(handler)


def _drop(handler: BaseHTTPRequestHandler) -> None:
    handler.close_connection = True
    try:
        handler.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
