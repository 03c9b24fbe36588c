"""HTTP/1.1 on one asyncio connection: request-head parsing, `Content-Length` bodies, keep-alive, pipelining.

Requests are answered in order as soon as each is complete. A malformed or oversized head, a chunked body or a
body over `MAX_BODY_BYTES` gets one error response and the connection is closed.
"""

from __future__ import annotations

import asyncio
import os

from otel_cycles.authority._errors import CyclesProtocolError
from otel_cycles.authority._http import AuthorityApp
from otel_cycles.authority._http_messages import new_request_id

__all__ = ["MAX_BODY_BYTES", "MAX_HEAD_BYTES", "HttpProtocol"]

MAX_BODY_BYTES = 1 << 20
"""Largest accepted request body; larger ones get 413 and the connection is closed."""
MAX_HEAD_BYTES = 64 << 10


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
            self._app.responses.error(err, new_request_id(), os.urandom(16).hex(), [("Connection", "close")])
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
