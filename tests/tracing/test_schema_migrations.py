"""The schema's migrations (sqlite-utils since issue 18) against frozen copies of the SQL that made
the files already out there: such a file opens, migrates with its data intact, and a new file has
exactly the shape the old code gave it (the chain hashes columns by position; PostgreSQL's schema
is derived from this shape, `pg_schema.sqlite_shape`)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from interlock.core.state_schema import STATE_TABLES
from interlock.tracing import pg_schema
from interlock.tracing.schema import MIGRATIONS, SCHEMA_VERSION, SchemaError, database, transform
from interlock.tracing.store import Store
from tests.tracing.frozen_schema import FIRST_USE, FROZEN_STEPS, frozen
from tests.tracing.test_store import full_call


def current(conn: sqlite3.Connection, version: int) -> None:
    db = database(conn)
    for migration in MIGRATIONS[:version]:
        migration(db)
    conn.execute(f"PRAGMA user_version = {version}")


def shape(conn: sqlite3.Connection) -> dict[str, Any]:
    """What a schema is made of, without how its SQL was spelled: tables (rowid or not), columns
    in order with type, NOT NULL, default and key, indexes with their columns and uniqueness."""
    out: dict[str, Any] = {}
    for _, name, kind, ncol, without_rowid, strict in conn.execute("PRAGMA main.table_list"):
        if name.startswith("sqlite_") or name.startswith("calls_fts_"):
            continue  # SQLite's own, and the FTS5 table's shadow tables (made by the virtual table)
        indexes = sorted(
            (index if origin == "c" else origin, unique, [r[2] for r in conn.execute(f"PRAGMA index_info({index})")])
            for _, index, unique, origin, _ in conn.execute(f"PRAGMA index_list({name})")
        )
        out[name] = {
            "kind": kind,
            "without_rowid": without_rowid,
            "strict": strict,
            "columns": conn.execute(f"PRAGMA table_info({name})").fetchall() if kind == "table" else ncol,
            "indexes": indexes,
        }
    out["calls_fts"]["sql"] = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'calls_fts'").fetchone()
    out["version"] = conn.execute("PRAGMA user_version").fetchone()[0]
    return out


def memory(build: Any, version: int) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    build(conn, version)
    return conn


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION + 1))
def test_the_migrations_make_the_shape_the_frozen_sql_made(version: int) -> None:
    assert shape(memory(current, version)) == shape(memory(frozen, version))
    assert SCHEMA_VERSION == max(FROZEN_STEPS), "a new migration: freeze its SQL here once released"


def test_a_new_store_file_has_the_released_shape(tmp_path: Path) -> None:
    with Store(tmp_path / "new.db") as store:
        made = shape(store.conn)
    assert made == shape(memory(frozen, SCHEMA_VERSION))


def old_call_rows(conn: sqlite3.Connection, call_id: str) -> None:
    """A call as version 1 wrote it (every table of version 1 has a row), in raw SQL."""
    conn.execute(
        "INSERT INTO calls (id, session, agent, route, protocol, method, path, model, stream, status, outcome,"
        " started_at, duration_ms, input_tokens, output_tokens, attempt_count, capture, size, meta)"
        " VALUES (?, 'sess-old', 'planner', 'openai', 'openai', 'POST', '/chat/completions', 'gpt-4o', 1, 200,"
        " 'ok', 1000.5, 12.5, 3, 4, 1, 'full', 42, '{\"k\": 1}')",
        (call_id,),
    )
    conn.execute(
        "INSERT INTO bodies (call_id, request_headers, response_headers, request_body, response_body)"
        " VALUES (?, '[[\"content-type\", \"application/json\"]]', '[]', ?, ?)",
        (call_id, b'{"messages":[{"role":"user","content":"lighthouse keeper"}]}', b"data: {}\n\n"),
    )
    conn.execute("INSERT INTO chunks VALUES (?, 0, 0, 5.5, ?)", (call_id, b"data: {}\n\n"))
    conn.execute(
        "INSERT INTO attempts VALUES (?, 0, 'primary', 'http://a/v1', 'gpt-4o', 0, 12.0, 5.0, 200, NULL, 0, ?)",
        (
            call_id,
            '{"upstream": "primary", "url": "http://a/v1", "model": "gpt-4o", "started_ms": 0.0,'
            ' "duration_ms": 12.0, "ttfb_ms": 5.0, "status": 200, "error": null, "backoff_ms": 0.0}',
        ),
    )
    conn.execute(
        "INSERT INTO events VALUES (?, 0, 'decision', 'policy', 'allow', 'rule-1', ?)",
        (call_id, '{"stage": "policy", "action": "allow", "rule": "rule-1", "reason": "fine", "detail": {}}'),
    )
    seq = conn.execute("SELECT seq FROM calls WHERE id = ?", (call_id,)).fetchone()[0]
    conn.execute("INSERT INTO calls_fts (rowid, request, response) VALUES (?, 'lighthouse keeper', '')", (seq,))


#: A row of each table made on first use before version 6 (`FIRST_USE`), as its code wrote it.
FIRST_USE_ROWS = {
    "stops": [("session", "sess-old", "runaway loop", 1000.0)],
    "mcp_pins": [("files", "read", "h1", '{"name": "read"}', 999.0, "h2", '{"name": "read", "x": 1}', 1001.0)],
    "policy_counters": [("2026-12-05", "budget", "agent:planner", 1200, 0.25, 1000.0)],
    "policy_life": [("caps", "session:sess-old", "calls", 7.0, 1000.0)],
    "policy_windows": [("rate", "agent:planner", "calls", 1000.0, 1.0)],
    "policy_gauges": [("conc", "agent:planner", "calls", 4242, 1.0)],
    "vault_values": [("sess-old", "<EMAIL_1>", b"mac", b"sealed", 1)],
    "vault_sessions": [("sess-old", 1000.0, 1)],
    "vault_numbers": [("sess-old", "EMAIL", 1)],
}


def first_use_rows(conn: sqlite3.Connection) -> None:
    """The tables as their code made them on first use (outside the versions), each with a row."""
    for statement in FIRST_USE.split(";"):
        if statement.strip():
            conn.execute(statement)
    for table, rows in FIRST_USE_ROWS.items():
        conn.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' for _ in rows[0])})", rows)


def old_file(path: Path, version: int, *, first_use: bool) -> None:
    """A store file of `version` as the old code left it: a call written at version 1 (every table
    of version 1 has a row), the file upgraded by the frozen SQL, and (`first_use`) the tables made
    on first use, with their rows."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    frozen(conn, 1)
    old_call_rows(conn, "old-call")
    frozen(conn, version, start=2)
    if first_use and version < 6:
        first_use_rows(conn)
    conn.close()


