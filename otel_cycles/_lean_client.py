"""A `CyclesClient` that sends its requests over plain `http.client` keep-alive connections instead of httpx.

On the governance path every LLM call and tool call costs a reservation, a commit and often a lookahead. Through
runcycles' httpx-based client each request costs ~0.8 ms of CPU on this project's benchmark machine, against ~0.4 ms
with a plain `http.client` connection (BENCHMARKS.md): httpx's request building, header merging and connection-pool
bookkeeping dominate a loopback round trip. This subclass keeps runcycles as the protocol layer (same methods, same
`CyclesResponse` objects, same error classification downstream) and replaces only `_post` / `_get`.

One connection per thread (`http.client` connections are not thread-safe; the hooks run on executor threads and
the settlement worker has its own). A request that fails on a reused keep-alive connection (the server closed it while
idle) is sent once more on a fresh one: every POST of the Cycles protocol carries an idempotency key, so a replay
cannot double-spend. Any other failure is a transport error, as with httpx.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode, urlsplit

from pydantic import BaseModel
from runcycles import CyclesClient
from runcycles.client import _RESPONSE_HEADERS, _serialize_body
from runcycles.response import CyclesResponse

__all__ = ["LeanCyclesClient", "lean_client"]

logger = logging.getLogger(__name__)

_API_KEY_HEADER = "X-Cycles-API-Key"
_IDEMPOTENCY_KEY_HEADER = "X-Idempotency-Key"


class _OneWrite:
    """Send a request's head and body in one write; `http.client` writes them separately. Every socket call gives up
    the interpreter lock, and on a busy agent process getting it back can take up to the switch interval (5 ms): the
    cProfile of a real run's settlement worker showed its two writes per request costing more than the round trip."""

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        if isinstance(message_body, bytes):
            buffer: list[bytes] = self._buffer  # type: ignore[attr-defined]
            buffer.extend((b"", message_body))
            message = b"\r\n".join(buffer)
            del buffer[:]
            self.send(message)  # type: ignore[attr-defined]
            return
        super()._send_output(message_body, encode_chunked)  # type: ignore[misc]


class _Connection(_OneWrite, http.client.HTTPConnection):
    pass


class _TLSConnection(_OneWrite, http.client.HTTPSConnection):
    pass


class LeanCyclesClient(CyclesClient):
    """A CyclesClient with the same config whose requests bypass httpx (see the module docstring)."""

    def __init__(self, client: CyclesClient) -> None:
        super().__init__(client._config)
        parts = urlsplit(self._config.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported Cycles base URL {self._config.base_url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._headers = {_API_KEY_HEADER: self._config.api_key, "Accept": "application/json"}
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            timeout = max(self._config.connect_timeout, self._config.read_timeout)
            if self._https:
                connection = _TLSConnection(self._host, self._port, timeout=timeout)
            else:
                connection = _Connection(self._host, self._port, timeout=timeout)
            self._local.connection = connection
        return connection

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
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

    def _request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> CyclesResponse:
        for attempt in range(2):
            connection = self._connection()
            bound = getattr(self._local, "timeout", None)
            connection.timeout = (
                bound if bound is not None else max(self._config.connect_timeout, self._config.read_timeout)
            )
            if connection.sock is not None:
                connection.sock.settimeout(connection.timeout)
            reused = connection.sock is not None
            try:
                connection.request(method, self._prefix + path, body=body, headers=headers)
                response = connection.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                if attempt == 0 and reused and not isinstance(exc, TimeoutError):
                    continue  # a keep-alive connection the server had closed (not a slow one): once more, fresh
                logger.error("Transport error on %s %s: %s", method, path, exc)
                return CyclesResponse.transport_error(exc)
            if response.will_close:
                self._drop_connection()
            return _to_response(response, raw)
        raise AssertionError("unreachable")

    def _post(self, path: str, body: BaseModel | dict[str, Any]) -> CyclesResponse:
        data = _serialize_body(body)
        headers = {**self._headers, "Content-Type": "application/json"}
        key = data.get("idempotency_key")
        if key:
            headers[_IDEMPOTENCY_KEY_HEADER] = str(key)
        return self._request("POST", path, json.dumps(data).encode(), headers)

    def _get(self, path: str, params: dict[str, str] | None = None) -> CyclesResponse:
        query = f"?{urlencode(params)}" if params else ""
        return self._request("GET", path + query, None, self._headers)

    def close(self) -> None:
        self._drop_connection()
        super().close()


def _to_response(response: http.client.HTTPResponse, raw: bytes) -> CyclesResponse:
    """What runcycles' `CyclesClient._handle_response` builds from an httpx response, from an http.client one."""
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    headers = {name: value for name in _RESPONSE_HEADERS if (value := response.getheader(name)) is not None}
    status = response.status
    if 200 <= status < 300:
        return CyclesResponse.success(status, body if isinstance(body, dict) else {}, headers=headers)
    message = body.get("message") or body.get("error") if isinstance(body, dict) else None
    return CyclesResponse.http_error(status, message or response.reason or "Unknown error", body, headers=headers)


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
