"""Run the HTTP server: in a background thread (`LocalAuthority`) or in the foreground (`serve`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable

from otel_cycles.authority._http import AuthorityApp
from otel_cycles.authority._http_protocol import HttpProtocol
from otel_cycles.authority.ledger import SQLiteLedger

__all__ = ["BackgroundServer", "ServerHandle", "run_foreground", "start_server"]

_log = logging.getLogger("otel_cycles.authority")


class ServerHandle:
    """A listening server on a loop: its bound port and how to close it."""

    def __init__(self, server: asyncio.base_events.Server, connections: set[HttpProtocol], sweeper: asyncio.Task[None]):
        self.server = server
        self.connections = connections
        self.sweeper = sweeper
        sock = server.sockets[0]
        self.host, self.port = sock.getsockname()[:2]

    async def close(self) -> None:
        """Stop accepting, cancel the sweeper and drop open keep-alive connections."""
        self.server.close()
        self.sweeper.cancel()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self.sweeper
        await self.server.wait_closed()


async def _sweep_forever(ledger: SQLiteLedger, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            while ledger.expire_due() >= 500:
                await asyncio.sleep(0)  # a large backlog: expire in batches, let requests interleave
        except Exception:  # keep sweeping; a transient "database is locked" must not kill the task
            _log.exception("authority: expiry sweep failed")


async def start_server(
    ledger: SQLiteLedger, host: str, port: int, admin_key: str | None, sweep_interval_s: float
) -> ServerHandle:
    """Start listening on `host:port` (0 = any free port) and start the expiry sweeper; return the handle."""
    app = AuthorityApp(ledger, admin_key)
    connections: set[HttpProtocol] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: HttpProtocol(app, connections), host, port, reuse_address=True, backlog=1024
    )
    sweeper = loop.create_task(_sweep_forever(ledger, sweep_interval_s))
    return ServerHandle(server, connections, sweeper)


def run_foreground(
    ledger: SQLiteLedger,
    host: str,
    port: int,
    admin_key: str | None,
    sweep_interval_s: float,
    on_ready: Callable[[ServerHandle], None],
) -> None:
    """Serve until SIGINT/SIGTERM, calling `on_ready` once listening."""

    async def main() -> None:
        handle = await start_server(ledger, host, port, admin_key, sweep_interval_s)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        on_ready(handle)
        await stop.wait()
        await handle.close()

    asyncio.run(main())


class BackgroundServer:
    """The server on its own event-loop thread (used by `LocalAuthority`)."""

    def __init__(self, ledger: SQLiteLedger, host: str, port: int, admin_key: str | None, sweep_s: float) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.handle: ServerHandle | None = None
        self._thread = threading.Thread(
            target=self._run, args=(ledger, host, port, admin_key, sweep_s), name="otel-cycles-authority", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _run(self, ledger: SQLiteLedger, host: str, port: int, admin_key: str | None, sweep_s: float) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self.handle = self._loop.run_until_complete(start_server(ledger, host, port, admin_key, sweep_s))
        except BaseException as exc:  # surfaced to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    def stop(self) -> None:
        """Close the server and join its thread (idempotent)."""
        if not self._thread.is_alive():
            return
        handle = self.handle
        if handle is not None:
            fut = asyncio.run_coroutine_threadsafe(handle.close(), self._loop)
            with contextlib.suppress(Exception):
                fut.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