def rows_of(conn: sqlite3.Connection, tables: Any) -> dict[str, list[Any]]:
    return {t: conn.execute(f"SELECT * FROM {t}").fetchall() for t in tables}


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION + 1))
def test_a_file_made_by_the_frozen_sql_opens_and_migrates_with_its_calls_intact(tmp_path: Path, version: int) -> None:
    path = tmp_path / f"v{version}.db"
    # Files of versions 4 and 5 with the tables made on first use (kill switch, pins, counters,
    # vault) and rows in them; older ones without, which gain them empty.
    old_file(path, version, first_use=version >= 4)
    conn = sqlite3.connect(path)
    before = rows_of(conn, ("bodies", "chunks", "attempts", "events"))
    state = rows_of(conn, FIRST_USE_ROWS) if version >= 4 else {t: [] for t in FIRST_USE_ROWS}
    conn.close()

    with Store(path) as store:
        assert store.found_version == version
        assert store.schema_version == SCHEMA_VERSION
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        for table, rows in before.items():
            assert store.conn.execute(f"SELECT * FROM {table}").fetchall() == rows, table
        old = store.get_call("old-call")
        assert old is not None
        assert (old.agent, old.session, old.model, old.stream, old.status, old.started_at) == (
            "planner",
            "sess-old",
            "gpt-4o",
            True,
            200,
            1000.5,
        )
        assert (old.input_tokens, old.output_tokens, old.meta) == (3, 4, {"k": 1})
        assert [c.data for c in old.chunks] == [b"data: {}\n\n"] and old.attempts[0].upstream == "primary"
        assert old.decisions[0].rule == "rule-1"
        assert (old.workflow, old.rescued, old.cost_usd) == (None, False, None)  # columns the file lacked
        assert [row["id"] for row in store.list_calls(q="lighthouse")] == ["old-call"]
        new = full_call()
        store.add(new)
        got = store.get_call(new.id)
        assert got is not None and got.to_record() == new.to_record()
        report = store.verify_chain()
        assert report.ok and report.checked == 1 and report.unchained == 1
        # Every table made on first use before version 6 is kept with its rows, or made empty.
        assert rows_of(store.conn, FIRST_USE_ROWS) == state
        assert [(s["kind"], s["name"]) for s in store.stops()] == [(r[0], r[1]) for r in state["stops"]]
        assert [(p["route"], p["tool"], p["seen"]) for p in store.mcp_pins()] == [
            (r[0], r[1], {"name": "read", "x": 1}) for r in state["mcp_pins"]
        ]
    with Store(path) as again:  # opening a migrated file migrates nothing
        assert again.found_version == SCHEMA_VERSION


