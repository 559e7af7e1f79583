"""The store's schema and its versioned migrations.

The version lives in `PRAGMA user_version`. `MIGRATIONS[i]` takes a database from version `i` to
`i + 1`; each runs in one transaction, so a crash mid-migration leaves the old version intact.
A migration is written with sqlite-utils (`add_column`, `create_index`, `create_table`, and
`transform` below for what `ALTER TABLE` cannot do), given a `sqlite_utils.Database` over the
migrating connection. Never change what a released migration makes (files made by it must keep
their shape: `tests/tracing/test_schema_migrations.py` holds frozen copies): append a new one.

Why `PRAGMA user_version` and not sqlite-utils' own `Migrations` (named steps listed in a
`_sqlite_migrations` table): it reads what is pending before it takes the write lock, so two
interlocks starting on one file would both run a step (here the version is re-read under `BEGIN
IMMEDIATE`); bundles, read-only `compat_views` and PostgreSQL's derived schema all speak the one
version number; and its table would be one more table in every file and in PostgreSQL's schema.

Tables (version 1):

calls      one narrow row per call, for fast listing and filtering. `seq` is an explicit rowid
           (VACUUM may renumber implicit ones, and the full-text index points at it); `id` sorts by
           creation time. `capture` says whether bodies were kept (`full`) or not (`metadata`);
           `size` is the bytes of bodies and chunks kept, for retention by size.
bodies     headers (credentials removed) and bodies: as the agent sent the request, as it went
           upstream when a stage changed it, as the upstream answered, as the agent received it;
           `response_message` is a streamed response reassembled into one JSON message; `extra`
           holds `Call.to_record()` keys this version does not know, so they round-trip.
chunks     streamed pieces with their arrival time (`t_ms` after the call started). `side` 0 is the
           stream as the upstream sent it, 1 as the agent received it (only when a stage changed it).
attempts   every try at an upstream, in order, with timings, status, error and the backoff before it.
events     policy decisions (`kind` = "decision") and guardrail findings (`kind` = "finding"), in
           order; `data` is the whole record, the other columns are copies for filtering.
calls_fts  FTS5 index over the request and response text (rowid = calls.seq).

Version 2: `calls.workflow`, the multi-agent workflow a call belongs to (docs/workflows.md), indexed
with `id` as `session` is. A file of version 1 opened read-only (an old bundle) is read through
`compat_views`, which shows the column as NULL.
Version 3: `calls.rescued`, a stream continued by another target after a break (issue 21,
`stream_rescue`); an older read-only file shows it as 0 through `compat_views`.
Version 4: `calls.cost_usd` and `calls.cost_source`, what the call cost and where its price came
from (issue 22, docs/policies.md "Cost"); NULL in an older read-only file.

Version 5: tamper evidence: `chain`, `chain_checkpoints` and `chain_start` (documented in
`store_chain.py`); calls already in a file when it gains them are counted as recorded before the chain.

Version 6: every other table the store's file holds, each made on first use before (outside the
versions, so `interlock store migrate`, these tests and an upgrade did not cover them): the kill
switch's `stops` (`stops.py`), the MCP tool pins `mcp_pins` (`pins.py`), and the embedded shared
state (`core/state_schema.STATE_SCHEMA`: the policy counters and the vault shared by worker
processes). Each is made only if missing, in the shape first use gave it, so a file that already
has one keeps it with its rows. The state's tables are SQLite's alone: PostgreSQL's derived schema
leaves them out (a fleet's shared state is on Redis; `pg_schema`).
Version 7: the loop histories shared by worker processes (`core/state_schema.LOOP_SCHEMA`:
`loop_sessions`, `loop_entries`, `loop_errors`, `loop_blocked`, `loop_announced`), state tables too
(none in PostgreSQL, whose version 7 is empty).
"""

from __future__ import annotations

import importlib.abc
import re
import sqlite3
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from interlock.core.sqlite import transaction
from interlock.core.state_schema import LOOP_STATEMENTS, STATE_STATEMENTS, STATE_TABLES
from interlock.tracing import store_chain
from interlock.tracing.rows import CHAINED_TABLES

if TYPE_CHECKING:
    import sqlite_utils

