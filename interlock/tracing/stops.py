"""The kill switch's state in the store: the table `stops`, one row per stopped session or agent.

A row says that new calls of that session (`kind` "session") or agent (`kind` "agent") are refused,
why, and since when; `resume` deletes it. It lives in the store so a restart keeps it and every
interlock of a fleet on one PostgreSQL store shares it (each polls it: `proxy/stops.py`). The table
is made by the store's migration to version 6 (`schema.py`; made on first use before); an older file
read as a bundle may lack it, and then nothing is stopped.
"""

from __future__ import annotations

import sqlite3
from typing import Any

TABLE = "stops"
#: The columns of a stop row, as `stops` returns them.
STOP_COLUMNS = ("kind", "name", "reason", "stopped_at")
#: What can be stopped.
STOP_KINDS = ("session", "agent")


def _check(kind: str) -> None:
    if kind not in STOP_KINDS:
        raise ValueError(f"a stop names a session or an agent, not {kind!r}")


class SQLiteStops:
    """The kill-switch methods of `SQLiteStore` (the `Store` protocol's `stops`, `set_stop`, `clear_stop`)."""

    readonly: bool

    @property
    def conn(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _stops_table(self) -> bool:
        """Whether the file has the table: a store's file always does once migrated (version 6); an
        older file opened read-only (a bundle) may not."""
        if not self.readonly:
            return True
        found = self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,))
        return found.fetchone() is not None

    def stops(self) -> list[dict[str, Any]]:
        """Every stopped session and agent (`STOP_COLUMNS`), oldest stop first."""
        if not self._stops_table():
            return []
        rows = self.conn.execute(f"SELECT {', '.join(STOP_COLUMNS)} FROM {TABLE} ORDER BY stopped_at, kind, name")
        return [dict(zip(STOP_COLUMNS, row, strict=True)) for row in rows.fetchall()]

    def set_stop(self, kind: str, name: str, reason: str, stopped_at: float) -> None:
        """Stop a session or agent (again: the reason and time are replaced)."""
        _check(kind)
        self._stops_table()
        with self.conn:
            self.conn.execute(
                f"INSERT OR REPLACE INTO {TABLE} ({', '.join(STOP_COLUMNS)}) VALUES (?, ?, ?, ?)",
                (kind, name, reason, stopped_at),
            )

    def clear_stop(self, kind: str, name: str) -> bool:
        """Resume a session or agent; False when it was not stopped."""
        _check(kind)
        if not self._stops_table():
            return False
        with self.conn:
            cursor = self.conn.execute(f"DELETE FROM {TABLE} WHERE kind = ? AND name = ?", (kind, name))
        return cursor.rowcount > 0


class PostgresStops:
    """The kill-switch methods of `PostgresStore`: the same table, in PostgreSQL's dialect."""

    readonly: bool

    def connection(self) -> Any:
        raise NotImplementedError

    def _stops_table(self, conn: Any) -> bool:
        if not self.readonly:
            return True  # migrated (version 6)
        found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (TABLE,)).fetchone()
        return bool(found and found[0])

    def stops(self) -> list[dict[str, Any]]:
        with self.connection() as conn:
            if not self._stops_table(conn):
                return []
            sql = f"SELECT {', '.join(STOP_COLUMNS)} FROM {TABLE} ORDER BY stopped_at, kind, name"
            return [dict(zip(STOP_COLUMNS, row, strict=True)) for row in conn.execute(sql).fetchall()]

    def set_stop(self, kind: str, name: str, reason: str, stopped_at: float) -> None:
        _check(kind)
        with self.connection() as conn:
            self._stops_table(conn)
            conn.execute(
                f"INSERT INTO {TABLE} ({', '.join(STOP_COLUMNS)}) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (kind, name) DO UPDATE SET reason = EXCLUDED.reason, stopped_at = EXCLUDED.stopped_at",
                (kind, name, reason, stopped_at),
            )

    def clear_stop(self, kind: str, name: str) -> bool:
        _check(kind)
        with self.connection() as conn:
            if not self._stops_table(conn):
                return False
            cursor = conn.execute(f"DELETE FROM {TABLE} WHERE kind = %s AND name = %s", (kind, name))
            return bool(cursor.rowcount)


__all__ = ["STOP_COLUMNS", "STOP_KINDS", "TABLE", "PostgresStops", "SQLiteStops"]
