"""The ledger's SQLite connection: opening it (pragmas, schema), the WAL checkpointer, and locked transactions.

`LedgerStore` is the base of `SQLiteLedger` and of the mixins that hold its operations: each operation runs inside
`_tx()` (`BEGIN IMMEDIATE`, rolled back on any exception) or `_read()` on the one shared connection, under `_lock`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from otel_cycles.authority._sql import Queries

__all__ = ["CHECKPOINT_INTERVAL_S", "Clock", "LedgerStore", "connect", "system_clock"]

Clock = Callable[[], int]
"""A clock returning the current time in epoch milliseconds."""

CHECKPOINT_INTERVAL_S = 0.5


def system_clock() -> int:
    """Return the wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def connect(path: str | None) -> sqlite3.Connection:
    """Open (creating if needed, mode 0600) the database at `path`, or a private in-memory one, with the schema."""
    if path is None:
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    else:
        if not os.path.exists(path):
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit is durable across process crashes without an fsync per transaction. The
        # checkpoint (which does fsync) runs on a background thread instead of inside request transactions.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("BEGIN IMMEDIATE")
    for statement in Queries.SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    for table, column, kind in Queries.ADDED_COLUMNS:
        if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")  # names from Queries, never from input
    conn.execute("COMMIT")
    return conn


class LedgerStore:
    """One SQLite connection shared by every ledger operation, with its clock and (for files) a checkpointer."""

    def __init__(self, conn: sqlite3.Connection, clock: Clock, path: str | None) -> None:
        self._conn = conn
        self._lock = threading.Lock()  # guards self._conn: one statement sequence at a time
        self.clock = clock
        self.path = path
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoint = threading.Event()

    def _start_checkpointer(self) -> None:
        self._stop_checkpoint = threading.Event()
        path = self.path
        assert path is not None

        def run() -> None:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
            try:
                while not self._stop_checkpoint.wait(CHECKPOINT_INTERVAL_S):
                    try:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    except sqlite3.Error:  # busy or locked: try again next round
                        pass
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                conn.close()

        self._checkpointer = threading.Thread(target=run, name="otel-cycles-ledger-checkpoint", daemon=True)
        self._checkpointer.start()

    def close(self) -> None:
        """Stop the checkpointer (file databases) and close the database connection (idempotent)."""
        if self._checkpointer is not None:
            self._stop_checkpoint.set()
            self._checkpointer.join(timeout=10)
            self._checkpointer = None
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")
