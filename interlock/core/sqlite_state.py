"""`SqliteState`: the one connection that the SQLite-backed shared state (`counters_sqlite.py`,
`vault_sqlite.py`) keeps to the store's file, for `interlock serve --workers N` on one host when there
is no Redis (`state.url`).

Each operation is one `BEGIN IMMEDIATE` transaction (SQLite's write lock: one process at a time, the
others wait up to `BUSY_TIMEOUT`), run in a thread of the worker, never on its event loop; any
SQLite error is one `StateUnavailable`, which the concern turns into its configured failure mode, as
a Redis error is in `redisstate.py`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from interlock.core.sqlite import enable_wal, transaction
from interlock.core.state import StateUnavailable
from interlock.core.state_schema import create_state_tables

T = TypeVar("T")

#: Seconds a worker waits for another's transaction before the concern's failure mode applies.
BUSY_TIMEOUT = 10.0


class SqliteState:
    """A lazily opened connection to `path` (its missing state tables made, `STATE_SCHEMA`), and a
    thread to run transactions on (named `thread`); `what` names the concern in errors ("the counters")."""

    def __init__(self, path: str, what: str, thread: str) -> None:
        self.path = path
        self._what = what
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread)
        self._connection: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
            enable_wal(connection, BUSY_TIMEOUT)
            # As the store's writer: a commit survives the process, not the OS (no fsync per call).
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            create_state_tables(connection)
            self._connection = connection
        return self._connection

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` in one `BEGIN IMMEDIATE` transaction on the state's thread."""

        def run() -> T:
            connection = self._connect()
            # The store's helper: its ROLLBACK is sent only while a transaction is open, so an error
            # SQLite already rolled back (a full disk) is the one reported.
            with transaction(connection):
                return work(connection)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, run)
        except sqlite3.Error as exc:
            raise StateUnavailable(f"{self._what} in {self.path} cannot be used: {exc}") from None

    async def aclose(self) -> None:
        def close() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        await asyncio.get_running_loop().run_in_executor(self._thread, close)
        self._thread.shutdown(wait=True)


__all__ = ["BUSY_TIMEOUT", "SqliteState"]
