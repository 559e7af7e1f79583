"""`SqliteLoopHistory`: the `LoopHistory` interface in the store's SQLite file, shared by the worker
processes of `interlock serve --workers N` on one host when there is no Redis (`state.url`).

Each operation is one `BEGIN IMMEDIATE` transaction (`core/sqlite_state.py`: one process at a time),
so two workers appending to one session each see the other's entry, run in a thread of the worker,
never on its event loop. The tables (`core/state_schema.LOOP_SCHEMA`, store schema version 7) keep
the in-process history's meaning: a session's row (last call, width, a sequence ordering the rest),
its latest keys per kind trimmed to the width, its error streaks and refused tools (the least
recently stepped / oldest dropped past `max_tools`), its announced loops. A session idle past
`idle_ttl` starts afresh; a new session past `max_sessions` forgets the least recently seen.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from interlock.core.sqlite_state import SqliteState
from interlock.policies.loop_history import (
    IDLE_TTL,
    MAX_SESSIONS,
    MAX_TOOLS,
    Repeat,
    Seen,
    Streak,
    check_kinds,
    positions,
)

#: The tables holding a session's rows (besides `loop_sessions`).
_PARTS = ("loop_entries", "loop_errors", "loop_blocked", "loop_announced")
#: Idle sessions dropped at most per new session (the rest by the next ones): a transaction's work
#: stays bounded however many sessions ended at once.
_SWEEP = 64


class SqliteLoopHistory(SqliteState):
    """Loop histories in SQLite, shared by the processes that open the same file; see the module's docstring."""

    def __init__(
        self,
        path: str,
        max_sessions: int = MAX_SESSIONS,
        idle_ttl: float = IDLE_TTL,
        max_tools: int = MAX_TOOLS,
    ) -> None:
        super().__init__(path, "the loop histories", "loop-history")
        self.max_sessions = max_sessions
        self.idle_ttl = idle_ttl
        self.max_tools = max_tools

    async def observe(
        self,
        scope: str,
        window: int,
        now: float,
        repeats: Sequence[Repeat] = (),
        streaks: Sequence[Streak] = (),
        tool: str | None = None,
    ) -> Seen:
        check_kinds(repeats)

        def work(db: sqlite3.Connection) -> Seen:
            width = self._touch(db, scope, window, now)
            if tool is not None:
                row = db.execute(
                    "SELECT rule, reason FROM loop_blocked WHERE scope = ? AND tool = ?", (scope, tool)
                ).fetchone()
                if row is not None:
                    return Seen((row[0], row[1]), [], [])
            found = [self._append(db, scope, repeat, width) for repeat in repeats]
            return Seen(None, found, [self._step(db, scope, streak) for streak in streaks])

        return await self._run(work)

    async def block(self, scope: str, tool: str, rule: str, reason: str, now: float) -> None:
        def work(db: sqlite3.Connection) -> None:
            self._touch(db, scope, 0, now)
            db.execute(
                "INSERT OR REPLACE INTO loop_blocked (scope, tool, seq, rule, reason) VALUES (?, ?, ?, ?, ?)",
                (scope, tool, _next(db, scope), rule, reason),
            )
            self._bound(db, "loop_blocked", scope)

        await self._run(work)

    async def announce(self, scope: str, rule: str, kind: str, now: float) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            self._touch(db, scope, 0, now)
            added = db.execute(
                "INSERT OR IGNORE INTO loop_announced (scope, rule, kind) VALUES (?, ?, ?)", (scope, rule, kind)
            )
            return added.rowcount == 1

        return await self._run(work)

    # -- inside a transaction -------------------------------------------------------------------

    def _touch(self, db: sqlite3.Connection, scope: str, window: int, now: float) -> int:
        """The session's width after this call (a new or idle session starts afresh, making room)."""
        row = db.execute("SELECT seen, width FROM loop_sessions WHERE scope = ?", (scope,)).fetchone()
        if row is not None and now - row[0] > self.idle_ttl:
            _forget(db, [scope])
            row = None
        if row is None:
            idle = db.execute(
                "SELECT scope FROM loop_sessions WHERE seen < ? LIMIT ?", (now - self.idle_ttl, _SWEEP)
            ).fetchall()
            _forget(db, [s for (s,) in idle])
            (count,) = db.execute("SELECT COUNT(*) FROM loop_sessions").fetchone()
            if count >= self.max_sessions:
                oldest = db.execute(
                    "SELECT scope FROM loop_sessions ORDER BY seen LIMIT ?", (count - self.max_sessions + 1,)
                ).fetchall()
                _forget(db, [s for (s,) in oldest])
            width = max(window, 1)
            db.execute("INSERT INTO loop_sessions (scope, seen, width) VALUES (?, ?, ?)", (scope, now, width))
            return width
        width = max(window, int(row[1]))
        # The latest call's time (a worker whose clock lags never moves it back).
        db.execute("UPDATE loop_sessions SET seen = max(seen, ?), width = ? WHERE scope = ?", (now, width, scope))
        return width

    def _append(self, db: sqlite3.Connection, scope: str, repeat: Repeat, width: int) -> list[int]:
        db.execute(
            "INSERT INTO loop_entries (scope, kind, seq, key) VALUES (?, ?, ?, ?)",
            (scope, repeat.kind, _next(db, scope), repeat.key),
        )
        rows = db.execute(
            "SELECT seq, key FROM loop_entries WHERE scope = ? AND kind = ? ORDER BY seq DESC",
            (scope, repeat.kind),
        ).fetchall()
        if len(rows) > width:
            db.execute(
                "DELETE FROM loop_entries WHERE scope = ? AND kind = ? AND seq <= ?",
                (scope, repeat.kind, rows[width][0]),
            )
            rows = rows[:width]
        return positions([bytes(key) for _, key in reversed(rows)], repeat.key)

    def _step(self, db: sqlite3.Connection, scope: str, streak: Streak) -> int:
        if streak.error is None:
            db.execute("DELETE FROM loop_errors WHERE scope = ? AND tool = ?", (scope, streak.tool))
            return 0
        row = db.execute(
            "SELECT error, n FROM loop_errors WHERE scope = ? AND tool = ?", (scope, streak.tool)
        ).fetchone()
        count = int(row[1]) + 1 if row is not None and bytes(row[0]) == streak.error else 1
        db.execute(
            "INSERT OR REPLACE INTO loop_errors (scope, tool, seq, error, n) VALUES (?, ?, ?, ?, ?)",
            (scope, streak.tool, _next(db, scope), streak.error, count),
        )
        self._bound(db, "loop_errors", scope)
        return count

    def _bound(self, db: sqlite3.Connection, table: str, scope: str) -> None:
        """Past `max_tools` rows of the session in `table`, drop the lowest sequence numbers."""
        db.execute(
            f"DELETE FROM {table} WHERE scope = ? AND seq NOT IN"
            f" (SELECT seq FROM {table} WHERE scope = ? ORDER BY seq DESC LIMIT ?)",
            (scope, scope, self.max_tools),
        )


def _next(db: sqlite3.Connection, scope: str) -> int:
    """The session's next sequence number (orders its entries, streaks and refused tools)."""
    (seq,) = db.execute("UPDATE loop_sessions SET seq = seq + 1 WHERE scope = ? RETURNING seq", (scope,)).fetchone()
    return int(seq)


def _forget(db: sqlite3.Connection, scopes: Sequence[str]) -> None:
    for scope in scopes:
        for table in _PARTS:
            db.execute(f"DELETE FROM {table} WHERE scope = ?", (scope,))
        db.execute("DELETE FROM loop_sessions WHERE scope = ?", (scope,))


__all__ = ["SqliteLoopHistory"]