def test_interlock_store_migrate_takes_a_version_5_file_with_its_first_use_tables_to_6(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from interlock.cli import main

    path = tmp_path / "v5.db"
    old_file(path, 5, first_use=True)
    cli = CliRunner()
    migrated = cli.invoke(main, ["store", "migrate", "--store", str(path), "--json"])
    assert migrated.exit_code == 0, migrated.output
    assert (json.loads(migrated.output)["from"], json.loads(migrated.output)["to"]) == (5, SCHEMA_VERSION)
    again = cli.invoke(main, ["store", "migrate", "--store", str(path), "--json"])
    assert json.loads(again.output)["from"] == SCHEMA_VERSION
    conn = sqlite3.connect(path)
    try:
        assert rows_of(conn, FIRST_USE_ROWS) == FIRST_USE_ROWS
        assert shape(conn) == shape(memory(frozen, SCHEMA_VERSION))  # as a new file: nothing outside the versions
    finally:
        conn.close()


def test_a_file_with_only_tables_made_outside_a_migration_is_a_new_store(tmp_path: Path) -> None:
    """No schema version, only tables interlock makes outside a store's migration (at a deleted
    store's path: the counters' next save, or an older interlock's kill switch poll): migrated, every
    row kept. Any other table and it is not a store: refused, untouched."""
    path = tmp_path / "made-again.db"
    conn = sqlite3.connect(path, isolation_level=None)
    first_use_rows(conn)
    conn.close()
    with Store(path) as store:
        assert (store.found_version, store.schema_version) == (0, SCHEMA_VERSION)
        assert rows_of(store.conn, FIRST_USE_ROWS) == FIRST_USE_ROWS
        assert [s["name"] for s in store.stops()] == ["sess-old"]

    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign, isolation_level=None)
    first_use_rows(conn)
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.close()
    with pytest.raises(SchemaError, match="not an interlock store"):
        Store(foreign)
    conn = sqlite3.connect(foreign)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    conn.close()


def test_transform_keeps_the_data_the_chain_and_what_sqlite_utils_would_change_silently(tmp_path: Path) -> None:
    with Store(tmp_path / "t.db") as store:
        call = full_call()
        store.add(call)
        before = shape(store.conn)
        db = database(store.conn)
        store.conn.execute("BEGIN IMMEDIATE")  # as `migrate` runs a step
        transform(db, "calls", not_null={"model"}, defaults={"capture": "metadata"})
        store.conn.execute("COMMIT")
        after = shape(store.conn)
        changed = {c[1]: c for c in after["calls"]["columns"]}
        assert changed["model"][3] == 1 and changed["capture"][4] == "'metadata'"
        # Everything else as it was: numeric defaults still numbers (not '0'), keys, uniqueness, indexes.
        unchanged = ("model", "capture")
        assert [c for c in after["calls"]["columns"] if c[1] not in unchanged] == [
            c for c in before["calls"]["columns"] if c[1] not in unchanged
        ]
        assert after["calls"]["indexes"] == before["calls"]["indexes"]
        got = store.get_call(call.id)
        assert got is not None and got.to_record() == call.to_record()
        assert [row["id"] for row in store.list_calls(q="lighthouse")] == [call.id]  # FTS rowid = seq kept
        report = store.verify_chain()
        assert report.ok and report.checked == 1

        with pytest.raises(SchemaError, match="WITHOUT ROWID"):
            transform(db, "chunks", types={"t_ms": int})
        for change in ({"types": {"size": float}}, {"rename": {"agent": "who"}}, {"drop": ["meta"]}):
            with pytest.raises(SchemaError, match="chain"):
                transform(db, "calls", **change)
        assert shape(store.conn) == after
        transform(db, "chain_checkpoints", types={"at": int})  # not a chained table: allowed
        assert [c[2] for c in store.conn.execute("PRAGMA table_info(chain_checkpoints)") if c[1] == "at"] == ["INTEGER"]


