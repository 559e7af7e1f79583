"""The tables of the embedded shared state in the store's SQLite file, defined once.

Below both the store (`tracing/schema.py`, whose migration to version 6 makes them) and the state
that uses them (`policies/counters.py`, `counters_sqlite.py`, `guardrails/vault_sqlite.py`), which
may not import each other. Its own module, not `sqlite_state.py`: the store imports this, and would
otherwise load asyncio and a thread pool it does not use.
"""

from __future__ import annotations

import re
import sqlite3

#: The embedded shared state's tables, in the store's file (docs/store.md, "Schema"): the day and
#: life counters every interlock saves (`policies/counters.py`), the minute windows and gauges of
#: the counters shared by worker processes (`counters_sqlite.py`), and the shared vault
#: (`vault_sqlite.py`). The store's migration to version 6 makes them (`tracing/schema.py`), and
#: the state makes them itself, with these same statements, in a file no store has migrated (recording off, the store on PostgreSQL
#: while the counters save to `store.path`, or the state first to open a new file). Their shape is
#: the one released files already hold (made on first use before version 6): never change a
#: statement; a change is a new store migration.
STATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS policy_counters (
    day TEXT NOT NULL,
    rule TEXT NOT NULL,
    key TEXT NOT NULL,
    tokens INTEGER NOT NULL DEFAULT 0,
    usd REAL NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    PRIMARY KEY (day, rule, key)
);
CREATE TABLE IF NOT EXISTS policy_life (
    rule TEXT NOT NULL,
    key TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (rule, key, metric)
);
CREATE TABLE IF NOT EXISTS policy_windows (
    rule TEXT NOT NULL, key TEXT NOT NULL, metric TEXT NOT NULL, t REAL NOT NULL, amount REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS policy_windows_by_counter ON policy_windows (rule, key, metric, t);
CREATE TABLE IF NOT EXISTS policy_gauges (
    rule TEXT NOT NULL, key TEXT NOT NULL, metric TEXT NOT NULL, pid INTEGER NOT NULL, n REAL NOT NULL,
    PRIMARY KEY (rule, key, metric, pid)
);
CREATE TABLE IF NOT EXISTS vault_values (
    session TEXT NOT NULL, placeholder TEXT NOT NULL, mac BLOB NOT NULL, blob BLOB NOT NULL,
    used INTEGER NOT NULL, PRIMARY KEY (session, placeholder), UNIQUE (session, mac)
);
CREATE TABLE IF NOT EXISTS vault_sessions (
    session TEXT PRIMARY KEY, touched REAL NOT NULL, seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS vault_numbers (
    session TEXT NOT NULL, entity TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (session, entity)
)
"""
#: `STATE_SCHEMA` one statement at a time (`executescript` would commit a migration's transaction).
STATE_STATEMENTS = tuple(s.strip() for s in STATE_SCHEMA.split(";") if s.strip())

#: The loop histories shared by worker processes (`policies/loop_history_sqlite.py`), added by the
#: store's migration to version 7 (never change a statement: a change is a new migration). Per
#: session (`scope`): its last call's time, the largest window asked for and a sequence that orders
#: the rest; its latest keys per kind; its tools' error streaks and refused tools (each ordered by
#: `seq`, the oldest dropped past the bound); and the loops already announced.
LOOP_SCHEMA = """
CREATE TABLE IF NOT EXISTS loop_sessions (
    scope TEXT PRIMARY KEY, seen REAL NOT NULL, width INTEGER NOT NULL, seq INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS loop_sessions_by_seen ON loop_sessions (seen);
CREATE TABLE IF NOT EXISTS loop_entries (
    scope TEXT NOT NULL, kind TEXT NOT NULL, seq INTEGER NOT NULL, key BLOB NOT NULL,
    PRIMARY KEY (scope, kind, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS loop_errors (
    scope TEXT NOT NULL, tool TEXT NOT NULL, seq INTEGER NOT NULL, error BLOB NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (scope, tool)
);
CREATE TABLE IF NOT EXISTS loop_blocked (
    scope TEXT NOT NULL, tool TEXT NOT NULL, seq INTEGER NOT NULL, rule TEXT NOT NULL, reason TEXT NOT NULL,
    PRIMARY KEY (scope, tool)
);
CREATE TABLE IF NOT EXISTS loop_announced (
    scope TEXT NOT NULL, rule TEXT NOT NULL, kind TEXT NOT NULL, PRIMARY KEY (scope, rule, kind)
)
"""
LOOP_STATEMENTS = tuple(s.strip() for s in LOOP_SCHEMA.split(";") if s.strip())

#: The names of the state's tables (version 6's and 7's): what a file may hold before a store has
#: migrated it, and what PostgreSQL's derived schema leaves out.
STATE_TABLES = frozenset(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", STATE_SCHEMA + LOOP_SCHEMA))


def create_state_tables(connection: sqlite3.Connection) -> None:
    """Make the state's tables that are missing (nothing when a store has migrated the file)."""
    for statement in STATE_STATEMENTS + LOOP_STATEMENTS:
        connection.execute(statement)


__all__ = ["LOOP_SCHEMA", "LOOP_STATEMENTS", "STATE_SCHEMA", "STATE_STATEMENTS", "STATE_TABLES", "create_state_tables"]