V1 = """
CREATE TABLE calls (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    trace_id TEXT,
    span_id TEXT,
    parent_span_id TEXT,
    session TEXT,
    agent TEXT NOT NULL,
    route TEXT NOT NULL,
    protocol TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT NOT NULL DEFAULT '',
    model TEXT,
    stream INTEGER NOT NULL DEFAULT 0,
    status INTEGER,
    outcome TEXT NOT NULL,
    error_code TEXT,
    error TEXT,
    started_at REAL NOT NULL,
    ttfb_ms REAL,
    duration_ms REAL,
    input_tokens INTEGER,
    output_tokens INTEGER,
    attempt_count INTEGER NOT NULL DEFAULT 0,
    upstream TEXT,
    truncated INTEGER NOT NULL DEFAULT 0,
    capture TEXT NOT NULL DEFAULT 'full',
    size INTEGER NOT NULL DEFAULT 0,
    meta TEXT
);
CREATE INDEX calls_started_at ON calls (started_at);
CREATE INDEX calls_session ON calls (session, id);
CREATE INDEX calls_agent ON calls (agent, id);
CREATE INDEX calls_trace ON calls (trace_id);

CREATE TABLE bodies (
    call_id TEXT NOT NULL UNIQUE,
    request_headers TEXT NOT NULL DEFAULT '[]',
    response_headers TEXT NOT NULL DEFAULT '[]',
    request_body BLOB,
    upstream_body BLOB,
    response_body BLOB,
    agent_response_body BLOB,
    agent_chunks INTEGER NOT NULL DEFAULT 0,
    response_message TEXT,
    extra TEXT
);

CREATE TABLE chunks (
    call_id TEXT NOT NULL,
    side INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    t_ms REAL NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (call_id, side, seq)
) WITHOUT ROWID;

CREATE TABLE attempts (
    call_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    upstream TEXT,
    url TEXT,
    model TEXT,
    started_ms REAL,
    duration_ms REAL,
    ttfb_ms REAL,
    status INTEGER,
    error TEXT,
    backoff_ms REAL,
    data TEXT NOT NULL,
    PRIMARY KEY (call_id, seq)
) WITHOUT ROWID;

CREATE TABLE events (
    call_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    stage TEXT,
    action TEXT,
    name TEXT,
    data TEXT NOT NULL,
    PRIMARY KEY (call_id, seq)
) WITHOUT ROWID;

CREATE VIRTUAL TABLE calls_fts USING fts5 (request, response, tokenize = 'unicode61');
"""


def _v1(db: sqlite_utils.Database) -> None:
    # Frozen as released: `WITHOUT ROWID` (chunks, attempts, events) has no `create_table` form, and
    # every file since version 1 has exactly this shape (the chain and PostgreSQL's schema read it).
    for statement in V1.split(";"):
        if statement.strip():
            db.execute(statement)


def _v2(db: sqlite_utils.Database) -> None:
    calls = db.table("calls")
    calls.add_column("workflow", str)
    calls.create_index(["workflow", "id"], index_name="calls_workflow")


def _v3(db: sqlite_utils.Database) -> None:
    # A stream continued by another target after a break (issue 21, `stream_rescue`): a column, so
    # the UI and `interlock calls` can list and filter rescued calls without reading `meta`.
    db.table("calls").add_column("rescued", int, not_null_default=0)


def _v4(db: sqlite_utils.Database) -> None:
    # What each call cost (issue 22): columns, so sessions and agents sum it and sort by it.
    calls = db.table("calls")
    calls.add_column("cost_usd", float)
    calls.add_column("cost_source", str)


def _v5(db: sqlite_utils.Database) -> None:
    store_chain.create(db.conn)  # frozen SQL too: `chain` is WITHOUT ROWID


