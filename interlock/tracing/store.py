"""The embedded SQLite store: every call in full, written in batches, read by the CLI, UI and replay.

One `Store` object is shared by threads: each thread gets its own connection (WAL mode, so readers
never wait for the writer). Writes arrive as `Call.to_record()` dicts in batches (`write`), one
transaction per batch (built and inserted by `interlock/tracing/writing.py`), in the writer's
thread, never on the event loop. This module keeps connections, writing, retention and moving calls between
files; the queries are in `interlock/tracing/reads.py` (`Reads`, which `Store` extends). The schema
is documented in `interlock/tracing/schema.py`.
"""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from interlock.core.call import Call
from interlock.core.sqlite import enable_wal, transaction
from interlock.tracing import store_chain
from interlock.tracing.audit_reads import AuditReads
from interlock.tracing.chain import DEFAULT_WRITER, Report
from interlock.tracing.pins import SQLitePins
from interlock.tracing.reads import Reads, fts_query, where_clause
from interlock.tracing.rows import (
    CHILD_TABLES,
    INSERT_CHUNK,
    LIST_COLUMNS,
    Indexer,
    Record,
)
from interlock.tracing.schema import (
    SCHEMA_VERSION,
    SchemaError,
    StoreError,
    compat_views,
    database,
    migrate,
    schema_version,
)
from interlock.tracing.stops import SQLiteStops
from interlock.tracing.transfer import copy_calls
from interlock.tracing.workflow_reads import WorkflowReads
from interlock.tracing.writing import Rows, insert_rows, write_records, write_rows

if TYPE_CHECKING:
    import sqlite_utils

log = logging.getLogger("interlock.store")

#: Bodies of a few KB fill 4 KB pages (SQLite's default) about half; larger pages pack them.
#: Measured with 2 KB requests: 10.5 KB per call on disk with 4 KB pages, 6.8 KB with 16 KB. Only a new file.
PAGE_SIZE = 16384

#: Seconds an `interlock store query` may run (PostgreSQL's `statement_timeout` for it is the same).
QUERY_TIMEOUT = 30.0


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
            enable_wal(conn, 30)  # as busy_timeout below
            # With WAL, NORMAL survives a crash of the process (kill -9) without losing committed
            # transactions; only a power loss may drop the last ones. FULL would cost an fsync per batch.
            conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA busy_timeout = 30000")
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def _file_identity(path: str) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


