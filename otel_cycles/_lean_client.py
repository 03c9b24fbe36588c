"""A `CyclesClient` that sends its requests over its own small HTTP/1.1 keep-alive connections instead of httpx.

On the governance path every LLM call and tool call costs a reservation, a commit and often a lookahead, and on a
busy agent process the CPU of each request is on the critical path. runcycles' httpx-based client spends several
times the CPU per loopback request of this one, and even `http.client` spends markedly more (BENCHMARKS.md,
"Governed-span throughput", one reservation through each, side by side): it builds the request one header at a time
and parses the answer's headers through the `email` package. Here a request is one prepared byte string in one write
and the answer is read line by line. runcycles stays the protocol layer (same methods, same `CyclesResponse`
objects, same error classification downstream); this subclass replaces only `_post` / `_get`.

The HTTP it speaks is what a Cycles authority answers with: a status line and headers, then a body framed by
`Content-Length`, by chunked transfer coding (what servlet containers use for a body of unknown length) or by the
server closing the connection; interim 1xx answers are skipped; TLS through `ssl.create_default_context()`, as
`http.client` does. Anything else (a malformed or cut-short answer, an oversized line) is a transport error, as a
network failure is.

One connection per thread (the hooks run on executor threads and the settlement worker has its own), plus a small
pool for requests sent now and read later (`start_post`, the lookaheads: `Exchange`). A request that
fails on a reused keep-alive connection (the server closed it while idle) is sent once more on a fresh one: every POST
of the Cycles protocol carries an idempotency key, so a replay cannot double-spend.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import ssl
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from pydantic import BaseModel
from runcycles import CyclesClient
from runcycles.client import _RESPONSE_HEADERS, _serialize_body
from runcycles.response import CyclesResponse

__all__ = ["Exchange", "LeanCyclesClient", "lean_client"]

logger = logging.getLogger(__name__)

_API_KEY_HEADER = "X-Cycles-API-Key"
_IDEMPOTENCY_KEY_HEADER = "X-Idempotency-Key"
_MAX_LINE = 65_536
_MAX_HEADERS = 100
_MAX_BODY = 64 * 1024 * 1024
"""Larger than any answer of the protocol (list endpoints are paginated); a length past it is a broken answer, not a
buffer to allocate."""
_MAX_SPARE = 32
"""Idle connections kept for `start_post` (one is in use per request sent and not yet read)."""
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
"""Control characters: in a header value or a request target they would split the request (header injection)."""


class _BadResponse(Exception):
    """The authority's answer is not HTTP/1.x this client can read: a transport error, like a dropped connection."""


@dataclass(frozen=True)
class _Response:
    status: int
    reason: str
    headers: dict[str, str]
    """Lower-case names; a repeated header's values joined with ", "."""
    body: bytes
    will_close: bool


