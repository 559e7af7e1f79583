"""Copying calls between store files (export to a bundle, import from one), inside SQLite; reading
a bundle file's facts for replay's checks."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from interlock.core.sqlite import transaction
from interlock.tracing import store_chain
from interlock.tracing.rows import CHILD_TABLES
from interlock.tracing.schema import SCHEMA_VERSION
from interlock.tracing.writing import insert_rows


def copy_calls(dest: sqlite3.Connection, source_path: str, where: str, params: Sequence[Any], *, writer: str) -> int:
    """Copy the source's calls matching `where` (on alias `s`) into `dest`, skipping ids it has, and
    link them onto `writer`'s chain in `dest` (the source's chain, if any, covers other calls)."""
    dest.execute("ATTACH DATABASE ? AS src", (f"file:{quote(source_path)}?mode=ro",))
    try:
        with transaction(dest):
            dest.execute("CREATE TEMP TABLE IF NOT EXISTS copying (id TEXT PRIMARY KEY)")
            dest.execute("DELETE FROM copying")
            dest.execute(
                f"INSERT INTO copying (id) SELECT s.id FROM src.calls s WHERE {where}"
                " AND s.id NOT IN (SELECT id FROM main.calls)",
                params,
            )
            count = dest.execute("SELECT count(*) FROM copying").fetchone()[0]
            for table in ("calls", *CHILD_TABLES):
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
            _link_copied(dest, writer)
            dest.execute("DELETE FROM copying")
    finally:
        dest.execute("DETACH DATABASE src")
    return int(count)


def _link_copied(dest: sqlite3.Connection, writer: str) -> None:
    """Link the calls just copied, in the order they were inserted, from their stored rows."""
    ids = [r[0] for r in dest.execute("SELECT c.id FROM main.calls c JOIN copying USING (id) ORDER BY c.seq")]
    run = store_chain.sqlite_run(dest)
    for start in range(0, len(ids), store_chain.PAGE):
        page = ids[start : start + store_chain.PAGE]
        found = store_chain.stored_digests(run, page)
        links = store_chain.new_links(run, writer, [(call_id, found[call_id]) for call_id in page])
        insert_rows(dest, store_chain.INSERT_LINK, links)


def _common_columns(conn: sqlite3.Connection, table: str) -> list[str]:
    """The destination's columns of `table` that the ATTACHed source has too (an older file lacks
    later ones). A schema-qualified PRAGMA, not sqlite-utils: its `Table.columns` reads the main
    schema only (`db["src.calls"].columns` is empty), and opening the source a second time to ask it
    would be a second connection for the same one PRAGMA."""
    mine = [r[1] for r in conn.execute(f"PRAGMA main.table_info({table})")]
    theirs = {r[1] for r in conn.execute(f"PRAGMA src.table_info({table})")}
    return [c for c in mine if c in theirs]


def bundle_facts(path: str) -> tuple[int, set[str], int, int]:
    """What a bundle file (a store file, whatever backend wrote it) says about itself, read-only:
    (schema version, table names, calls, calls captured in full). Raises sqlite3.DatabaseError.
    On the stdlib connection: sqlite-utils has no reader for `user_version`, and replay, which calls
    this before anything else, would pay its import (~0.25 s, schema.py) for three reads."""
    immutable = not Path(path + "-wal").exists()  # every export: nothing can change it, no -shm appears
    uri = f"file:{quote(path)}?mode=ro" + ("&immutable=1" if immutable else "")
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        total = full = 0
        if version and "calls" in tables and version <= SCHEMA_VERSION:
            total, full = conn.execute("SELECT count(*), coalesce(sum(capture = 'full'), 0) FROM calls").fetchone()
        return version, tables, int(total), int(full)
    finally:
        conn.close()
