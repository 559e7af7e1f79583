"""`SqliteState`: the one connection that the SQLite-backed shared state (`counters_sqlite.py`,
`vault_sqlite.py`) keeps to the store's file, for `interlock serve --workers N` on one host when there
is no Redis (`state.url`); and `STATE_SCHEMA`, the tables of the shared state in that file.

Each operation is one `BEGIN IMMEDIATE` transaction (SQLite's write lock: one process at a time, the
others wait up to `BUSY_TIMEOUT`), run in a thread of the worker, never on its event loop; any
SQLite error is one `StateUnavailable`, which the concern turns into its configured failure mode, as
a Redis error is in `redisstate.py`.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from interlock.core.sqlite import enable_wal, transaction
from interlock.core.state import StateUnavailable

T = TypeVar("T")

#: Seconds a worker waits for another's transaction before the concern's failure mode applies.
BUSY_TIMEOUT = 10.0

#: The embedded shared state's tables, in the store's file (docs/store.md, "Schema"): the day and
#: life counters every interlock saves (`policies/counters.py`), the minute windows and gauges of
#: the counters shared by worker processes (`counters_sqlite.py`), and the shared vault
#: (`vault_sqlite.py`). Defined once, here, below both the store and the state: the store's
#: migration to version 6 makes them (`tracing/schema.py`), and the state makes them itself, with
#: these same statements, in a file no store has migrated (recording off, the store on PostgreSQL
#: while the counters save to `store.path`, or the state first to open a new file). Their shape is
#: the one released files already hold (made on first use before version 6): never change a
#: statement; a change is a new store migration.
STATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS policy_counters (
    day TEXT NOT NULL,
    rule TEXT NOT NULL,
    key TEXT NOT NULL,
    tokens INTEGER NOT NULL DEFAULT 0,
    usd REAL NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    PRIMARY KEY (day, rule, key)
);
CREATE TABLE IF NOT EXISTS policy_life (
    rule TEXT NOT NULL,
    key TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (rule, key, metric)
);
CREATE TABLE IF NOT EXISTS policy_windows (
    rule TEXT NOT NULL, key TEXT NOT NULL, metric TEXT NOT NULL, t REAL NOT NULL, amount REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS policy_windows_by_counter ON policy_windows (rule, key, metric, t);
CREATE TABLE IF NOT EXISTS policy_gauges (
    rule TEXT NOT NULL, key TEXT NOT NULL, metric TEXT NOT NULL, pid INTEGER NOT NULL, n REAL NOT NULL,
    PRIMARY KEY (rule, key, metric, pid)
);
CREATE TABLE IF NOT EXISTS vault_values (
    session TEXT NOT NULL, placeholder TEXT NOT NULL, mac BLOB NOT NULL, blob BLOB NOT NULL,
    used INTEGER NOT NULL, PRIMARY KEY (session, placeholder), UNIQUE (session, mac)
);
CREATE TABLE IF NOT EXISTS vault_sessions (
    session TEXT PRIMARY KEY, touched REAL NOT NULL, seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS vault_numbers (
    session TEXT NOT NULL, entity TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (session, entity)
)
"""
#: `STATE_SCHEMA` one statement at a time (`executescript` would commit a migration's transaction).
STATE_STATEMENTS = tuple(s.strip() for s in STATE_SCHEMA.split(";") if s.strip())
#: The names of the state's tables: what a file may hold before a store has migrated it.
STATE_TABLES = frozenset(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", STATE_SCHEMA))


def create_state_tables(connection: sqlite3.Connection) -> None:
    """Make the state's tables that are missing (nothing when a store has migrated the file)."""
    for statement in STATE_STATEMENTS:
        connection.execute(statement)


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


__all__ = ["BUSY_TIMEOUT", "STATE_SCHEMA", "STATE_STATEMENTS", "STATE_TABLES", "SqliteState", "create_state_tables"]
