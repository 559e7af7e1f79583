"""SQLite practice shared by the rooms that keep an embedded SQLite file: the store (tracing/) and
the embedded shared state (policies/ counters, the guardrails' vault). Here, at the bottom, so
neither room imports the other for it."""

from __future__ import annotations

import sqlite3
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
