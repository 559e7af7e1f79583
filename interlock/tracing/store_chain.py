"""A store's side of the tamper-evident chain (`chain.py`): its tables, links written in the same
transaction as the calls they cover, deletions folded into a checkpoint, and verification.

SQL both backends speak, run through `run(sql, params) -> rows` (`?` parameters): the SQLite store
passes its connection's, the PostgreSQL store its cursor's (inside the transaction and lock it holds).

Tables (schema version with the chain, see `schema.py`):

chain              one link per recorded call: `writer`, `pos` (1, 2, ... per writer), `call_id`,
                   `hash` (hex); `gone` is when the store itself deleted the call (retention, `delete`)
                   while an earlier link of its writer was still kept.
chain_checkpoints  per writer, the last link folded away with the calls before it (pruned or deleted
                   through the store): its `pos` and `hash`, and how many `calls` were folded so far.
chain_start        `before_seq`: calls with `seq` up to it were recorded before the store had a chain.

Every writer holds the store's write lock while it reads the head and appends (SQLite's
`BEGIN IMMEDIATE`; PostgreSQL's advisory lock on `calls` rows): the recorder's threads, other
processes on one file and the replicas of a fleet extend their chains in turn.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from interlock.tracing.chain import GENESIS, MAX_PROBLEMS, Link, Report, Table, digest, links, verify_writer
from interlock.tracing.rows import CHAINED_TABLES, CHAINED_WIDTHS

SCHEMA = """
CREATE TABLE chain (
    writer TEXT NOT NULL,
    pos INTEGER NOT NULL,
    call_id TEXT NOT NULL,
    hash TEXT NOT NULL,
    gone REAL,
    PRIMARY KEY (writer, pos)
) WITHOUT ROWID;
CREATE INDEX chain_call ON chain (call_id);
CREATE TABLE chain_checkpoints (
    writer TEXT PRIMARY KEY,
    pos INTEGER NOT NULL,
    hash TEXT NOT NULL,
    calls INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE chain_start (before_seq INTEGER NOT NULL);
"""

INSERT_LINK = "INSERT INTO chain (writer, pos, call_id, hash) VALUES (?, ?, ?, ?)"
#: Run one statement with `?` parameters; the rows it returns (none for a write).
Run = Callable[[str, Sequence[Any]], list[Any]]
#: What the migration records about the calls already there (PostgreSQL runs it after the tables).
MARK_START = "INSERT INTO chain_start (before_seq) SELECT coalesce(max(seq), 0) FROM calls"

#: Links read (and calls digested) at a time while verifying: memory stays flat.
PAGE = 256

#: Each chained table's canonical form (`chain.Table`), name, columns and the order of a call's rows.

TABLES = tuple(
    (
        Table(name, columns[: CHAINED_WIDTHS[name]], reals, raw, added=columns[CHAINED_WIDTHS[name] :]),
        name,
        columns,
        order,
    )
    for name, columns, reals, raw, order in CHAINED_TABLES
)


def create(conn: sqlite3.Connection) -> None:
    """The migration step: the tables, and which calls (all there are now) predate the chain."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute(MARK_START)


def sqlite_run(conn: sqlite3.Connection) -> Run:
    return lambda sql, params: conn.execute(sql, params).fetchall()


def head(run: Run, writer: str) -> tuple[int, str]:
    """(pos, hash) of `writer`'s last link, or of its checkpoint, or (0, GENESIS)."""
    found = run("SELECT pos, hash FROM chain WHERE writer = ? ORDER BY pos DESC LIMIT 1", (writer,))
    if not found:
        found = run("SELECT pos, hash FROM chain_checkpoints WHERE writer = ?", (writer,))
    return (int(found[0][0]), str(found[0][1])) if found else (0, GENESIS)


def new_links(run: Run, writer: str, digests: Sequence[tuple[str, bytes]]) -> list[tuple[Any, ...]]:
    """`INSERT_LINK` rows linking these (call id, digest) pairs, in order, after `writer`'s head.
    Read and inserted inside the transaction that inserts the calls (the write lock is held)."""
    return links(head(run, writer), writer, digests) if digests else []


def stored_digests(run: Run, ids: Sequence[str]) -> dict[str, bytes]:
    """The digest of each of these calls recomputed from its stored rows (ids not stored are absent)."""
    if not ids:
        return {}
    marks = ", ".join("?" * len(ids))
    parts: dict[str, list[bytes]] = {}
    for table, name, columns, order in TABLES:
        key = "id" if name == "calls" else "call_id"
        sql = f"SELECT {key}, {', '.join(columns)} FROM {name} WHERE {key} IN ({marks})"
        if order:
            sql += f" ORDER BY {key}, {order}"
        for row in run(sql, ids):
            out = parts.get(row[0])
            if out is None:
                if name != "calls":
                    continue  # rows of a call whose calls row is gone: it is reported as deleted
                out = parts[row[0]] = []
            table.add(row[1:], out)
    return {call_id: digest(out) for call_id, out in parts.items()}


def forget(run: Run, ids: Sequence[str]) -> None:
    """Calls deleted through the store (inside the deleting transaction): their links are marked
    gone, and each writer's gone links before its first live one are folded into its checkpoint."""
    marks = ", ".join("?" * len(ids))
    now = time.time()
    run(f"UPDATE chain SET gone = ? WHERE gone IS NULL AND call_id IN ({marks})", (now, *ids))
    writers = [r[0] for r in run(f"SELECT DISTINCT writer FROM chain WHERE call_id IN ({marks})", ids)]
    for writer in writers:
        live = run("SELECT min(pos) FROM chain WHERE writer = ? AND gone IS NULL", (writer,))[0][0]
        folded = "writer = ?" if live is None else "writer = ? AND pos < ?"
        params = (writer,) if live is None else (writer, live)
        last = run(f"SELECT pos, hash FROM chain WHERE {folded} ORDER BY pos DESC LIMIT 1", params)
        if not last:
            continue
        count = run(f"SELECT count(*) FROM chain WHERE {folded}", params)[0][0]
        pos, hash_ = last[0]
        run(
            "INSERT INTO chain_checkpoints (writer, pos, hash, calls, at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (writer) DO UPDATE SET pos = excluded.pos, hash = excluded.hash,"
            " calls = chain_checkpoints.calls + excluded.calls, at = excluded.at",
            (writer, pos, hash_, count, now),
        )
        run("DELETE FROM chain WHERE writer = ? AND pos <= ?", (writer, pos))


def sqlite_has_chain(conn: sqlite3.Connection) -> bool:
    """Whether a SQLite file has the chain's tables (an old bundle opened read-only has not)."""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'chain'").fetchone() is not None


def _pages(run: Run, writer: str, after: int) -> Iterator[list[Link]]:
    while True:
        rows = run(
            "SELECT pos, call_id, hash, gone FROM chain WHERE writer = ? AND pos > ? ORDER BY pos LIMIT ?",
            (writer, after, PAGE),
        )
        if not rows:
            return
        yield [Link(int(pos), call_id, hash_, gone is not None) for pos, call_id, hash_, gone in rows]
        after = rows[-1][0]


def verify(run: Run, anchors: Mapping[str, Mapping[int, str]] | None = None) -> Report:
    """Walk every writer's chain (checking `anchors`: writer → position → hash) and look for calls
    on none. The caller runs it in one read transaction (a snapshot: the writer may go on meanwhile)."""
    report = Report()
    anchors = anchors or {}
    checkpoints = {w: (int(p), h) for w, p, h in run("SELECT writer, pos, hash FROM chain_checkpoints", ())}
    found = {r[0] for r in run("SELECT DISTINCT writer FROM chain", ())}
    writers = sorted(found | set(checkpoints) | set(anchors))
    for writer in writers:
        checkpoint = checkpoints.get(writer)
        verify_writer(
            report,
            writer,
            checkpoint,
            _pages(run, writer, checkpoint[0] if checkpoint else 0),
            lambda ids: stored_digests(run, ids),
            anchors.get(writer),
        )
    start = run("SELECT coalesce(max(before_seq), 0) FROM chain_start", ())[0][0]
    unlinked = "FROM calls c WHERE NOT EXISTS (SELECT 1 FROM chain k WHERE k.call_id = c.id)"
    report.unchained = int(run(f"SELECT count(*) {unlinked} AND c.seq <= ?", (start,))[0][0])
    for (call_id,) in run(f"SELECT c.id {unlinked} AND c.seq > ? ORDER BY c.seq LIMIT ?", (start, MAX_PROBLEMS)):
        report.problem("inserted", call_id, None, f"call {call_id} is on no chain: it was inserted, not recorded")
    return report


#: What `verify` says of a store without the chain's tables.
ABSENT = "this store has no chain (written by an interlock before tamper evidence)"


def heads(run: Run) -> list[dict[str, Any]]:
    """Each writer's head (to anchor outside the store) and checkpoint."""
    checkpoints = {w: (p, c) for w, p, c in run("SELECT writer, pos, calls FROM chain_checkpoints", ())}
    writers = sorted({r[0] for r in run("SELECT DISTINCT writer FROM chain", ())} | set(checkpoints))
    out = []
    for writer in writers:
        pos, hash_ = head(run, writer)
        folded = checkpoints.get(writer, (0, 0))
        out.append({"writer": writer, "pos": pos, "hash": hash_, "checkpoint_pos": folded[0], "pruned": folded[1]})
    return out
