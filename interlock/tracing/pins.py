"""Pinned MCP tool contracts in the SQLite store: the table `mcp_pins`, one row per (route, tool).

A row holds the pinned definition (what was first listed, or last approved) and the definition the
server lists now, each with its hash; the tool is flagged while they differ (`pinned_hash` is NULL
for a tool that appeared after the route was pinned). The table lives in the store beside the
calls, made by its migration to version 6 (`schema.py`; made on first use before); an older file read
as a bundle may lack it, and then nothing is pinned yet.
"""

from __future__ import annotations

import difflib
import json
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from interlock.core.sqlite import transaction

TABLE = "mcp_pins"
#: The columns of a pin row, as `mcp_pins` returns them (definitions decoded from JSON).
PIN_COLUMNS = ("route", "tool", "pinned_hash", "pinned", "pinned_at", "seen_hash", "seen", "seen_at")


def pin_row(values: Sequence[Any]) -> dict[str, Any]:
    row = dict(zip(PIN_COLUMNS, values, strict=True))
    for key in ("pinned", "seen"):
        if row[key] is not None:
            row[key] = json.loads(row[key])
    return row


class SQLitePins:
    """The pin methods of `SQLiteStore` (the `Store` protocol's `mcp_pins`, `save_mcp_pins`,
    `approve_mcp_pins`)."""

    readonly: bool

    @property
    def conn(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _pins_table(self) -> bool:
        """Whether the file has the table: a store's file always does once migrated (version 6); an
        older file opened read-only (a bundle) may not."""
        if not self.readonly:
            return True
        found = self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,))
        return found.fetchone() is not None

    def mcp_pins(self, route: str | None = None) -> list[dict[str, Any]]:
        """Pin rows (`PIN_COLUMNS`), of one route or all, by route and tool."""
        if not self._pins_table():
            return []
        where, args = ("WHERE route = ?", (route,)) if route is not None else ("", ())
        rows = self.conn.execute(f"SELECT {', '.join(PIN_COLUMNS)} FROM {TABLE} {where} ORDER BY route, tool", args)
        return [pin_row(r) for r in rows.fetchall()]

    def save_mcp_pins(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert or replace these pin rows (`PIN_COLUMNS`; definitions as JSON-able values), in one
        transaction."""
        if not rows:
            return
        self._pins_table()
        conn = self.conn
        values = [_stored(row) for row in rows]
        marks = ", ".join("?" for _ in PIN_COLUMNS)
        with transaction(conn):
            conn.executemany(f"INSERT OR REPLACE INTO {TABLE} ({', '.join(PIN_COLUMNS)}) VALUES ({marks})", values)

    def approve_mcp_pins(self, route: str, tool: str | None = None, *, now: float | None = None) -> list[str]:
        """Pin what the server lists now for the route's flagged tools (or one tool); returns the
        tools approved."""
        if not self._pins_table():
            return []
        conn = self.conn
        where = "route = ? AND (pinned_hash IS NULL OR pinned_hash != seen_hash)"
        args: tuple[Any, ...] = (route,)
        if tool is not None:
            where += " AND tool = ?"
            args += (tool,)
        with transaction(conn):
            tools = [r[0] for r in conn.execute(f"SELECT tool FROM {TABLE} WHERE {where} ORDER BY tool", args)]
            conn.execute(
                f"UPDATE {TABLE} SET pinned_hash = seen_hash, pinned = seen, pinned_at = ? WHERE {where}",
                (time.time() if now is None else now, *args),
            )
        return tools


class PostgresPins:
    """The pin methods of `PostgresStore`: the same table, in PostgreSQL's dialect."""

    readonly: bool

    def connection(self) -> Any:
        raise NotImplementedError

    def _pins_table(self, conn: Any) -> bool:
        if not self.readonly:
            return True  # migrated (version 6)
        found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (TABLE,)).fetchone()
        return bool(found and found[0])

    def mcp_pins(self, route: str | None = None) -> list[dict[str, Any]]:
        with self.connection() as conn:
            if not self._pins_table(conn):
                return []
            where, args = ("WHERE route = %s", (route,)) if route is not None else ("", ())
            sql = f"SELECT {', '.join(PIN_COLUMNS)} FROM {TABLE} {where} ORDER BY route, tool"
            return [pin_row(r) for r in conn.execute(sql, args).fetchall()]

    def save_mcp_pins(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        columns = ", ".join(PIN_COLUMNS)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in PIN_COLUMNS[2:])
        sql = (
            f"INSERT INTO {TABLE} ({columns}) VALUES ({', '.join('%s' for _ in PIN_COLUMNS)}) "
            f"ON CONFLICT (route, tool) DO UPDATE SET {updates}"
        )
        with self.connection() as conn:
            self._pins_table(conn)
            with conn.transaction():
                for row in rows:
                    conn.execute(sql, _stored(row))

    def approve_mcp_pins(self, route: str, tool: str | None = None, *, now: float | None = None) -> list[str]:
        where = "route = %s AND (pinned_hash IS NULL OR pinned_hash != seen_hash)"
        args: tuple[Any, ...] = (route,)
        if tool is not None:
            where += " AND tool = %s"
            args += (tool,)
        with self.connection() as conn:
            if not self._pins_table(conn):
                return []
            with conn.transaction():
                found = conn.execute(
                    f"UPDATE {TABLE} SET pinned_hash = seen_hash, pinned = seen, pinned_at = %s WHERE {where} RETURNING tool",
                    (time.time() if now is None else now, *args),
                ).fetchall()
        return sorted(r[0] for r in found)


def _stored(row: dict[str, Any]) -> tuple[Any, ...]:
    """A pin row's values in `PIN_COLUMNS` order, definitions as JSON text."""
    return tuple(
        json.dumps(row[k], sort_keys=True) if k in ("pinned", "seen") and row[k] is not None else row[k]
        for k in PIN_COLUMNS
    )


def pin_diff(row: dict[str, Any]) -> str:
    """A unified diff from the pinned definition to the listed one (description and each other part
    as indented JSON), for `interlock mcp pins diff` and the UI; empty when they are the same."""

    def lines(definition: Any) -> list[str]:
        if definition is None:
            return []
        out: list[str] = []
        for key in sorted(definition):
            value = definition[key]
            text = value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True)
            out += [f"{key}:", *(f"  {line}" for line in text.splitlines() or [""])]
        return out

    name = f"{row['route']}/{row['tool']}"
    return "\n".join(
        difflib.unified_diff(
            lines(row["pinned"]), lines(row["seen"]), f"{name} (pinned)", f"{name} (listed)", lineterm=""
        )
    )


__all__ = ["PIN_COLUMNS", "TABLE", "PostgresPins", "SQLitePins", "pin_diff", "pin_row"]