def _v6(db: sqlite_utils.Database) -> None:
    # Made before on first use, outside the versions (hence `if_not_exists`: a file may have them,
    # with rows), in the shape first use gave them (tests/tracing/frozen_schema.py holds its SQL).
    db.table("stops").create(
        {"kind": str, "name": str, "reason": str, "stopped_at": float},
        pk=("kind", "name"),
        not_null={"kind", "name", "reason", "stopped_at"},
        if_not_exists=True,
    )
    db.table("mcp_pins").create(
        {
            "route": str,
            "tool": str,
            "pinned_hash": str,
            "pinned": str,
            "pinned_at": float,
            "seen_hash": str,
            "seen": str,
            "seen_at": float,
        },
        pk=("route", "tool"),
        not_null={"route", "tool", "seen_hash", "seen", "seen_at"},
        if_not_exists=True,
    )
    # The shared state's statements, as the state runs them in a file no store migrates (the one
    # definition, below both): `vault_values`' table-level UNIQUE has no `create_table` form.
    for statement in STATE_STATEMENTS:
        db.execute(statement)


def _v7(db: sqlite_utils.Database) -> None:
    # The loop histories shared by worker processes (issue 18: loop detection behind the shared
    # state's seam), as the state runs them in a file no store migrates: `loop_entries` is WITHOUT
    # ROWID, which has no `create_table` form.
    for statement in LOOP_STATEMENTS:
        db.execute(statement)


#: One step of the schema, written with sqlite-utils (`add_column`, `create_index`, `create_table`,
#: `transform` through `transform` below); it runs inside the transaction `migrate` holds.
Migration = Callable[["sqlite_utils.Database"], None]

#: MIGRATIONS[i] takes the schema from version i to i + 1.
MIGRATIONS: list[Migration] = [_v1, _v2, _v3, _v4, _v5, _v6, _v7]
SCHEMA_VERSION = len(MIGRATIONS)
#: The version that added the tamper-evident chain (PostgreSQL repeats its data step, `pg_schema`).
CHAIN_VERSION = MIGRATIONS.index(_v5) + 1


def database(conn: sqlite3.Connection) -> sqlite_utils.Database:
    """`conn` as a sqlite-utils Database, with nothing run on it (no pragma, no plugins): a migration
    runs inside the caller's transaction. sqlite-utils is imported on first use (`_database_class`):
    a store already at this version never needs it."""
    return _database_class()(conn, recursive_triggers=False, execute_plugins=False)


#: sqlite-utils' optional array support, which it imports when it can; nothing here passes it
#: arrays or frames (it only maps their types for `insert`).
_ARRAYS = frozenset({"numpy", "pandas"})
_import_lock = threading.Lock()


