"""The embedded SQLite store: every call in full, written in batches, read by the CLI, UI and replay.

One `Store` object is shared by threads: each thread gets its own connection (WAL mode, so readers
never wait for the writer). Writes arrive as `Call.to_record()` dicts in batches (`write`), one
transaction per batch with `executemany`; all JSON encoding happens here, in the writer's thread,
never on the event loop. The schema is documented in `interlock/tracing/schema.py`.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from interlock.tracing.call import Call
from interlock.tracing.rows import (
    BOOL_COLUMNS,
    CHILD_TABLES,
    INSERT_ATTEMPT,
    INSERT_BODY,
    INSERT_CALL,
    INSERT_CHUNK,
    INSERT_EVENT,
    INSERT_FTS,
    LIST_COLUMNS,
    SELECT_JOINED,
    Indexer,
    Record,
    record_rows,
    rows_to_records,
    without_bodies,
)
from interlock.tracing.schema import SCHEMA_VERSION, SchemaError, StoreError, migrate, schema_version
from interlock.tracing.text import record_texts
from interlock.tracing.transfer import copy_calls

if TYPE_CHECKING:
    import sqlite_utils

log = logging.getLogger("interlock.store")

#: Bodies of a few KB fill 4 KB pages (SQLite's default) about half; larger pages pack them.
#: Measured with 2 KB requests: 10.5 KB per call on disk with 4 KB pages, 6.8 KB with 16 KB. Only a new file.
PAGE_SIZE = 16384


#: Records turned into rows between two pauses that let the event loop thread have the GIL.
YIELD_EVERY = 16


def _connect(path: str, readonly: bool) -> sqlite3.Connection:
    # URI filenames also let `_copy_calls` ATTACH another file read-only.
    uri = f"file:{quote(path)}" + ("?mode=ro" if readonly else "")
    conn = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False, isolation_level=None)
    try:
        if not readonly:
            # Only takes effect on a new file, and only before WAL mode: lets retention give space
            # back to the disk (`prune` → incremental_vacuum).
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("PRAGMA journal_mode = WAL")
            # With WAL, NORMAL survives a crash of the process (kill -9) without losing committed
            # transactions; only a power loss may drop the last ones. FULL would cost an fsync per batch.
            conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA busy_timeout = 30000")
    except sqlite3.Error:
        conn.close()
        raise
    return conn


class Store:
    """The SQLite store at `path` (created and migrated unless `readonly`)."""

    def __init__(self, path: str | os.PathLike[str], readonly: bool = False) -> None:
        self.path = str(path)
        self.readonly = readonly
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        if readonly:
            if not Path(self.path).exists():
                raise StoreError(f"{self.path}: no such store")
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = self.conn
            if readonly:
                version = schema_version(conn)
                if version == 0 or version > SCHEMA_VERSION:
                    raise SchemaError(
                        f"{self.path}: schema version {version}; this interlock reads 1..{SCHEMA_VERSION}"
                    )
            else:
                migrate(conn, self.path)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StoreError(f"{self.path}: {exc}") from None
        except SchemaError:
            self.close()
            raise

    # -- connections -----------------------------------------------------------------------------

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise StoreError(f"{self.path}: the store is closed")
            conn = _connect(self.path, self.readonly)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's connection as a sqlite-utils Database (for ad-hoc queries and tools)."""
        db: sqlite_utils.Database | None = getattr(self._local, "db", None)
        if db is None:
            # Imported here: it costs ~200 ms of import time (pluggy, plugins), a seventh of startup.
            import sqlite_utils

            db = sqlite_utils.Database(self.conn, execute_plugins=False)
            self._local.db = db
        return db

    @property
    def schema_version(self) -> int:
        return schema_version(self.conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            try:
                conn.close()
            except sqlite3.Error:  # pragma: no cover - closing is best effort
                pass

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self.conn.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    # -- writing ---------------------------------------------------------------------------------

    def write(self, records: Sequence[Record], *, capture: str = "full", indexer: Indexer | None = None) -> int:
        """Write `Call.to_record()` dicts in one transaction; returns how many were new."""
        if not records:
            return 0
        index = indexer or record_texts
        calls: list[tuple[Any, ...]] = []
        bodies: list[tuple[Any, ...]] = []
        chunks: list[tuple[Any, ...]] = []
        attempts: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        texts: list[tuple[Any, ...]] = []
        for i, record in enumerate(records, 1):
            record_rows(record, capture, index, calls, bodies, chunks, attempts, events, texts)
            if i % YIELD_EVERY == 0:
                # Building rows is pure Python and holds the GIL; without a pause the event loop
                # can wait a whole switch interval (5 ms) for it. sleep(0) lets it run now.
                time.sleep(0)
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            before = conn.total_changes
            conn.executemany(INSERT_CALL, calls)
            added = conn.total_changes - before
            if added != len(calls):
                # Some ids were already there (a re-import, a retried batch): write only the new ones'
                # children, so nothing is duplicated in the full-text index.
                fresh = set(without_bodies(conn, [c[0] for c in calls]))
                bodies = [b for b in bodies if b[0] in fresh]
                chunks = [c for c in chunks if c[0] in fresh]
                attempts = [a for a in attempts if a[0] in fresh]
                events = [e for e in events if e[0] in fresh]
                texts = [t for t in texts if t[0] in fresh]
            conn.executemany(INSERT_BODY, bodies)
            conn.executemany(INSERT_CHUNK, chunks)
            conn.executemany(INSERT_ATTEMPT, attempts)
            conn.executemany(INSERT_EVENT, events)
            conn.executemany(INSERT_FTS, texts)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return added

    def add(self, call: Call, *, capture: str = "full") -> None:
        """Write one call now (tests and tools; the proxy writes through the Recorder)."""
        self.write([call.to_record()], capture=capture)

    # -- reading calls ---------------------------------------------------------------------------

    def get_record(self, call_id: str) -> Record | None:
        """The call as `Call.to_record()` gave it (minus what capture `metadata` left out)."""
        rows = self._query(f"{SELECT_JOINED} WHERE c.id = ?", (call_id,))
        return rows_to_records(self.conn, rows)[0] if rows else None

    def get_call(self, call_id: str) -> Call | None:
        """The full Call, or None if no call has this id."""
        record = self.get_record(call_id)
        return None if record is None else Call.from_record(record)

    def response_message(self, call_id: str) -> Any:
        """A streamed response reassembled into one message (JSON), or None."""
        row = self.conn.execute("SELECT response_message FROM bodies WHERE call_id = ?", (call_id,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def iter_calls(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        session: str | None = None,
        agent: str | None = None,
        route: str | None = None,
    ) -> Iterator[Call]:
        """Full calls matching the filters, oldest first (read in pages, so memory stays flat)."""
        where, params = _where("c.", since=since, until=until, session=session, agent=agent, route=route)
        last: tuple[float, int] = (float("-inf"), -1)
        while True:
            page_where = [*where, "(c.started_at > ? OR (c.started_at = ? AND c.seq > ?))"]
            rows = self._query(
                f"{SELECT_JOINED} WHERE {' AND '.join(page_where)} ORDER BY c.started_at, c.seq LIMIT 200",
                (*params, last[0], last[0], last[1]),
            )
            if not rows:
                return
            for record in rows_to_records(self.conn, rows):
                yield Call.from_record(record)
            last = (rows[-1]["started_at"], rows[-1]["seq"])

    def list_calls(
        self,
        *,
        session: str | None = None,
        agent: str | None = None,
        route: str | None = None,
        outcome: str | None = None,
        model: str | None = None,
        trace_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        q: str | None = None,
        limit: int = 50,
        before: str | None = None,
        after: str | None = None,
    ) -> list[dict[str, Any]]:
        """Narrow rows, newest first; page with `before=<last id>`. With `after`, oldest first (for tail)."""
        where, params = _where(
            session=session,
            agent=agent,
            route=route,
            outcome=outcome,
            model=model,
            trace_id=trace_id,
            since=since,
            until=until,
        )
        if before is not None:
            where.append("id < ?")
            params.append(before)
        if after is not None:
            where.append("id > ?")
            params.append(after)
        if q:
            where.append("seq IN (SELECT rowid FROM calls_fts WHERE calls_fts MATCH ?)")
            params.append(fts_query(q))
        order = "ASC" if after is not None and before is None else "DESC"
        sql = f"SELECT {', '.join(LIST_COLUMNS)} FROM calls WHERE {' AND '.join(where)} ORDER BY id {order} LIMIT ?"
        try:
            rows = self._query(sql, (*params, max(0, int(limit))))
        except sqlite3.OperationalError as exc:
            # FTS5 reports bad syntax as "fts5: syntax error", "unterminated string", "no such column"...
            if q and "locked" not in str(exc):
                raise StoreError(f"bad search query {q!r}: {exc}") from None
            raise
        for row in rows:
            for key in BOOL_COLUMNS:
                row[key] = bool(row[key])
        return rows

    def call_row(self, call_id: str) -> dict[str, Any] | None:
        """The narrow row of one call."""
        rows = self._query(f"SELECT {', '.join(LIST_COLUMNS)} FROM calls WHERE id = ?", (call_id,))
        for row in rows:
            for key in BOOL_COLUMNS:
                row[key] = bool(row[key])
        return rows[0] if rows else None

    def resolve_id(self, prefix: str) -> str | None:
        """The id that starts with `prefix`, if exactly one does."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self.conn.execute(
            "SELECT id FROM calls WHERE id LIKE ? ESCAPE '\\' LIMIT 2", (escaped + "%",)
        ).fetchall()
        return str(rows[0][0]) if len(rows) == 1 else None

    def written_since(self, seq: int | None, *, limit: int = 500) -> tuple[list[dict[str, Any]], int]:
        """Calls written after write position `seq` (None: only learn the current position), in the
        order they were written, and the new position. Follows the store the way `tail -f` follows a
        file: a long call that started earlier still shows up when it is written."""
        if seq is None:
            row = self.conn.execute("SELECT max(seq) FROM calls").fetchone()
            return [], int(row[0] or 0)
        rows = self._query(
            f"SELECT seq, {', '.join(LIST_COLUMNS)} FROM calls WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
        )
        for row in rows:
            seq = max(seq, int(row.pop("seq")))
            for key in BOOL_COLUMNS:
                row[key] = bool(row[key])
        return rows, seq

    def count_calls(self, **filters: Any) -> int:
        where, params = _where(**filters)
        return int(self.conn.execute(f"SELECT count(*) FROM calls WHERE {' AND '.join(where)}", params).fetchone()[0])

    def sessions(
        self,
        *,
        agent: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Sessions (calls sharing a session id), most recently active first, with their agents."""
        where, params = _where(since=since, until=until)
        where.append("session IS NOT NULL")
        having = ""
        if agent is not None:
            having = "HAVING sum(agent = ?) > 0"
            params.append(agent)
        sql = (
            f"SELECT {_SESSION_COLUMNS} FROM calls WHERE {' AND '.join(where)} GROUP BY session {having}"
            " ORDER BY last_at DESC LIMIT ? OFFSET ?"
        )
        return [_session_row(r) for r in self._query(sql, (*params, max(0, int(limit)), max(0, int(offset))))]

    def session(self, session: str, *, limit: int = 1000) -> dict[str, Any] | None:
        """One session's summary and its calls (narrow rows, oldest first)."""
        rows = self._query(f"SELECT {_SESSION_COLUMNS} FROM calls WHERE session = ? GROUP BY session", (session,))
        if not rows:
            return None
        summary = _session_row(rows[0])
        calls = self._query(
            f"SELECT {', '.join(LIST_COLUMNS)} FROM calls WHERE session = ? ORDER BY id LIMIT ?", (session, limit)
        )
        for row in calls:
            for key in BOOL_COLUMNS:
                row[key] = bool(row[key])
        summary["calls"] = calls
        return summary

    def agents(self) -> list[dict[str, Any]]:
        """Every agent seen, with its call count, sessions and last activity."""
        return self._query(
            "SELECT agent, count(*) AS calls, count(DISTINCT session) AS sessions, max(started_at) AS last_at,"
            " sum(outcome != 'ok') AS problems FROM calls GROUP BY agent ORDER BY last_at DESC"
        )

    def stats(self) -> dict[str, Any]:
        """Counts by outcome, and the file's size."""
        outcomes = {o: n for o, n in self.conn.execute("SELECT outcome, count(*) FROM calls GROUP BY outcome")}
        page_size, pages, free = (
            self.conn.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_size", "page_count", "freelist_count")
        )
        return {
            "calls": sum(outcomes.values()),
            "outcomes": outcomes,
            "sessions": self.conn.execute("SELECT count(DISTINCT session) FROM calls").fetchone()[0],
            "oldest": self.conn.execute("SELECT min(started_at) FROM calls").fetchone()[0],
            "newest": self.conn.execute("SELECT max(started_at) FROM calls").fetchone()[0],
            "bytes": page_size * pages,
            "bytes_used": page_size * (pages - free),
            "schema_version": self.schema_version,
        }

    # -- retention -------------------------------------------------------------------------------

    def used_bytes(self) -> int:
        page_size, pages, free = (
            self.conn.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_size", "page_count", "freelist_count")
        )
        return int(page_size * (pages - free))

    def prune(
        self, *, max_age: float | None = None, max_size: int | None = None, now: float | None = None, chunk: int = 500
    ) -> int:
        """Delete calls older than `max_age` seconds, then the oldest while the store is over `max_size`
        bytes. Deletes in small transactions so the writer is never held up for long. Returns the count."""
        removed = 0
        if max_age is not None:
            cutoff = (time.time() if now is None else now) - max_age
            while True:
                ids = [
                    r[0]
                    for r in self.conn.execute(
                        "SELECT id FROM calls WHERE started_at < ? ORDER BY started_at LIMIT ?", (cutoff, chunk)
                    )
                ]
                if not ids:
                    break
                removed += self.delete(ids)
        if max_size is not None:
            while self.used_bytes() > max_size:
                total = self.conn.execute("SELECT count(*) FROM calls").fetchone()[0]
                if not total:
                    break
                # Remove a share proportional to the excess, so a large overshoot takes few passes.
                excess = 1 - max_size / max(1, self.used_bytes())
                count = max(1, min(chunk, int(total * excess) + 1))
                ids = [r[0] for r in self.conn.execute("SELECT id FROM calls ORDER BY seq LIMIT ?", (count,))]
                removed += self.delete(ids)
        if removed:
            # Give the freed pages back to the disk (the file shrinks at the next checkpoint).
            self.conn.executescript("PRAGMA incremental_vacuum;")  # execute() would free one page per call
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return removed

    def delete(self, ids: Sequence[str]) -> int:
        """Delete these calls and everything recorded with them, in one transaction."""
        if not ids:
            return 0
        conn = self.conn
        marks = ", ".join("?" * len(ids))
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(f"DELETE FROM calls_fts WHERE rowid IN (SELECT seq FROM calls WHERE id IN ({marks}))", ids)
            for table in CHILD_TABLES:
                conn.execute(f"DELETE FROM {table} WHERE call_id IN ({marks})", ids)
            count = conn.execute(f"DELETE FROM calls WHERE id IN ({marks})", ids).rowcount
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return int(count)

    # -- moving calls between files --------------------------------------------------------------

    def export(
        self,
        dest_path: str | os.PathLike[str],
        *,
        session: str | None = None,
        since: float | None = None,
        until: float | None = None,
        agent: str | None = None,
    ) -> int:
        """Write the matching calls to a new self-contained SQLite file (same schema, no WAL file
        beside it), replacing `dest_path` atomically. Returns how many calls it holds."""
        dest = Path(dest_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        os.unlink(tmp)
        try:
            with Store(tmp) as out:
                where, params = _where(session=session, since=since, until=until, agent=agent, prefix="s.")
                count = copy_calls(out.conn, self.path, " AND ".join(where), params)
                out.conn.executescript("PRAGMA incremental_vacuum;")  # execute() would free one page per call
                out.conn.execute("PRAGMA journal_mode = DELETE")
            os.replace(tmp, dest)
        finally:
            for leftover in (tmp, tmp + "-wal", tmp + "-shm", tmp + "-journal"):
                if os.path.exists(leftover):
                    os.unlink(leftover)
        return count

    def import_from(self, path: str | os.PathLike[str]) -> int:
        """Add the calls of another store file (an export, a bundle); ids already here are skipped."""
        source = str(path)
        if not Path(source).exists():
            raise StoreError(f"{source}: no such store")
        with Store(source, readonly=True) as check:
            _ = check.schema_version
        return copy_calls(self.conn, source, "1", [])


_SESSION_COLUMNS = (
    "session, min(started_at) AS first_at, max(started_at) AS last_at, count(*) AS calls,"
    " group_concat(DISTINCT agent) AS agents, group_concat(DISTINCT model) AS models,"
    " sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,"
    " sum(outcome != 'ok') AS problems, sum(duration_ms) AS duration_ms"
)


def _session_row(row: dict[str, Any]) -> dict[str, Any]:
    row["agents"] = sorted((row["agents"] or "").split(",")) if row["agents"] else []
    row["models"] = sorted((row["models"] or "").split(",")) if row["models"] else []
    row["agent"] = row["agents"][0] if len(row["agents"]) == 1 else None
    return row


def _where(prefix: str = "", **filters: Any) -> tuple[list[str], list[Any]]:
    where: list[str] = ["1"]
    params: list[Any] = []
    for key, value in filters.items():
        if value is None:
            continue
        if key == "since":
            where.append(f"{prefix}started_at >= ?")
        elif key == "until":
            where.append(f"{prefix}started_at < ?")
        else:
            where.append(f"{prefix}{key} = ?")
        params.append(value)
    return where, params


def fts_query(q: str) -> str:
    """A search box string as an FTS5 query: plain words are matched as words (all of them), so
    punctuation never makes a syntax error; a query using FTS5 syntax (quotes, AND/OR/NOT, NEAR,
    `*`, column filters) is passed through."""
    if any(ch in q for ch in '"*:^()') or any(w in q.split() for w in ("AND", "OR", "NOT", "NEAR")):
        return q
    return " ".join('"' + word.replace('"', '""') + '"' for word in q.split())


__all__ = ["Store", "StoreError", "LIST_COLUMNS", "fts_query"]