class SQLiteStore(WorkflowReads, SQLitePins, SQLiteStops, AuditReads):
    """The embedded SQLite store at `path` (created and migrated unless `readonly`); implements
    `interlock.tracing.backend.Store`. Open it with `backend.open_store`; its connection (`conn`)
    is for this backend's own modules (the recorder's writer, the tests of this backend)."""

    def __init__(self, path: str | os.PathLike[str], readonly: bool = False, *, writer: str = DEFAULT_WRITER) -> None:
        self.path = str(path)
        #: Whose chain this store's writes extend (`chain.py`; one per instance in a fleet store).
        self.writer = writer
        self.readonly = readonly
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        #: Bumped by `reopen`: a thread whose connection is older opens a new one.
        self._generation = 0
        #: Held while a connection is made, and by `reopen` from dropping the old file's leftovers
        #: to migrating the new one: no other thread creates the file between the two (its `-wal`
        #: and `-shm`, made by that thread's connection, would be unlinked under it: two connections
        #: to one file with different shared memory).
        self._opening = threading.RLock()
        self._stale: list[sqlite3.Connection] = []  # connections to a file that was deleted or replaced
        self._identity: tuple[int, int] | None = None
        self._version = SCHEMA_VERSION  # a read-only file's own version, learnt on opening it
        #: The schema version the file had when this store opened it (before migrating it).
        self.found_version = SCHEMA_VERSION
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
                self._version = version
                compat_views(conn, version)  # this first connection was opened before the version was known
            else:
                self.found_version = migrate(conn, self.path)
                self._identity = _file_identity(self.path)
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
        if conn is not None and self._local.generation != self._generation:
            conn = self._local.conn = self._local.db = None  # the file was reopened: this one is the old inode
        if conn is None:
            if self._closed:
                raise StoreError(f"{self.path}: the store is closed")
            with self._opening:
                generation = self._generation
                conn = _connect(self.path, self.readonly)
                if self.readonly and self._version < SCHEMA_VERSION:
                    compat_views(conn, self._version)
                self._local.conn = conn
                self._local.generation = generation
                with self._lock:
                    self._connections.append(conn)
        return conn

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's connection as a sqlite-utils Database (for ad-hoc queries and tools)."""
        db: sqlite_utils.Database | None = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = database(self.conn)  # imports sqlite-utils on first use (schema.py)
        return db

    def file_problem(self) -> str | None:
        """Why the file this store opened is no longer the file at its path (deleted, replaced), or
        None. SQLite keeps writing an open file that was unlinked: everything written after is lost
        with it, silently, unless this is checked (one `stat`, done by the recorder per batch)."""
        if self.readonly or self._identity is None:
            return None
        try:
            now = _file_identity(self.path)
        except OSError:
            return f"{self.path} was deleted while interlock had it open"
        if now != self._identity:
            return f"{self.path} was replaced by another file while interlock had it open"
        return None

    def reopen(self) -> None:
        """Open (create and migrate) the file at `path` again; every thread's next `conn` uses it."""
        # The old connections stay open until `close`, and are closed after the new ones: SQLite
        # removes a WAL file by its path when its last connection closes, which would take the new
        # file's uncheckpointed WAL with it; and while the old inode is open it cannot be reused
        # for the new file (SQLite keys its locks and shared memory by inode).
        with self._opening:
            with self._lock:
                self._stale += self._connections
                self._connections = []
                self._generation += 1
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            if not os.path.exists(self.path):
                for stale in (self.path + "-wal", self.path + "-shm"):  # the old file's: never replayed into a new one
                    if os.path.exists(stale):
                        os.unlink(stale)
            migrate(self.conn, self.path)
            self._identity = _file_identity(self.path)

    @property
    def schema_version(self) -> int:
        return schema_version(self.conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections + self._stale, []
            self._stale = []
        for conn in connections:
            try:
                conn.close()
            except sqlite3.Error:  # pragma: no cover - closing is best effort
                pass

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------------

    def write(self, records: Sequence[Record], *, capture: str = "full", indexer: Indexer | None = None) -> int:
        """Write `Call.to_record()` dicts in one transaction; returns how many were new."""
        return write_records(self.conn, records, capture=capture, indexer=indexer, writer=self.writer)

    def add(self, call: Call, *, capture: str = "full") -> None:
        """Write one call now (tests and tools; the proxy writes through the Recorder)."""
        self.write([call.to_record()], capture=capture)

    def write_rows(self, rows: Rows) -> int:
        """A batch's rows (`writing.Rows`) in one transaction; returns how many calls were new."""
        return write_rows(self.conn, rows, writer=self.writer)

    def write_chunks(self, rows: Rows) -> None:
        """Only the chunks of `rows`, in one transaction (a large call written in pieces)."""
        with transaction(self.conn):
            insert_rows(self.conn, INSERT_CHUNK, rows.chunks)

    def migrate(self) -> tuple[int, int]:
        """Bring the file to this interlock's schema (opening it already did); (before, after)."""
        migrate(self.conn, self.path)
        return self.found_version, SCHEMA_VERSION

    def read_only_query(
        self, sql: str, params: Sequence[Any], limit: int, *, timeout: float = QUERY_TIMEOUT
    ) -> list[dict[str, Any]]:
        """`interlock store query`: SQLite's SQL through sqlite-utils, `?` for each parameter; at most
        `limit` rows, within `timeout` seconds (PostgreSQL's statement timeout, here SQLite's progress
        handler: a runaway recursive query is interrupted, not waited for). Open the store read-only
        for it (`mode=ro`: SQLite refuses a write)."""
        conn = self.conn
        deadline = time.monotonic() + timeout
        conn.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
        try:
            return list(itertools.islice(self.db.query(sql, list(params)), limit))
        except sqlite3.Error as exc:
            if time.monotonic() > deadline:
                raise StoreError(f"the query failed: it ran past {timeout:g} s and was stopped") from None
            raise StoreError(f"the query failed: {exc}") from None
        except ValueError:
            # sqlite-utils refuses, before running it, a statement that returns no rows (VACUUM,
            # BEGIN, ATTACH, an empty one): bad input, said as such, never a traceback.
            raise StoreError("the query failed: it returns no rows (one read-only SELECT or PRAGMA)") from None
        finally:
            conn.set_progress_handler(None, 0)

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
        with transaction(conn):
            conn.execute(f"DELETE FROM calls_fts WHERE rowid IN (SELECT seq FROM calls WHERE id IN ({marks}))", ids)
            for table in CHILD_TABLES:
                conn.execute(f"DELETE FROM {table} WHERE call_id IN ({marks})", ids)
            count = conn.execute(f"DELETE FROM calls WHERE id IN ({marks})", ids).rowcount
            store_chain.forget(store_chain.sqlite_run(conn), ids)
        return int(count)

    # -- tamper evidence -------------------------------------------------------------------------

    def verify_chain(self, anchors: Mapping[str, Mapping[int, str]] | None = None) -> Report:
        """Recompute every call's link from its stored rows (`store_chain.verify`), in one read
        transaction (a snapshot of the file: the writer goes on meanwhile)."""
        conn = self.conn
        if not store_chain.sqlite_has_chain(conn):
            return Report(absent=store_chain.ABSENT)
        conn.execute("BEGIN")
        try:
            return store_chain.verify(store_chain.sqlite_run(conn), anchors)
        finally:
            conn.execute("COMMIT")

    def chain_heads(self) -> list[dict[str, Any]]:
        """Each writer's last link (pos, hash): what to anchor outside the store."""
        conn = self.conn
        return store_chain.heads(store_chain.sqlite_run(conn)) if store_chain.sqlite_has_chain(conn) else []

    # -- moving calls between files --------------------------------------------------------------

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
        """Write the matching calls to a new self-contained SQLite file (same schema, no WAL file
        beside it), replacing `dest_path` atomically. Returns how many calls it holds."""
        where, params = where_clause("s.", session=session, since=since, until=until, agent=agent, workflow=workflow)
        return write_bundle(
            dest_path, lambda out: copy_calls(out.conn, self.path, " AND ".join(where), params, writer=self.writer)
        )

    def import_from(self, path: str | os.PathLike[str]) -> int:
        """Add the calls of another store file (an export, a bundle); ids already here are skipped."""
        source = str(path)
        if not Path(source).exists():
            raise StoreError(f"{source}: no such store")
        with SQLiteStore(source, readonly=True) as check:
            _ = check.schema_version
        return copy_calls(self.conn, source, "1", [], writer=self.writer)


def write_bundle(dest_path: str | os.PathLike[str], fill: Callable[[SQLiteStore], int]) -> int:
    """A new self-contained SQLite file at `dest_path` (same schema, no WAL file beside it) holding
    what `fill` writes into it, replacing `dest_path` atomically; returns `fill`'s count. Every
    backend's `export` makes its bundle here: a bundle is a SQLite file whatever wrote it."""
    dest = Path(dest_path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        with SQLiteStore(tmp) as out:
            count = fill(out)
            out.conn.executescript("PRAGMA incremental_vacuum;")  # execute() would free one page per call
            out.conn.execute("PRAGMA journal_mode = DELETE")
        os.replace(tmp, dest)
    finally:
        for leftover in (tmp, tmp + "-wal", tmp + "-shm", tmp + "-journal"):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return count


#: The embedded backend under its former name (this backend's tests build it by path).
Store = SQLiteStore

__all__ = ["LIST_COLUMNS", "Reads", "SQLiteStore", "Store", "StoreError", "fts_query", "write_bundle"]
