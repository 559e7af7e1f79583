"""SQLite practice shared by the rooms that keep an embedded SQLite file: the store (tracing/) and
the embedded shared state (policies/ counters, the guardrails' vault). Here, at the bottom, so
neither room imports the other for it."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """`BEGIN IMMEDIATE` … `COMMIT`, rolled back if the body raises. SQLite rolls back by itself on
    some errors (SQLITE_FULL, I/O errors): a ROLLBACK then raises "no transaction is active", which
    used to hide the real error, so it is only sent while a transaction is open."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def enable_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """`PRAGMA journal_mode = WAL`, waiting up to `timeout` seconds for another connection. On a new
    file, two connections setting it at once get SQLITE_BUSY at once: SQLite does not call the busy
    handler for this change (measured: 17 of 300 new files, four threads each). Seen in CI as
    "database is locked" from two workers' vaults opening one new file together."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
        time.sleep(0.005)