def test_postgres_schema_is_derived_from_the_same_shape() -> None:
    # Every version's derived PostgreSQL statements, from a fresh derivation of the migrations.
    pg_schema.sqlite_shape.cache_clear()
    statements = [pg_schema.statements_for(v) for v in range(1, SCHEMA_VERSION + 1)]
    assert any("ADD COLUMN cost_usd DOUBLE PRECISION" in s for s in statements[3])
    assert any("ADD COLUMN rescued BIGINT NOT NULL DEFAULT 0" in s for s in statements[2])
    assert "CREATE INDEX calls_workflow ON calls (workflow, id)" in statements[1]


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION + 1))
def test_an_old_file_as_a_bundle_is_read_unchanged_and_imports(tmp_path: Path, version: int) -> None:
    path = tmp_path / f"bundle-v{version}.db"
    old_file(path, version, first_use=version == 5)
    content = path.read_bytes()

    with Store(path, readonly=True) as bundle:  # read through compat views; the file is never changed
        old = bundle.get_call("old-call")
        assert old is not None and old.agent == "planner" and old.rescued is False
        assert [row["id"] for row in bundle.list_calls(q="lighthouse")] == ["old-call"]
        # An older file may lack the tables made on first use (nothing stopped or pinned), or hold them.
        assert len(bundle.stops()) == len(bundle.mcp_pins()) == (version == 5)
    assert path.read_bytes() == content

    with Store(tmp_path / "into.db") as store:
        assert store.import_from(path) == 1
        got = store.get_call("old-call")
        assert got is not None and got.to_record() == old.to_record()
        assert [row["id"] for row in store.list_calls(q="lighthouse")] == ["old-call"]
        assert store.verify_chain().ok


def test_a_new_store_loads_sqlite_utils_without_numpy(tmp_path: Path) -> None:
    # In a fresh interpreter: the pytest process may have numpy loaded already.
    script = (
        "import sys; from interlock.tracing.store import Store\n"
        f"with Store({str(tmp_path / 'n.db')!r}) as store: store.db.query('SELECT 1')\n"
        "assert 'sqlite_utils.db' in sys.modules and 'numpy' not in sys.modules, sorted(sys.modules)\n"
        "import numpy  # and nothing was left in the way of importing it\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_a_postgres_store_of_version_5_keeps_the_tables_it_made_on_first_use(postgres_server: Any) -> None:
    """A PostgreSQL store migrated by an older interlock to version 5, whose kill switch and MCP pins
    made their tables on first use (TEXT without the "C" collation), migrates to version 6 with
    their rows; the shared state's tables stay SQLite's."""
    import psycopg

    from interlock.tracing.backend import open_store

    url = postgres_server.database("migrate_first_use")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(pg_schema.MIGRATIONS_TABLE)
        for version in range(1, 6):
            for statement in pg_schema.statements_for(version):
                conn.execute(statement)
            conn.execute("INSERT INTO interlock_migrations (version, statements) VALUES (%s, '')", (version,))
        for statement in FIRST_USE.split(";")[:2]:  # stops and mcp_pins, as PostgresStops/Pins made them
            conn.execute(statement.replace("REAL", "DOUBLE PRECISION"))
        for table in ("stops", "mcp_pins"):
            (row,) = FIRST_USE_ROWS[table]
            conn.execute(f"INSERT INTO {table} VALUES ({', '.join('%s' for _ in row)})", row)
        conn.execute("INSERT INTO stops VALUES ('agent', 'B', 'x', 2.0), ('agent', 'a', 'x', 2.0)")

    store = open_store(url)
    try:
        assert store.migrate() == (5, SCHEMA_VERSION)
        assert [(s["kind"], s["name"]) for s in store.stops()] == [
            ("agent", "B"),  # bytewise, as SQLite sorts: the collation the derived schema gives
            ("agent", "a"),
            ("session", "sess-old"),
        ]
        assert [(p["route"], p["tool"], p["pinned"]) for p in store.mcp_pins()] == [("files", "read", {"name": "read"})]
        store.set_stop("session", "sess-new", "why", 3.0)
        assert len(store.stops()) == 4
    finally:
        store.close()
    with psycopg.connect(url) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        collations = conn.execute(
            "SELECT DISTINCT collation_name FROM information_schema.columns"
            " WHERE table_name IN ('stops', 'mcp_pins') AND data_type = 'text'"
        ).fetchall()
    assert {"stops", "mcp_pins"} <= tables and not tables & STATE_TABLES
    assert collations == [("C",)]
