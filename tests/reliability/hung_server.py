"""A loopback TCP server that accepts connections, reads each request's head and never answers: a hung authority."""

from __future__ import annotations

import socket
import threading
from types import TracebackType


class HungServer:
    """Counts connections and the `(method, path)` of every request it swallows. Use as a context manager."""

    def __init__(self, port: int = 0) -> None:
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port: int = self._listener.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()  # guards connections, requests and _sockets
        self._sockets: list[socket.socket] = []
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name="hung-server", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._sockets.append(conn)
            threading.Thread(target=self._swallow, args=(conn,), daemon=True).start()

    def _swallow(self, conn: socket.socket) -> None:
        data = b""
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
                while b"\r\n\r\n" in data:
                    head, _, data = data.partition(b"\r\n\r\n")
                    method, path = head.split(b"\r\n", 1)[0].decode().split(" ")[:2]
                    with self._lock:
                        self.requests.append((method, path))
        except OSError:
            return

    def snapshot(self) -> tuple[int, list[tuple[str, str]]]:
        with self._lock:
            return self.connections, list(self.requests)

    def close(self) -> None:
        self._closed.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(), which would keep the port bound
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            for conn in self._sockets:
                conn.close()

    def __enter__(self) -> HungServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
