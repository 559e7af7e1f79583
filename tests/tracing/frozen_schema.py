"""Frozen copies of the SQL each schema version ran before the migrations moved to sqlite-utils
(issue 18): what files made by earlier interlocks contain. Never edit them. Version 6 is the SQL
that made its tables on first use before they were part of the versions (any file of an earlier
version may hold some of them)."""

from __future__ import annotations

import sqlite3

FROZEN_V1 = """
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

#: The tables made on first use, outside the versions, until version 6 made them part of it: the
#: kill switch's, the MCP pins', the policy counters' and the shared vault's, as their code ran it.
FIRST_USE = """
CREATE TABLE IF NOT EXISTS stops (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    reason TEXT NOT NULL,
    stopped_at REAL NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS mcp_pins (
    route TEXT NOT NULL,
    tool TEXT NOT NULL,
    pinned_hash TEXT,
    pinned TEXT,
    pinned_at REAL,
    seen_hash TEXT NOT NULL,
    seen TEXT NOT NULL,
    seen_at REAL NOT NULL,
    PRIMARY KEY (route, tool)
);
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
);
"""

#: Version 7: the loop histories of `serve --workers N` (`core/state_schema.LOOP_SCHEMA`), as released.
LOOPS = """
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
);
"""

FROZEN_STEPS: dict[int, list[str]] = {
    1: [s for s in FROZEN_V1.split(";") if s.strip()],
    2: ["ALTER TABLE calls ADD COLUMN workflow TEXT", "CREATE INDEX calls_workflow ON calls (workflow, id)"],
    3: ["ALTER TABLE calls ADD COLUMN rescued INTEGER NOT NULL DEFAULT 0"],
    4: ["ALTER TABLE calls ADD COLUMN cost_usd REAL", "ALTER TABLE calls ADD COLUMN cost_source TEXT"],
    5: [
        "CREATE TABLE chain (writer TEXT NOT NULL, pos INTEGER NOT NULL, call_id TEXT NOT NULL, hash TEXT NOT NULL,"
        " gone REAL, PRIMARY KEY (writer, pos)) WITHOUT ROWID",
        "CREATE INDEX chain_call ON chain (call_id)",
        "CREATE TABLE chain_checkpoints (writer TEXT PRIMARY KEY, pos INTEGER NOT NULL, hash TEXT NOT NULL,"
        " calls INTEGER NOT NULL, at REAL NOT NULL)",
        "CREATE TABLE chain_start (before_seq INTEGER NOT NULL)",
        "INSERT INTO chain_start (before_seq) SELECT coalesce(max(seq), 0) FROM calls",
    ],
    6: [s for s in FIRST_USE.split(";") if s.strip()],
    7: [s for s in LOOPS.split(";") if s.strip()],
}


def frozen(conn: sqlite3.Connection, version: int, start: int = 1) -> None:
    """The database as the frozen SQL leaves it at `version` (from `start - 1`)."""
    for step in range(start, version + 1):
        for statement in FROZEN_STEPS[step]:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