class _NoArrays(importlib.abc.MetaPathFinder):
    """Makes `import numpy` / `pandas` fail in the one thread importing sqlite-utils, while it does."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name in _ARRAYS and threading.get_ident() == self.thread:
            raise ModuleNotFoundError(f"{name}: not loaded for sqlite-utils", name=name)
        return None


def _database_class() -> type[sqlite_utils.Database]:
    """sqlite-utils' Database, imported without numpy, which interlock does not otherwise load:
    importing sqlite-utils took 550-910 ms on this (loaded) 2-core machine, 240-340 ms without
    numpy, and every new store file (each `interlock serve` on a fresh path, each test's store)
    pays it once. Other threads import as usual (a PII engine may load numpy meanwhile: the finder
    only answers this thread); if numpy is loaded already, sqlite-utils gets it."""
    if "sqlite_utils.db" not in sys.modules:
        with _import_lock:
            finder = _NoArrays()
            sys.meta_path.insert(0, finder)
            # Startup: sqlite-utils only to migrate (0.24-0.34 s without numpy, measured; docs/store.md).
            try:
                import sqlite_utils.db
            finally:
                sys.meta_path.remove(finder)
    import sqlite_utils.db  # imported now: a lookup in sys.modules

    return sqlite_utils.db.Database


def transform(db: sqlite_utils.Database, name: str, **changes: Any) -> None:
    """`Table.transform` (a change `ALTER TABLE` cannot make: a type, a dropped or renamed column, a
    new NOT NULL), guarded for this schema:
    - a `WITHOUT ROWID` table would be rebuilt as a rowid table: refused (write that step's SQL);
    - a numeric default (`DEFAULT 0`) would come back as the text `'0'`, which the PostgreSQL
      derivation (`pg_schema`) would see as a change: passed back as a number;
    - a column a call's chain link covers (`rows.CHAINED_TABLES`) keeps its name, type and values:
      renaming, dropping or retyping it would make `interlock store verify` report every call
      recorded before as altered, so it is refused.
    A non-additive step also needs its PostgreSQL statements (`pg_schema.PG_MIGRATIONS`)."""
    listed = {row[1]: row for row in db.execute("PRAGMA main.table_list").fetchall()}
    if name in listed and listed[name][4]:
        raise SchemaError(f"{name} is a WITHOUT ROWID table: sqlite-utils' transform would rebuild it with a rowid")
    chained = {column for table, columns, *_ in CHAINED_TABLES if table == name for column in columns}
    touched = {*(changes.get("types") or {}), *(changes.get("rename") or {}), *(changes.get("drop") or ())}
    if touched & chained:
        names = ", ".join(sorted(touched & chained))
        raise SchemaError(f"{name}.{names}: covered by the tamper-evident chain; a transform would break its links")
    defaults: dict[str, Any] = {}
    for column in db.execute(f"PRAGMA main.table_info({name})").fetchall():
        default = column[4]
        if default is not None and re.fullmatch(r"-?\d+(\.\d+)?", default):
            defaults[column[1]] = float(default) if "." in default else int(default)
    defaults.update(changes.pop("defaults", None) or {})
    db.table(name).transform(defaults=defaults, **changes)


def compat_views(conn: sqlite3.Connection, version: int) -> None:
    """Let a read-only connection to an older file read it as this version: a TEMP view named like
    the table shadows it (unqualified names look in `temp` first), with the columns it lacks as NULL (or 0 for a flag).
    The file itself is never changed (a bundle may be read-only, or someone else's evidence)."""
    missing = [column for since, column in _ADDED_COLUMNS if version < since]
    if missing:
        extra = ", ".join(missing)
        conn.execute(f"CREATE TEMP VIEW IF NOT EXISTS calls AS SELECT *, {extra} FROM main.calls")


#: Columns of `calls` added after version 1: (the version that added it, how an older file shows it).
_ADDED_COLUMNS = ((2, "NULL AS workflow"), (3, "0 AS rescued"), (4, "NULL AS cost_usd"), (4, "NULL AS cost_source"))


#: The tables a file may hold with no schema version and still be a new store: those interlock
#: makes outside a store's migration. The shared state's: the counters and the vault make them in
#: a file no store has migrated (recording off, the store on PostgreSQL; `core/state_schema.py`),
#: and under a running interlock a store file deleted is made again at its path by the counters'
#: next save, which the recorder's reopen must migrate, not refuse. And `stops` and `mcp_pins`,
#: which interlocks before version 6 made on first use, so a file that one made again that way is
#: also migrated (version 6 keeps them).
FIRST_USE_TABLES = STATE_TABLES | {"stops", "mcp_pins"}


class StoreError(Exception):
    """The store cannot do what was asked (bad query, unreadable file). Re-exported by `store`."""


class StoreUnavailable(StoreError):
    """The store cannot be reached now (a database server down or unreachable): retry later."""


class SchemaError(StoreError):
    """The database cannot be used by this version of interlock."""


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, path: str) -> int:
    """Bring the database up to `SCHEMA_VERSION`; returns the version it had before."""
    before = schema_version(conn)
    if before > SCHEMA_VERSION:
        raise SchemaError(
            f"{path}: the store has schema version {before}, newer than this interlock knows ({SCHEMA_VERSION});"
            " upgrade interlock to read it"
        )
    if before == SCHEMA_VERSION:
        return before
    db = database(conn)
    for version in range(before, SCHEMA_VERSION):
        with transaction(conn):
            # Re-check under the write lock: another process may have migrated meanwhile (then the
            # transaction commits having written nothing).
            if schema_version(conn) != version:
                continue
            # Under the lock too: read before it, a file another process was migrating could show
            # version 0 to one read and its new tables to the next.
            if version == 0:
                tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if tables - FIRST_USE_TABLES:
                    raise SchemaError(f"{path}: not an interlock store (it has tables but no schema version)")
            MIGRATIONS[version](db)
            conn.execute(f"PRAGMA user_version = {version + 1}")
    return before
