"""The embedded SQLite store: every call in full, written in batches, read by the CLI, UI and replay.

One `Store` object is shared by threads: each thread gets its own connection (WAL mode, so readers
never wait for the writer). Writes arrive as `Call.to_record()` dicts in batches (`write`), one
transaction per batch with `executemany`; all JSON encoding happens here, in the writer's thread,
never on the event loop. The schema is documented in `interlock/tracing/schema.py`.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlite_utils

from interlock.tracing.call import Call, public_headers
from interlock.tracing.schema import SCHEMA_VERSION, SchemaError, migrate, schema_version
from interlock.tracing.text import record_texts

log = logging.getLogger("interlock.store")

Record = dict[str, Any]
#: (request text, response text, reassembled response message or None) for one record.
Indexer = Callable[[Record], tuple[str, str, Any]]

#: Columns of `calls` that list views get (`list_calls`); everything but `seq`, `meta` and `query`.
LIST_COLUMNS = (
    "id",
    "trace_id",
    "span_id",
    "session",
    "agent",
    "route",
    "protocol",
    "method",
    "path",
    "model",
    "stream",
    "status",
    "outcome",
    "error_code",
    "error",
    "started_at",
    "ttfb_ms",
    "duration_ms",
    "input_tokens",
    "output_tokens",
    "attempt_count",
    "upstream",
    "truncated",
    "capture",
    "size",
)

_CALL_COLUMNS = (
    *LIST_COLUMNS[:10],
    "query",
    *LIST_COLUMNS[10:],
    "parent_span_id",
    "meta",
)
_BOOL_COLUMNS = ("stream", "truncated")
# to_record keys that have a home in the schema; anything else goes to `bodies.extra`.
_KNOWN_KEYS = frozenset(
    {
        *_CALL_COLUMNS,
        "request_headers",
        "response_headers",
        "request_body",
        "upstream_body",
        "response_body",
        "agent_response_body",
        "chunks",
        "agent_chunks",
        "decisions",
        "findings",
        "attempts",
    }
)
_BODY_COLUMNS = ("request_body", "upstream_body", "response_body", "agent_response_body")

_INSERT_CALL = (
    f"INSERT OR IGNORE INTO calls ({', '.join(_CALL_COLUMNS)}) VALUES ({', '.join('?' * len(_CALL_COLUMNS))})"
)
_INSERT_BODY = (
    "INSERT OR IGNORE INTO bodies (call_id, request_headers, response_headers, request_body, upstream_body,"
    " response_body, agent_response_body, agent_chunks, response_message, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_CHUNK = "INSERT OR IGNORE INTO chunks (call_id, side, seq, t_ms, data) VALUES (?, ?, ?, ?, ?)"
_INSERT_ATTEMPT = (
    "INSERT OR IGNORE INTO attempts (call_id, seq, upstream, url, model, started_ms, duration_ms, ttfb_ms, status,"
    " error, backoff_ms, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_EVENT = (
    "INSERT OR IGNORE INTO events (call_id, seq, kind, stage, action, name, data) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_FTS = "INSERT INTO calls_fts (rowid, request, response) VALUES ((SELECT seq FROM calls WHERE id = ?), ?, ?)"
_CHILD_TABLES = ("bodies", "chunks", "attempts", "events")


class StoreError(Exception):
    """The store cannot do what was asked (bad query, unreadable file)."""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_encode_extra)


def _encode_extra(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    raise TypeError(f"{type(value).__name__} is not JSON-able")


def _decode_extra(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and "$bytes" in value:
            return base64.b64decode(value["$bytes"])
        return {k: _decode_extra(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_extra(v) for v in value]
    return value


def _connect(path: str, readonly: bool) -> sqlite3.Connection:
    # URI filenames also let `_copy_calls` ATTACH another file read-only.
    uri = f"file:{quote(path)}" + ("?mode=ro" if readonly else "")
    conn = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False, isolation_level=None)
    try:
        if not readonly:
            # Only takes effect on a new file, and only before WAL mode: lets retention give space
            # back to the disk (`prune` → incremental_vacuum).
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
        for record in records:
            _rows(record, capture, index, calls, bodies, chunks, attempts, events, texts)
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            before = conn.total_changes
            conn.executemany(_INSERT_CALL, calls)
            added = conn.total_changes - before
            if added != len(calls):
                # Some ids were already there (a re-import, a retried batch): write only the new ones'
                # children, so nothing is duplicated in the full-text index.
                fresh = set(_without_bodies(conn, [c[0] for c in calls]))
                bodies = [b for b in bodies if b[0] in fresh]
                chunks = [c for c in chunks if c[0] in fresh]
                attempts = [a for a in attempts if a[0] in fresh]
                events = [e for e in events if e[0] in fresh]
                texts = [t for t in texts if t[0] in fresh]
            conn.executemany(_INSERT_BODY, bodies)
            conn.executemany(_INSERT_CHUNK, chunks)
            conn.executemany(_INSERT_ATTEMPT, attempts)
            conn.executemany(_INSERT_EVENT, events)
            conn.executemany(_INSERT_FTS, texts)
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
        rows = self._query(
            "SELECT c.*, b.request_headers, b.response_headers, b.request_body, b.upstream_body, b.response_body,"
            " b.agent_response_body, b.agent_chunks AS has_agent_chunks, b.extra"
            " FROM calls c LEFT JOIN bodies b ON b.call_id = c.id WHERE c.id = ?",
            (call_id,),
        )
        if not rows:
            return None
        return self._record(rows[0])

    def _record(self, row: dict[str, Any]) -> Record:
        call_id = row["id"]
        record: Record = {k: row[k] for k in _CALL_COLUMNS if k not in ("meta",)}
        for key in _BOOL_COLUMNS:
            record[key] = bool(record[key])
        record["meta"] = json.loads(row["meta"]) if row["meta"] else {}
        record["request_headers"] = [tuple(h) for h in json.loads(row["request_headers"] or "[]")]
        record["response_headers"] = [tuple(h) for h in json.loads(row["response_headers"] or "[]")]
        for key in _BODY_COLUMNS:
            record[key] = row[key]
        if record["request_body"] is None:
            record["request_body"] = b""
        sides: dict[int, list[tuple[float, bytes]]] = {0: [], 1: []}
        for side, t_ms, data in self.conn.execute(
            "SELECT side, t_ms, data FROM chunks WHERE call_id = ? ORDER BY side, seq", (call_id,)
        ):
            sides[side].append((t_ms, data))
        record["chunks"] = sides[0]
        record["agent_chunks"] = sides[1] if row["has_agent_chunks"] else None
        record["attempts"] = [
            json.loads(data)
            for (data,) in self.conn.execute("SELECT data FROM attempts WHERE call_id = ? ORDER BY seq", (call_id,))
        ]
        record["decisions"], record["findings"] = [], []
        for kind, data in self.conn.execute("SELECT kind, data FROM events WHERE call_id = ? ORDER BY seq", (call_id,)):
            record["decisions" if kind == "decision" else "findings"].append(json.loads(data))
        if row["extra"]:
            record.update(_decode_extra(json.loads(row["extra"])))
        for key in ("capture", "size", "attempt_count"):
            record.pop(key, None)
        return record

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
        where, params = _where(since=since, until=until, session=session, agent=agent, route=route)
        last: tuple[float, int] = (float("-inf"), -1)
        while True:
            page_where = [*where, "(started_at > ? OR (started_at = ? AND seq > ?))"]
            rows = self.conn.execute(
                f"SELECT started_at, seq, id FROM calls WHERE {' AND '.join(page_where)}"
                " ORDER BY started_at, seq LIMIT 200",
                (*params, last[0], last[0], last[1]),
            ).fetchall()
            if not rows:
                return
            for started_at, seq, call_id in rows:
                call = self.get_call(call_id)
                if call is not None:
                    yield call
                last = (started_at, seq)

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
            for key in _BOOL_COLUMNS:
                row[key] = bool(row[key])
        return rows

    def call_row(self, call_id: str) -> dict[str, Any] | None:
        """The narrow row of one call."""
        rows = self._query(f"SELECT {', '.join(LIST_COLUMNS)} FROM calls WHERE id = ?", (call_id,))
        for row in rows:
            for key in _BOOL_COLUMNS:
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
            for key in _BOOL_COLUMNS:
                row[key] = bool(row[key])
        return rows, seq

    def count_calls(self, **filters: Any) -> int:
        where, params = _where(**filters)
        return int(self.conn.execute(f"SELECT count(*) FROM calls WHERE {' AND '.join(where)}", params).fetchone()[0])

    def last_id(self) -> str | None:
        row = self.conn.execute("SELECT max(id) FROM calls").fetchone()
        return row[0] if row else None

    # -- sessions and agents ---------------------------------------------------------------------

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
            for key in _BOOL_COLUMNS:
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
            for table in _CHILD_TABLES:
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
                count = _copy_calls(out.conn, self.path, " AND ".join(where), params)
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
        return _copy_calls(self.conn, source, "1", [])


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


def _without_bodies(conn: sqlite3.Connection, ids: Sequence[str]) -> list[str]:
    """Of `ids`, those whose calls row has no bodies row yet (i.e. inserted by this transaction)."""
    found: list[str] = []
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        marks = ", ".join("?" * len(part))
        found += [
            r[0]
            for r in conn.execute(
                f"SELECT id FROM calls WHERE id IN ({marks}) AND id NOT IN (SELECT call_id FROM bodies WHERE call_id IN ({marks}))",
                (*part, *part),
            )
        ]
    return found


def _where(prefix: str = "", **filters: Any) -> tuple[list[str], list[Any]]:
    where, params = ["1"], []
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


def _rows(
    record: Record,
    capture: str,
    index: Indexer,
    calls: list[tuple[Any, ...]],
    bodies: list[tuple[Any, ...]],
    chunks: list[tuple[Any, ...]],
    attempts: list[tuple[Any, ...]],
    events: list[tuple[Any, ...]],
    texts: list[tuple[Any, ...]],
) -> None:
    call_id = record["id"]
    full = capture == "full"
    upstream_chunks = record.get("chunks") or []
    agent_chunks = record.get("agent_chunks")
    size = 0
    if full:
        size = sum(len(record.get(k) or b"") for k in _BODY_COLUMNS)
        size += sum(len(d) for _, d in upstream_chunks) + sum(len(d) for _, d in agent_chunks or [])
    row = dict(record)
    row["meta"] = _dumps(record.get("meta") or {})
    row["attempt_count"] = len(record.get("attempts") or [])
    row["capture"] = "full" if full else "metadata"
    row["size"] = size
    row["stream"] = 1 if record.get("stream") else 0
    row["truncated"] = 1 if record.get("truncated") else 0
    row.setdefault("query", "")
    calls.append(tuple(row.get(k) for k in _CALL_COLUMNS))
    extra = {k: v for k, v in record.items() if k not in _KNOWN_KEYS}
    message = None
    if full:
        request_text, response_text, message = index(record)
        texts.append((call_id, request_text, response_text))
        for side, pieces in ((0, upstream_chunks), (1, agent_chunks or [])):
            for seq, (t_ms, data) in enumerate(pieces):
                chunks.append((call_id, side, seq, t_ms, data))
    bodies.append(
        (
            call_id,
            # Defence in depth: to_record already removed credentials; never let one reach the file.
            _dumps(public_headers(record.get("request_headers") or [])),
            _dumps(public_headers(record.get("response_headers") or [])),
            *((record.get(k) if full else None) for k in _BODY_COLUMNS),
            1 if full and agent_chunks is not None else 0,
            None if message is None else _dumps(message),
            _dumps(extra) if extra else None,
        )
    )
    for seq, attempt in enumerate(record.get("attempts") or []):
        attempts.append(
            (
                call_id,
                seq,
                attempt.get("upstream"),
                attempt.get("url"),
                attempt.get("model"),
                attempt.get("started_ms"),
                attempt.get("duration_ms"),
                attempt.get("ttfb_ms"),
                attempt.get("status"),
                attempt.get("error"),
                attempt.get("backoff_ms"),
                _dumps(attempt),
            )
        )
    seq = 0
    for decision in record.get("decisions") or []:
        events.append(
            (
                call_id,
                seq,
                "decision",
                decision.get("stage"),
                decision.get("action"),
                decision.get("rule"),
                _dumps(decision),
            )
        )
        seq += 1
    for finding in record.get("findings") or []:
        events.append((call_id, seq, "finding", None, finding.get("action"), finding.get("entity"), _dumps(finding)))
        seq += 1


def _copy_calls(dest: sqlite3.Connection, source_path: str, where: str, params: Sequence[Any]) -> int:
    """Copy the source's calls matching `where` (on alias `s`) into `dest`, skipping ids it has."""
    dest.execute("ATTACH DATABASE ? AS src", (f"file:{quote(source_path)}?mode=ro",))
    try:
        dest.execute("BEGIN IMMEDIATE")
        try:
            dest.execute("CREATE TEMP TABLE IF NOT EXISTS copying (id TEXT PRIMARY KEY)")
            dest.execute("DELETE FROM copying")
            dest.execute(
                f"INSERT INTO copying (id) SELECT s.id FROM src.calls s WHERE {where}"
                " AND s.id NOT IN (SELECT id FROM main.calls)",
                params,
            )
            count = dest.execute("SELECT count(*) FROM copying").fetchone()[0]
            for table in ("calls", *_CHILD_TABLES):
                key = "id" if table == "calls" else "call_id"
                columns = _common_columns(dest, table)
                if table == "calls":
                    columns = [c for c in columns if c != "seq"]
                names = ", ".join(columns)
                order = " ORDER BY s.seq" if table == "calls" else ""
                dest.execute(
                    f"INSERT INTO main.{table} ({names}) SELECT {', '.join('s.' + c for c in columns)}"
                    f" FROM src.{table} s WHERE s.{key} IN (SELECT id FROM copying){order}"
                )
            dest.execute(
                "INSERT INTO main.calls_fts (rowid, request, response) SELECT d.seq, f.request, f.response"
                " FROM src.calls_fts f JOIN src.calls s ON s.seq = f.rowid JOIN main.calls d ON d.id = s.id"
                " WHERE s.id IN (SELECT id FROM copying)"
            )
            dest.execute("DELETE FROM copying")
            dest.execute("COMMIT")
        except BaseException:
            dest.execute("ROLLBACK")
            raise
    finally:
        dest.execute("DETACH DATABASE src")
    return int(count)


def _common_columns(conn: sqlite3.Connection, table: str) -> list[str]:
    mine = [r[1] for r in conn.execute(f"PRAGMA main.table_info({table})")]
    theirs = {r[1] for r in conn.execute(f"PRAGMA src.table_info({table})")}
    return [c for c in mine if c in theirs]


__all__ = ["Store", "StoreError", "LIST_COLUMNS", "fts_query"]