class _Connection:
    """One keep-alive HTTP/1.1 connection: a request is one write, its answer is read from a buffered reader."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None, timeout: float) -> None:
        sock = socket.create_connection((host, port), timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._reader = sock.makefile("rb")
        self._timeout = timeout

    def close(self) -> None:
        self._reader.close()
        self._sock.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    def exchange(self, request: bytes, timeout: float) -> _Response:
        self.send(request, timeout)
        return self.receive()

    def send(self, request: bytes, timeout: float) -> None:
        if timeout != self._timeout:
            self._sock.settimeout(timeout)
            self._timeout = timeout
        self._sock.sendall(request)

    def receive(self) -> _Response:
        while True:
            version, status, reason = self._status_line()
            headers = self._headers()
            if not 100 <= status < 200:
                break  # else an interim answer (100 Continue, 103 Early Hints): the final one follows
        connection = headers.get("connection", "").lower()
        will_close = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
        if status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._chunked()
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise _BadResponse(f"bad Content-Length {headers['content-length']!r}") from None
            body = self._exactly(length)
        else:  # framed by the close of the connection
            body = self._reader.read(_MAX_BODY + 1)
            if len(body) > _MAX_BODY:
                raise _BadResponse(f"response body over {_MAX_BODY} bytes")
            will_close = True
        return _Response(status, reason, headers, body, will_close)

    def _line(self) -> bytes:
        line = self._reader.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise _BadResponse("response line too long")
        return line

    def _status_line(self) -> tuple[str, int, str]:
        line = self._line()
        if not line:
            raise _BadResponse("connection closed before an answer")
        parts = line.decode("iso-8859-1").split(None, 2)
        try:
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or len(parts[1]) != 3:
                raise ValueError
            status = int(parts[1])
        except ValueError:
            raise _BadResponse(f"bad status line {line[:80]!r}") from None
        return parts[0], status, parts[2].strip() if len(parts) > 2 else ""

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            line = self._line()
            if line in (b"\r\n", b"\n"):
                return headers
            if not line:
                raise _BadResponse("connection closed in the response headers")
            name, colon, value = line.decode("iso-8859-1").partition(":")
            if colon:
                name, value = name.strip().lower(), value.strip()
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
        raise _BadResponse(f"more than {_MAX_HEADERS} response headers")

    def _exactly(self, n: int) -> bytes:
        if not 0 <= n <= _MAX_BODY:
            raise _BadResponse(f"bad body or chunk length {n}")
        data = self._reader.read(n)
        if len(data) < n:
            raise _BadResponse(f"response body cut short ({len(data)} of {n} bytes)")
        return data

    def _chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self._line()
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadResponse(f"bad chunk size {line[:80]!r}") from None
            if size == 0:
                while self._line() not in (b"\r\n", b"\n", b""):  # trailer fields, unused
                    pass
                return b"".join(chunks)
            chunks.append(self._exactly(size))
            total += size
            if total > _MAX_BODY:
                raise _BadResponse(f"response body over {_MAX_BODY} bytes")
            if self._line() not in (b"\r\n", b"\n"):
                raise _BadResponse("chunk not followed by CRLF")


class LeanCyclesClient(CyclesClient):
    """A CyclesClient with the same config whose requests bypass httpx (see the module docstring)."""

    def __init__(self, client: CyclesClient) -> None:
        super().__init__(client._config)
        parts = urlsplit(self._config.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported Cycles base URL {self._config.base_url!r}")
        self._tls = ssl.create_default_context() if parts.scheme == "https" else None
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        self._prefix = parts.path.rstrip("/")
        host = f"[{self._host}]" if ":" in self._host else self._host
        fixed = {"Host": f"{host}:{self._port}", _API_KEY_HEADER: self._config.api_key, "Accept": "application/json"}
        if any(_UNSAFE.search(str(value)) for value in fixed.values()):
            raise ValueError("control character in the Cycles base URL or API key")
        self._fixed_headers = "".join(f"{name}: {value}\r\n" for name, value in fixed.items())
        self._local = threading.local()
        self._spare: list[_Connection] = []
        """Idle connections of exchanges started with `start_post`, whose answers have been read."""
        self._spare_lock = threading.Lock()
        self._spare_pid = os.getpid()

    def _drop_connection(self) -> None:
        connection: _Connection | None = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            connection.close()

    def post_bounded(self, path: str, body: dict[str, Any], timeout_s: float) -> CyclesResponse:
        """`_post`, with each socket operation of this request bounded by `timeout_s` (the reserve deadline)."""
        with self.bounded(timeout_s):
            return self._post(path, body)

    @contextmanager
    def bounded(self, timeout_s: float) -> Iterator[None]:
        """Bound each socket operation of the requests this thread makes meanwhile by `timeout_s`."""
        self._local.timeout = timeout_s
        try:
            yield
        finally:
            self._local.timeout = None

    def _prepare(self, method: str, target: str, extra_headers: dict[str, str], body: bytes) -> bytes | None:
        """The request's bytes; None if a header value or the target holds a control character."""
        if " " in target or _UNSAFE.search(target) or any(_UNSAFE.search(v) for v in extra_headers.values()):
            return None
        if method == "POST":
            extra_headers = {**extra_headers, "Content-Length": str(len(body))}
        head = "".join(f"{name}: {value}\r\n" for name, value in extra_headers.items())
        return f"{method} {target} HTTP/1.1\r\n{self._fixed_headers}{head}\r\n".encode() + body

    def _post_request(self, path: str, body: BaseModel | dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
        data = _serialize_body(body)
        headers = {"Content-Type": "application/json"}
        key = data.get("idempotency_key")
        if key:
            headers[_IDEMPOTENCY_KEY_HEADER] = str(key)
        return self._prefix + path, headers, json.dumps(data).encode()

    def start_post(self, path: str, body: dict[str, Any], timeout_s: float) -> Exchange | None:
        """Send a POST now and return the exchange whose `response()` reads its answer later, on any thread; None
        if it could not be sent (the caller then makes the request the usual way, which reports the error)."""
        target, headers, payload = self._post_request(path, body)
        request = self._prepare("POST", target, headers, payload)
        if request is None:
            return None
        for _attempt in range(2):
            with self._spare_lock:
                if self._spare_pid != os.getpid():  # a forked child: the parent's connections are not ours to use
                    self._spare, self._spare_pid = [], os.getpid()
                connection = self._spare.pop() if self._spare else None
            reused = connection is not None
            try:
                if connection is None:
                    connection = _Connection(self._host, self._port, self._tls, timeout_s)
                connection.send(request, timeout_s)
            except OSError:
                if connection is not None:
                    connection.close()
                if reused:
                    continue  # a keep-alive connection the server had closed: once more, fresh
                return None
            return Exchange(self, connection, target)
        return None

    def _give_back(self, connection: _Connection) -> None:
        with self._spare_lock:
            if len(self._spare) < _MAX_SPARE:
                self._spare.append(connection)
                return
        connection.close()

    def _request(self, method: str, target: str, extra_headers: dict[str, str], body: bytes) -> CyclesResponse:
        request = self._prepare(method, target, extra_headers, body)
        if request is None:
            return CyclesResponse.transport_error(ValueError(f"control character in the request to {target!r}"))
        bound: float | None = getattr(self._local, "timeout", None)
        timeout = bound if bound is not None else max(self._config.connect_timeout, self._config.read_timeout)
        for attempt in range(2):
            connection: _Connection | None = getattr(self._local, "connection", None)
            reused = connection is not None
            try:
                if connection is None:
                    connection = self._local.connection = _Connection(self._host, self._port, self._tls, timeout)
                response = connection.exchange(request, timeout)
            except (OSError, _BadResponse) as exc:
                self._drop_connection()
                if attempt == 0 and reused and not isinstance(exc, TimeoutError):
                    continue  # a keep-alive connection the server had closed (not a slow one): once more, fresh
                logger.error("Transport error on %s %s: %s", method, target, exc)
                return CyclesResponse.transport_error(exc)
            if response.will_close:
                self._drop_connection()
            return _to_response(response)
        raise AssertionError("unreachable")

    def _post(self, path: str, body: BaseModel | dict[str, Any]) -> CyclesResponse:
        return self._request("POST", *self._post_request(path, body))

    def _get(self, path: str, params: dict[str, str] | None = None) -> CyclesResponse:
        query = f"?{urlencode(params)}" if params else ""
        return self._request("GET", self._prefix + path + query, {}, b"")

    def close(self) -> None:
        self._drop_connection()
        with self._spare_lock:
            spare, self._spare = self._spare, []
        for connection in spare:
            connection.close()
        super().close()


class Exchange:
    """A request already sent on its own connection (`LeanCyclesClient.start_post`), its answer not read yet."""

    def __init__(self, client: LeanCyclesClient, connection: _Connection, target: str) -> None:
        self._client = client
        self._connection = connection
        self._target = target

    def fileno(self) -> int:
        """The connection's socket, readable once the answer starts to arrive."""
        return self._connection.fileno()

    def response(self) -> CyclesResponse:
        """Read the answer (once), bounded by the timeout it was sent with, and give the connection back."""
        connection = self._connection
        try:
            response = connection.receive()
        except (OSError, _BadResponse) as exc:
            connection.close()
            logger.error("Transport error on POST %s: %s", self._target, exc)
            return CyclesResponse.transport_error(exc)
        if response.will_close:
            connection.close()
        else:
            self._client._give_back(connection)
        return _to_response(response)


def _to_response(response: _Response) -> CyclesResponse:
    """What runcycles' `CyclesClient._handle_response` builds from an httpx response."""
    try:
        body = json.loads(response.body) if response.body else None
    except ValueError:
        body = None
    headers = {name: value for name in _RESPONSE_HEADERS if (value := response.headers.get(name)) is not None}
    if 200 <= response.status < 300:
        return CyclesResponse.success(response.status, body if isinstance(body, dict) else {}, headers=headers)
    message = body.get("message") or body.get("error") if isinstance(body, dict) else None
    reason = message or response.reason or "Unknown error"
    return CyclesResponse.http_error(response.status, reason, body, headers=headers)


_lean: weakref.WeakKeyDictionary[CyclesClient, CyclesClient] = weakref.WeakKeyDictionary()
_lean_lock = threading.Lock()


def lean_client(client: CyclesClient) -> CyclesClient:
    """The lean twin of `client` (created once per client), or `client` itself if it is already lean or is a
    subclass of CyclesClient whose requests we must not bypass."""
    if type(client) is not CyclesClient:
        return client
    with _lean_lock:
        lean = _lean.get(client)
        if lean is None:
            try:
                lean = LeanCyclesClient(client)
            except ValueError:
                lean = client
            _lean[client] = lean
        return lean
