"""The PostgreSQL store: the same `Store` as the embedded SQLite one, shared by a fleet of interlocks.

`store: {url: postgresql://user@host:5432/db}` (or `INTERLOCK_STORE_URL`) selects it. The queries
are `Reads`' own (SQL both engines speak), with three dialect hooks: JSON access, the distinct-value
list of a session, and full-text search (`pg_search.py`: a `tsvector` column with a GIN index). The
schema is derived from SQLite's migrations (`pg_schema.py`) and migrated at startup under an
advisory lock; `interlock store migrate` does the same on demand.

Connections come from a psycopg pool (`store.pool_size`), each in autocommit, borrowed per query:
reads run in worker threads, writes in the recorder's writer thread, never on the event loop. A
batch is one transaction of multi-row INSERTs (`ON CONFLICT DO NOTHING`: a retried batch adds
nothing). The `calls` rows of a batch are inserted last, under a transaction-level advisory lock,
so the `seq` identity is handed out in commit order across replicas: `written_since(seq)` (the
UI's live view) can then never step over a row another replica commits a moment later.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from itertools import chain
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from interlock.config import mask_url_password
from interlock.core.call import Call
from interlock.tracing import store_chain
from interlock.tracing.audit_reads import AuditReads
from interlock.tracing.chain import DEFAULT_WRITER, Report
from interlock.tracing.pg_reconnects import install as install_reconnect_log
from interlock.tracing.pg_reconnects import pool_name
from interlock.tracing.pg_schema import (
    DOC,
    MIGRATE_LOCK,
    MIGRATIONS_TABLE,
    WRITE_LOCK,
    check_version,
    statements_for,
)
from interlock.tracing.pg_search import tsquery_condition
from interlock.tracing.pins import PostgresPins
from interlock.tracing.reads import select_narrow, where_clause
from interlock.tracing.rows import (
    CHILD_TABLES,
    INSERT_ATTEMPT,
    INSERT_BODY,
    INSERT_CALL,
    INSERT_CHUNK,
    INSERT_EVENT,
    ON_CONFLICT,
    Indexer,
    Record,
)
from interlock.tracing.schema import SCHEMA_VERSION, SchemaError, StoreError, StoreUnavailable
from interlock.tracing.stops import PostgresStops
from interlock.tracing.store import SQLiteStore, write_bundle
from interlock.tracing.text import record_texts
from interlock.tracing.workflow_reads import WorkflowReads
from interlock.tracing.writing import MAX_ROWS, Rows, row_groups

log = logging.getLogger("interlock.store")

#: Seconds the search indexer waits when it has caught up (what search may lag behind writes, at most
#: about this plus the time to index a backlog; search finds unindexed calls anyway, more slowly).
INDEX_IDLE_SECONDS = 0.5

#: The full-text rows (`Rows.texts`: call id, request text, response text) as PostgreSQL takes them.
INSERT_TEXT = "INSERT OR IGNORE INTO calls_fts (call_id, request, response) VALUES (?, ?, ?)"
#: `Rows.lists()` after `calls`, in order, with the statement of each (a new list fails loudly here).
_CHILD_INSERTS = (INSERT_BODY, INSERT_CHUNK, INSERT_ATTEMPT, INSERT_EVENT, INSERT_TEXT)
#: PostgreSQL caps the parameters of one statement at 65,535.
_MAX_PARAMS = 65535


@lru_cache(maxsize=512)
def pg_sql(sql: str) -> str:
    """A statement in `?` parameters as psycopg takes it (`%s`; a literal `%` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


@lru_cache(maxsize=256)
def _pg_insert(single: str, rows: int) -> str:
    """SQLite's one-row insert that skips conflicts (`ON_CONFLICT`, or the FTS table's `OR IGNORE`) made a PostgreSQL insert of `rows` rows that skips conflicts,
    in PostgreSQL's own `$n` parameters (for a `RawCursor`, below)."""
    head, _, group = single.partition(" VALUES ")
    width = group.removesuffix(ON_CONFLICT).count("?")
    groups = ", ".join("(" + ", ".join(f"${row * width + i + 1}" for i in range(width)) + ")" for row in range(rows))
    return f"{head.replace('INSERT OR IGNORE INTO', 'INSERT INTO')} VALUES {groups} ON CONFLICT DO NOTHING"


class PostgresStore(WorkflowReads, PostgresPins, PostgresStops, AuditReads):
    """A store in the PostgreSQL database at `url`; implements `interlock.tracing.backend.Store`."""

    _select_narrow = select_narrow("(meta::jsonb #>> '{{mcp,{key}}}')")
    _concat = "string_agg(DISTINCT {column}, ',')"

    def __init__(
        self,
        url: str,
        *,
        readonly: bool = False,
        pool_size: int = 8,
        connect_timeout: float = 5.0,
        writer: str = DEFAULT_WRITER,
    ) -> None:
        self.url = url
        #: Whose tamper-evident chain this store's writes extend (`store.writer`: one per replica).
        self.writer = writer
        self.path = mask_url_password(url)  # for messages, `stats` and `/api/stats`: no credential
        self.readonly = readonly
        self.connect_timeout = connect_timeout
        kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": max(1, math.ceil(connect_timeout))}
        if readonly:
            # A reader (the CLI, `store query`) cannot write, whatever its SQL says.
            kwargs["options"] = "-c default_transaction_read_only=on"
        self._kwargs = kwargs
        #: The schema version the database had when this store opened it (before migrating it).
        self.found_version = SCHEMA_VERSION
        try:
            # One direct connection first: its error says why (a pool only says it timed out).
            with psycopg.connect(url, **kwargs) as conn:
                if readonly:
                    version = self._version(conn)
                    if version == 0:
                        raise SchemaError(
                            f"{self.path}: not an interlock store (no schema; run `interlock store migrate`)"
                        )
                    check_version(version, self.path)
                else:
                    self.found_version = migrate(conn, self.path)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"{self.path}: {_reason(exc)}") from None
        # Its failed reconnects during an outage are logged bounded (pg_reconnects.py).
        self.pool_name, self._reconnects = pool_name(), install_reconnect_log()
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max(1, pool_size),
            kwargs=kwargs,
            timeout=connect_timeout,
            open=False,
            # A connection broken by a server restart is noticed when borrowed, not by a failed query.
            check=ConnectionPool.check_connection,
            name=self.pool_name,
        )
        self.pool.open(wait=False)
        self._closing = threading.Event()
        self._indexer: threading.Thread | None = None
        if not readonly:
            self._indexer = threading.Thread(target=self._run_indexer, name="interlock-search-index", daemon=True)
            self._indexer.start()

    # -- connections -----------------------------------------------------------------------------

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection (autocommit), else a direct one; the server unreachable is a
        `StoreUnavailable`.

        Why the direct one: after an outage the pool reconnects with its own backoff (1 s doubling,
        measured: a 12 s outage was over 47 s before the pool had a connection again), and the
        recorder's retries (faults.py, 5 s at most apart) must see the database as soon as it is
        back. A pool that is only busy costs one short wait and one extra connection."""
        try:
            conn = self.pool.getconn(timeout=min(1.0, self.connect_timeout))
            pooled = True
        except PoolTimeout:
            try:
                conn = psycopg.connect(self.url, **self._kwargs)
            except psycopg.OperationalError as exc:
                raise StoreUnavailable(f"{self.path}: {_reason(exc)}") from None
            pooled = False
        self._reconnects.connected(self.pool_name)
        try:
            yield conn
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"{self.path}: {_reason(exc)}") from None
        finally:
            if pooled:
                self.pool.putconn(conn)  # a broken one is discarded by the pool
            else:
                conn.close()

    @staticmethod
    def _version(conn: psycopg.Connection[Any]) -> int:
        found = conn.execute("SELECT to_regclass('interlock_migrations') IS NOT NULL").fetchone()
        if not found or not found[0]:
            return 0
        row = conn.execute("SELECT max(version) FROM interlock_migrations").fetchone()
        return int(row[0] or 0) if row else 0

    @property
    def schema_version(self) -> int:
        with self.connection() as conn:
            return self._version(conn)

    def close(self) -> None:
        self._closing.set()
        if self._indexer is not None:
            self._indexer.join(10)
        self.pool.close()
        self._reconnects.forget(self.pool_name)

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- the dialect -----------------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self.connection() as conn:
            cursor = conn.execute(pg_sql(sql), list(params))
            names = [d.name for d in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.connection() as conn:
            return conn.execute(pg_sql(sql), list(params)).fetchall()

    def fts_condition(self, q: str) -> tuple[str, list[Any]]:
        # Indexed documents through the GIN index; the few the indexer has not reached yet computed here.
        match, params = tsquery_condition(q)
        return (
            f"id IN (SELECT call_id FROM calls_fts WHERE doc @@ ({match})"
            f" UNION ALL SELECT call_id FROM calls_fts WHERE doc IS NULL AND {DOC} @@ ({match}))",
            [*params, *params],
        )

    def index_pending(self, limit: int = 256) -> int:
        """Compute the search document of up to `limit` calls written without one; how many. Replicas
        share the work (`SKIP LOCKED`)."""
        with self.connection() as conn:
            cursor = conn.execute(
                f"UPDATE calls_fts SET doc = {DOC} WHERE call_id IN (SELECT call_id FROM calls_fts"
                " WHERE doc IS NULL LIMIT %s FOR UPDATE SKIP LOCKED)",
                (limit,),
            )
            return max(0, cursor.rowcount)

    def _run_indexer(self) -> None:
        while not self._closing.is_set():
            try:
                done = self.index_pending()
            except Exception as exc:  # noqa: BLE001 - an outage: the recorder reports it; retried
                log.debug("search indexing: %s", exc)
                done = 0
            if done < 256:
                self._closing.wait(INDEX_IDLE_SECONDS)

    _texts_join = "LEFT JOIN calls_fts f ON f.call_id = c.id"

    def storage(self) -> dict[str, Any]:
        tables = ", ".join(f"'{t}'" for t in ("calls", *CHILD_TABLES, "calls_fts"))
        (size,) = self.rows(
            f"SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c WHERE relname IN ({tables}) AND relkind = 'r' AND pg_table_is_visible(c.oid)"
        )[0:1][0]
        return {"bytes": int(size), "bytes_used": self.used_bytes(), "schema_version": self.schema_version}

    # -- writing ---------------------------------------------------------------------------------

    def write(self, records: Sequence[Record], *, capture: str = "full", indexer: Indexer | None = None) -> int:
        """Write `Call.to_record()` dicts in one transaction; returns how many were new."""

        rows = Rows()
        for record in records:
            rows.add_record(record, capture, indexer or record_texts)
        return self.write_rows(rows)

    def add(self, call: Call, *, capture: str = "full") -> None:
        self.write([call.to_record()], capture=capture)

    def write_rows(self, rows: Rows) -> int:
        """A batch's rows in one transaction; returns how many calls were new. Children first (they
        skip what is stored), then the `calls` rows under the write lock, then the commit."""
        calls, *children = rows.lists()
        if not calls:
            return 0
        texts = children[-1]
        for i, (call_id, request, response) in enumerate(texts):
            texts[i] = (call_id, _storable(request), _storable(response))
        digests = list(zip((c[0] for c in calls), rows.digests, strict=True))
        with self.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            for single, table_rows in zip(_CHILD_INSERTS, children, strict=True):
                _insert(cursor, single, table_rows)
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            # Under the lock no other writer adds calls or links: the ids stored already are not
            # linked again, and the head read here is the head the new links follow.
            run = _run(cursor)
            stored = {r[0] for r in run("SELECT id FROM calls WHERE id = ANY(?)", ([d[0] for d in digests],))}
            added = _insert(cursor, INSERT_CALL, calls)
            fresh = [d for d in digests if d[0] not in stored]
            _insert(cursor, store_chain.INSERT_LINK, store_chain.new_links(run, self.writer, fresh))
            return added

    def write_chunks(self, rows: Rows) -> None:
        """A large call's chunks, in one transaction of their own (the recorder writes them in pieces)."""
        with self.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            _insert(cursor, INSERT_CHUNK, rows.chunks)

    def file_problem(self) -> str | None:
        """Nothing to check: a database does not vanish from under an open connection unnoticed."""
        return None

    def reopen(self) -> None:  # pragma: no cover - file_problem is always None here
        pass

    def migrate(self) -> tuple[int, int]:
        """Bring the database to this interlock's schema (opening it already did); (before, after)."""
        with self.connection() as conn:
            migrate(conn, self.path)
        return self.found_version, SCHEMA_VERSION

    # -- retention -------------------------------------------------------------------------------

    def used_bytes(self) -> int:
        """The bytes of bodies and chunks recorded (`calls.size` summed): what `store.max_size`
        bounds here. PostgreSQL reuses the space of deleted rows after VACUUM (autovacuum) rather
        than giving it back, so its on-disk size (`stats()["bytes"]`) cannot be what retention steers by."""
        return int(self.rows("SELECT coalesce(sum(size), 0) FROM calls")[0][0])

    def prune(
        self, *, max_age: float | None = None, max_size: int | None = None, now: float | None = None, chunk: int = 500
    ) -> int:
        removed = 0
        if max_age is not None:
            cutoff = (time.time() if now is None else now) - max_age
            while ids := [
                r[0]
                for r in self.rows(
                    "SELECT id FROM calls WHERE started_at < ? ORDER BY started_at LIMIT ?", (cutoff, chunk)
                )
            ]:
                removed += self.delete(ids)
        if max_size is not None:
            while (used := self.used_bytes()) > max_size:
                total = int(self.rows("SELECT count(*) FROM calls")[0][0])
                if not total:
                    break
                count = max(1, min(chunk, int(total * (1 - max_size / max(1, used))) + 1))
                ids = [r[0] for r in self.rows("SELECT id FROM calls ORDER BY seq LIMIT ?", (count,))]
                removed += self.delete(ids)
        return removed

    def delete(self, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        with self.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            # The chain's links are folded under the write lock, as writers append them; taken
            # first, so a writer never waits for these rows while holding it.
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            for table in (*CHILD_TABLES, "calls_fts"):
                cursor.execute(f"DELETE FROM {table} WHERE call_id = ANY(%s)", (list(ids),))
            count = int(cursor.execute("DELETE FROM calls WHERE id = ANY(%s)", (list(ids),)).rowcount)
            store_chain.forget(_run(cursor), ids)
            return count

    # -- tamper evidence -------------------------------------------------------------------------

    def verify_chain(self, anchors: Mapping[str, Mapping[int, str]] | None = None) -> Report:
        """`store_chain.verify` in one REPEATABLE READ transaction (a snapshot; writers go on)."""
        with self.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            return store_chain.verify(_run(cursor), anchors)

    def chain_heads(self) -> list[dict[str, Any]]:
        with self.connection() as conn, conn.cursor() as cursor:
            return store_chain.heads(_run(cursor))

    # -- moving calls ----------------------------------------------------------------------------

    def export(
        self,
        dest_path: str | os.PathLike[str],
        *,
        session: str | None = None,
        since: float | None = None,
        until: float | None = None,
        agent: str | None = None,
        workflow: str | None = None,
    ) -> int:
        """The matching calls in a new SQLite bundle (replay needs no server)."""
        where, params = where_clause("c.", session=session, since=since, until=until, agent=agent, workflow=workflow)

        def fill(out: SQLiteStore) -> int:
            return sum(out.write_rows(rows) for rows in self.record_pages(where, params))

        return write_bundle(dest_path, fill)

    def import_from(self, path: str | os.PathLike[str]) -> int:
        """Add the calls of a bundle (or any SQLite store file); ids already here are skipped."""
        if not os.path.exists(path):
            raise StoreError(f"{path}: no such store")
        with SQLiteStore(path, readonly=True) as source:
            return sum(self.write_rows(rows) for rows in source.record_pages(["TRUE"], []))

    def read_only_query(self, sql: str, params: Sequence[Any], limit: int) -> list[dict[str, Any]]:
        """`interlock store query` on PostgreSQL: its own SQL dialect, `?` for each parameter when
        parameters are given, in a READ ONLY transaction with a statement timeout."""
        with self.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute("SET LOCAL statement_timeout = '30s'")
            try:
                cursor = conn.execute(pg_sql(sql) if params else sql, list(params) if params else None)
            except psycopg.Error as exc:
                raise StoreError(f"the query failed: {_reason(exc)}") from None
            names = [d.name for d in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchmany(limit)]


def _run(cursor: psycopg.Cursor[Any]) -> store_chain.Run:
    """`store_chain`'s way to run SQL (`?` parameters), on this cursor."""

    def run(sql: str, params: Sequence[Any]) -> list[Any]:
        cursor.execute(pg_sql(sql), list(params))
        return cursor.fetchall() if cursor.description else []

    return run


def _storable(text: str) -> str:
    """Indexed text as PostgreSQL's text takes it: no NUL, no lone surrogate (JSON's \\u0000 and
    \\ud800 escapes decode to them; the bodies themselves are bytes, kept exactly)."""
    if "\x00" in text:
        text = text.replace("\x00", " ")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _insert(cursor: psycopg.Cursor[Any], single: str, rows: Sequence[tuple[Any, ...]]) -> int:
    """Insert `rows` as few multi-row statements (on `cursor`'s connection and transaction); how many
    were new. A `RawCursor` with `$n` parameters: psycopg parses `%s` statements in Python and caches
    only short ones, and a 128-row statement parsed per batch cost the writer ~200 µs of CPU a call
    (profiled, 2 KB calls)."""
    if not rows:
        return 0
    added = 0
    limit = max(1, min(MAX_ROWS, _MAX_PARAMS // len(rows[0])))
    with psycopg.RawCursor(cursor.connection) as raw:
        for start, size in row_groups(len(rows), limit):
            raw.execute(_pg_insert(single, size), list(chain.from_iterable(rows[start : start + size])))
            added += max(0, raw.rowcount)
    return added


def migrate(conn: psycopg.Connection[Any], where: str) -> int:
    """Bring the database to `SCHEMA_VERSION`, each version in one transaction recorded in
    `interlock_migrations`; returns the version it had before. Safe with replicas starting together."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
        conn.execute(MIGRATIONS_TABLE)
        row = conn.execute("SELECT max(version) FROM interlock_migrations").fetchone()
        before = int(row[0] or 0) if row else 0
        check_version(before, where)
        if before == 0:
            found = conn.execute("SELECT to_regclass('calls') IS NOT NULL").fetchone()
            if found and found[0]:
                raise SchemaError(f"{where}: not an interlock store (it has a calls table but no interlock_migrations)")
        for version in range(before + 1, SCHEMA_VERSION + 1):
            statements = statements_for(version)
            for statement in statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO interlock_migrations (version, statements) VALUES (%s, %s)",
                (version, ";\n".join(statements)),
            )
            log.info("store %s: schema migrated to version %d", where, version)
    return before


def _reason(exc: BaseException) -> str:
    """An error's first line (psycopg's carry the server's detail on the next lines)."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


__all__ = ["PostgresStore", "migrate", "pg_sql"]
