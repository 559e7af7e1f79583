"""Frozen copies of the SQL each schema version ran before the migrations moved to sqlite-utils
(issue 18): what files made by earlier interlocks contain. Never edit them."""

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
}


def frozen(conn: sqlite3.Connection, version: int, start: int = 1) -> None:
    """The database as the frozen SQL leaves it at `version` (from `start - 1`)."""
    for step in range(start, version + 1):
        for statement in FROZEN_STEPS[step]:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
