"""`interlock store query`: ad-hoc read-only SQL over the store file (sqlite-utils)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from interlock.cli import main
from interlock.core.call import Call, new_id
from interlock.tracing.backend import StoreError, open_store
from interlock.tracing.schema import SCHEMA_VERSION
from interlock.tracing.store import SQLiteStore


def _store_with(tmp_path: Path, agents: list[str]) -> str:
    path = tmp_path / "q.db"
    with open_store(path) as store:
        for agent in agents:
            call = Call(id=new_id(), route="openai", protocol="openai", method="POST", path="/chat/completions")
            call.agent, call.request_body = agent, b'{"model":"gpt-4o"}'
            store.add(call)
    return str(path)


def test_a_query_prints_rows_as_json_lines_and_as_a_table(tmp_path: Path) -> None:
    db = _store_with(tmp_path, ["a", "a", "b"])
    sql = "SELECT agent, count(*) AS n FROM calls GROUP BY agent ORDER BY agent"
    result = CliRunner().invoke(main, ["store", "query", "--store", db, "--json", sql])
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.output.splitlines()] == [{"agent": "a", "n": 2}, {"agent": "b", "n": 1}]
    table = CliRunner().invoke(
        main, ["store", "query", "--store", db, "-p", "b", "SELECT agent FROM calls WHERE agent = ?"]
    )
    assert table.exit_code == 0 and table.output.splitlines() == ["agent", "b"]


def test_rows_are_bounded_and_blobs_are_text(tmp_path: Path) -> None:
    db = _store_with(tmp_path, ["a"] * 5)
    result = CliRunner().invoke(
        main, ["store", "query", "--store", db, "--json", "--limit", "2", "SELECT request_body FROM bodies"]
    )
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.output.splitlines()] == [{"request_body": '{"model":"gpt-4o"}'}] * 2


def test_the_store_is_read_only_and_bad_sql_is_a_clean_error(tmp_path: Path) -> None:
    db = _store_with(tmp_path, ["a"])
    for sql in ("DELETE FROM calls", "SELEC nothing"):
        result = CliRunner().invoke(main, ["store", "query", "--store", db, sql])
        assert result.exit_code == 1 and "the query failed" in result.output
    with open_store(db, readonly=True) as store:
        assert store.count_calls() == 1


def test_a_statement_without_rows_is_a_clean_error_and_changes_nothing(tmp_path: Path) -> None:
    db = _store_with(tmp_path, ["a"])
    attach = f"ATTACH DATABASE '{tmp_path / 'other.db'}' AS other"
    for sql in ("VACUUM", "BEGIN", attach, "", "PRAGMA user_version = 9"):
        result = CliRunner().invoke(main, ["store", "query", "--store", db, sql])
        assert result.exit_code == 1 and "the query failed" in result.output, (sql, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "other.db").exists()
    with open_store(db, readonly=True) as store:
        assert store.schema_version == SCHEMA_VERSION and store.count_calls() == 1


def test_a_runaway_query_is_stopped_at_its_time_bound(tmp_path: Path) -> None:
    db = _store_with(tmp_path, ["a"])
    endless = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"
    with open_store(db, readonly=True) as store:
        assert isinstance(store, SQLiteStore)
        with pytest.raises(StoreError, match="was stopped"):
            store.read_only_query(endless, [], 10, timeout=0.2)
        # The connection is usable afterwards, with no bound left behind.
        assert store.read_only_query("SELECT count(*) AS n FROM calls", [], 10) == [{"n": 1}]
