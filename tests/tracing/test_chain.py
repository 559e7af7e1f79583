"""Tamper evidence in the SQLite file: `interlock store verify` names the call someone altered,
deleted or inserted behind interlock's back, and stays quiet after retention and deliberate deletes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from interlock.cli import main
from interlock.core.call import Chunk, Decision, Finding, new_id
from interlock.testing import make_call
from interlock.tracing.backend import open_store
from interlock.tracing.chain import Table, digest
from tests.tracing.frozen_schema import frozen


def _store(tmp_path: Path, count: int = 5) -> tuple[str, list[str]]:
    path = tmp_path / "chain.db"
    ids = []
    with open_store(path) as store:
        for i in range(count):
            call = make_call(agent=f"agent-{i % 2}", started_at=1000.0 + i, duration_ms=12.5, input_tokens=i)
            call.findings = [Finding("EMAIL_ADDRESS", "request.messages[0].content", 0, 5, 0.9, "redact")]
            call.decisions = [Decision("policy", "allow", "r1", "fine")]
            if i == 1:
                call.stream = True
                call.chunks = [Chunk(1.5, b"data: {}\n\n"), Chunk(2, b"data: [DONE]\n\n")]
            store.add(call)
            ids.append(call.id)
    return str(path), ids


def _verify(path: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(main, ["store", "verify", "--store", path, "--json"])
    return result.exit_code, json.loads(result.output)


def _sql(path: str, statement: str, *params: object) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(statement, params)
    conn.close()


def test_an_untouched_store_verifies_and_names_its_head(tmp_path: Path) -> None:
    path, ids = _store(tmp_path)
    code, report = _verify(path)
    assert code == 0 and report["ok"] and report["checked"] == len(ids)
    assert [(h["writer"], h["pos"]) for h in report["heads"]] == [("local", len(ids))]
    human = CliRunner().invoke(main, ["store", "verify", "--store", path])
    assert human.exit_code == 0 and "chain verifies" in human.output


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE bodies SET response_body = CAST('{\"choices\":[]}' AS BLOB) WHERE call_id = ?",
        "UPDATE calls SET agent = 'someone-else' WHERE id = ?",
        "UPDATE events SET action = 'deny' WHERE call_id = ? AND kind = 'decision'",
        "DELETE FROM events WHERE call_id = ? AND kind = 'finding'",
        "UPDATE chunks SET data = CAST('data: {\"x\":1}' AS BLOB) WHERE call_id = ? AND seq = 0",
    ],
)
def test_altering_one_stored_call_fails_and_names_it(tmp_path: Path, statement: str) -> None:
    path, ids = _store(tmp_path)
    _sql(path, statement, ids[1])
    code, report = _verify(path)
    assert code == 1 and not report["ok"]
    assert report["first_problem"]["kind"] == "altered" and report["first_problem"]["call_id"] == ids[1]
    assert report["problem_count"] == 1  # the calls after it still verify against the recorded links
    human = CliRunner().invoke(main, ["store", "verify", "--store", path])
    assert human.exit_code == 1 and ids[1] in human.output


def test_deleting_a_row_fails_and_names_the_call(tmp_path: Path) -> None:
    path, ids = _store(tmp_path)
    for table in ("bodies", "chunks", "attempts", "events"):
        _sql(path, f"DELETE FROM {table} WHERE call_id = ?", ids[2])
    _sql(path, "DELETE FROM calls WHERE id = ?", ids[2])
    code, report = _verify(path)
    assert code == 1 and report["first_problem"] == {**report["first_problem"], "kind": "deleted", "call_id": ids[2]}


def test_deleting_a_call_and_its_link_fails_and_names_its_neighbours(tmp_path: Path) -> None:
    path, ids = _store(tmp_path)
    _sql(path, "DELETE FROM calls WHERE id = ?", ids[2])
    _sql(path, "DELETE FROM chain WHERE call_id = ?", ids[2])
    code, report = _verify(path)
    problem = report["first_problem"]
    assert code == 1 and problem["kind"] == "deleted" and problem["call_id"] == ids[3]
    assert ids[1] in problem["message"]


def test_inserting_a_call_fails_and_names_it(tmp_path: Path) -> None:
    path, ids = _store(tmp_path)
    forged = new_id()
    columns = "id, agent, route, protocol, method, path, outcome, started_at"
    _sql(
        path,
        f"INSERT INTO calls ({columns}) VALUES (?, 'a', 'openai', 'openai', 'POST', '/x', 'ok', 1)",
        forged,
    )
    code, report = _verify(path)
    assert code == 1 and report["first_problem"]["kind"] == "inserted" and report["first_problem"]["call_id"] == forged


def test_a_forged_link_for_an_inserted_call_does_not_verify(tmp_path: Path) -> None:
    path, ids = _store(tmp_path)
    forged = new_id()
    _sql(
        path,
        "INSERT INTO calls (id, agent, route, protocol, method, path, outcome, started_at)"
        " VALUES (?, 'a', 'openai', 'openai', 'POST', '/x', 'ok', 1)",
        forged,
    )
    _sql(
        path, "INSERT INTO chain (writer, pos, call_id, hash) VALUES ('local', ?, ?, ?)", len(ids) + 1, forged, "0" * 64
    )
    code, report = _verify(path)
    assert code == 1 and report["first_problem"]["call_id"] == forged


def test_retention_and_deletes_through_the_store_keep_it_verifiable(tmp_path: Path) -> None:
    path, ids = _store(tmp_path, count=8)
    with open_store(path) as store:
        assert store.delete([ids[5]]) == 1  # out of order: kept as a gone link until the prefix catches up
        assert store.prune(max_age=1, now=1003.5) == 3  # started 1000..1002 (a prefix)
        assert store.verify_chain().ok
        heads = store.chain_heads()
        assert heads == [{"writer": "local", "pos": 8, "hash": heads[0]["hash"], "checkpoint_pos": 3, "pruned": 3}]
        assert store.delete(ids[3:5]) == 2  # folds 4, 5 and the gone 6 into the checkpoint
        assert store.chain_heads()[0]["checkpoint_pos"] == 6
        late = make_call(agent="late")
        store.add(late)
    code, report = _verify(path)
    assert code == 0 and report["checked"] == 3 and report["heads"][0]["pos"] == 9
    _sql(path, "DELETE FROM calls WHERE id = ?", ids[6])  # the first live call after the checkpoint
    code, report = _verify(path)
    assert code == 1 and report["first_problem"]["call_id"] == ids[6]


def test_pruning_everything_keeps_the_head_in_the_checkpoint(tmp_path: Path) -> None:
    path, ids = _store(tmp_path, count=3)
    with open_store(path) as store:
        head = store.chain_heads()[0]
        assert store.prune(max_age=1, now=5000) == 3
        assert store.chain_heads() == [{**head, "checkpoint_pos": 3, "pruned": 3}]
        store.add(make_call())
        assert store.verify_chain().ok and store.chain_heads()[0]["pos"] == 4


def test_exports_and_imports_are_chained_in_their_new_file(tmp_path: Path) -> None:
    path, ids = _store(tmp_path)
    bundle = tmp_path / "bundle.db"
    with open_store(path) as store:
        assert store.export(bundle, agent="agent-0") == 3
    code, report = _verify(str(bundle))
    assert code == 0 and report["checked"] == 3
    with open_store(tmp_path / "other.db") as other:
        other.add(make_call())
        assert other.import_from(bundle) == 3
        assert other.verify_chain().ok and other.verify_chain().checked == 4


def test_calls_from_before_the_chain_are_counted_not_failed(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    frozen(conn, 1)
    conn.execute(
        "INSERT INTO calls (id, agent, route, protocol, method, path, outcome, started_at)"
        " VALUES ('old-1', 'a', 'openai', 'openai', 'POST', '/x', 'ok', 1)"
    )
    conn.close()
    with open_store(path) as store:  # migrated here
        store.add(make_call())
        report = store.verify_chain()
    assert report.ok and report.unchained == 1 and report.checked == 1


def test_the_canonical_bytes_keep_old_rows_and_number_types_stable() -> None:
    before = Table("calls", ("id", "started_at"), reals=("started_at",))
    after = Table("calls", ("id", "started_at"), reals=("started_at",), added=("workflow",))  # a later column

    def of(table: Table, row: tuple[object, ...]) -> bytes:
        out: list[bytes] = []
        table.add(row, out)
        return digest(out)

    # As written (an int) and as SQLite gives a REAL column back; before and after a column was added.
    assert of(before, ("x", 1000)) == of(before, ("x", 1000.0)) == of(after, ("x", 1000.0, None))
    assert of(after, ("x", 1000.0, "wf")) != of(before, ("x", 1000.0))
    assert of(before, ("x", 1000.5)) != of(before, ("x", 1000.0))
    raw = Table("bodies", ("call_id", "body"), raw=("body",))
    assert of(raw, ("x", b"")) != of(raw, ("x", None)) and of(raw, ("x", b"ab")) == of(raw, ("x", "ab"))


def test_each_writer_keeps_a_chain_of_its_own(tmp_path: Path) -> None:
    from interlock.config import Store as StoreSettings

    path, ids = _store(tmp_path, count=2)  # writer "local"
    with open_store(StoreSettings(path=path, writer="replica-b")) as other:
        other.add(make_call(agent="b"))
        other.add(make_call(agent="b"))
        assert [(h["writer"], h["pos"]) for h in other.chain_heads()] == [("local", 2), ("replica-b", 2)]
    code, report = _verify(path)
    assert code == 0 and report["checked"] == 4 and set(report["writers"]) == {"local", "replica-b"}
    _sql(path, "UPDATE calls SET model = 'other' WHERE agent = 'b' AND id = (SELECT max(id) FROM calls)")
    code, report = _verify(path)
    assert code == 1 and report["first_problem"]["writer"] == "replica-b"


#: The columns each call's digest covers by position, as they were when the chain came (schema 5).
CHAINED_AT_SCHEMA_5 = {
    "calls": "id trace_id span_id session agent route protocol method path model query stream status outcome"
    " error_code error started_at ttfb_ms duration_ms input_tokens output_tokens attempt_count upstream truncated"
    " rescued capture size workflow cost_usd cost_source parent_span_id meta",
    "bodies": "call_id request_headers response_headers request_body upstream_body response_body agent_response_body"
    " agent_chunks response_message extra",
    "chunks": "call_id side seq t_ms data",
    "attempts": "call_id seq upstream url model started_ms duration_ms ttfb_ms status error backoff_ms data",
    "events": "call_id seq kind stage action name data",
}


def test_the_chained_columns_only_grow_at_the_end() -> None:
    """Reordering or inserting a column among these would make every stored call fail `verify`:
    a column added later goes at the end of its INSERT and is hashed by name (`chain.Table.added`)."""
    from interlock.tracing.rows import CHAINED_TABLES, CHAINED_WIDTHS

    for name, columns, *_ in CHAINED_TABLES:
        frozen = tuple(CHAINED_AT_SCHEMA_5[name].split())
        assert columns[: len(frozen)] == frozen, f"{name}: chained columns were reordered or one was inserted"
        assert CHAINED_WIDTHS[name] == len(frozen)


def test_a_column_added_after_the_chain_keeps_older_digests() -> None:
    from interlock.tracing.store_chain import TABLES

    calls = TABLES[0][0]
    reals, raw = ("started_at", "ttfb_ms", "duration_ms"), ("error", "meta")
    widened = Table("calls", CHAINED_AT_SCHEMA_5["calls"].split(), reals, raw, added=("later",))
    row = tuple(1.5 if i in (16, 17, 18) else f"v{i}" for i in range(32))
    before: list[bytes] = []
    after: list[bytes] = []
    calls.add(row, before)
    widened.add((*row, None), after)  # an old row read back after a column was added
    assert digest(before) == digest(after)


def test_an_anchored_head_catches_a_cut_or_rewritten_chain(tmp_path: Path) -> None:
    path, ids = _store(tmp_path, count=4)
    head = _verify(path)[1]["heads"][0]
    anchor = f"{head['writer']}:{head['pos']}:{head['hash']}"  # kept outside the store, say
    ok = CliRunner().invoke(main, ["store", "verify", "--store", path, "--json", "--anchor", anchor])
    assert ok.exit_code == 0 and json.loads(ok.output)["ok"]
    # The newest call and its link removed together: the chain alone still verifies ...
    _sql(path, "DELETE FROM calls WHERE id = ?", ids[-1])
    _sql(path, "DELETE FROM chain WHERE call_id = ?", ids[-1])
    assert _verify(path)[0] == 0
    # ... the anchor does not.
    cut = CliRunner().invoke(main, ["store", "verify", "--store", path, "--json", "--anchor", anchor])
    assert cut.exit_code == 1 and json.loads(cut.output)["first_problem"]["kind"] == "truncated"
    # A link rewritten where the anchor is: named.
    earlier = f"local:2:{'0' * 64}"
    rewritten = CliRunner().invoke(main, ["store", "verify", "--store", path, "--json", "--anchor", earlier])
    problem = json.loads(rewritten.output)["first_problem"]
    assert rewritten.exit_code == 1 and problem["kind"] == "rewritten" and problem["call_id"] == ids[1]
    bad = CliRunner().invoke(main, ["store", "verify", "--store", path, "--anchor", "local:two:abc"])
    assert bad.exit_code == 2
