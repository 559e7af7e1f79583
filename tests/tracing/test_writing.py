"""Writing batches: rows built straight from a Call equal the record path's, multi-row inserts keep
every row, and the file a batch produces is the same whichever path wrote it."""

from __future__ import annotations

import gzip
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from interlock.core.call import Call, Chunk, new_id
from interlock.core.views import RequestView
from interlock.protocols import ADAPTERS
from interlock.tracing.rows import dumps
from interlock.tracing.store import Store
from interlock.tracing.text import record_texts
from interlock.tracing.writing import MAX_ROWS, Rows, insert_rows, write_records, write_rows
from tests.tracing.test_store import full_call, make_call


def calls_of_every_shape() -> list[Call]:
    secret_headers = make_call(
        request_headers=[("content-type", "application/json"), ("authorization", "Bearer sk-secret")],
        response_headers=[("set-cookie", "a=b"), ("content-type", "text/plain")],
        response_body=b"plain words, not JSON",
    )
    streamed = make_call(
        stream=True,
        response_body=None,
        chunks=[
            Chunk(1.0, b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"Par"}}]}\n\n'),
            Chunk(2.0, b'data: {"choices":[{"index":0,"delta":{"content":"is"},"finish_reason":"stop"}]}\n\n'),
            Chunk(3.0, b"data: [DONE]\n\n"),
        ],
    )
    rewritten = make_call(stream=True, response_body=None, chunks=list(streamed.chunks), agent_chunks=[])
    empty = make_call(request_body=b"", response_body=None, status=None, outcome="aborted", query="")
    unicode = make_call(request_body='{"messages":[{"content":"naïve café \\u2028 ☃"}]}'.encode(), meta={"é": "ü"})
    return [full_call(), make_call(), secret_headers, streamed, rewritten, empty, unicode]


@pytest.mark.parametrize("capture", ["full", "metadata"])
def test_rows_from_a_call_equal_rows_from_its_record(capture: str) -> None:
    for call in calls_of_every_shape():
        direct, via_record = Rows(), Rows()
        direct.add_call(call, capture)
        via_record.add_record(call.to_record(), capture, record_texts)
        assert direct.lists() == via_record.lists(), call


def indexed_text(tmp_path: Path, call: Call, *, direct: bool) -> tuple[str, str]:
    with Store(tmp_path / f"{call.id}-{direct}.db") as store:
        rows = Rows()
        if direct:
            rows.add_call(call, "full")
        else:
            rows.add_record(call.to_record(), "full", record_texts)
        write_rows(store.conn, rows)
        row = store.conn.execute("SELECT request, response FROM calls_fts").fetchone()
        return row[0], row[1]


BODIES = [
    b'{"model":"m","messages":[{"role":"user","content":"x"},{"role":"tool","content":[{"type":"text","text":"y"}]}]}',
    b'{"id":{"nested":"kept"},"type":["a","b"],"object":"skipped","":"empty key","n":[1,2.5,null,true,"z"]}',
    b'{"a":"\\u00e9\\n\\t\\"q\\\\ \\ud83d\\ude00 \\/"}',
    b'"a top-level string"',
    b"[]",
    b"{}",
    b'{"a":""}',
    b"123",
    b"null",
    b'  {"a":"spaces around"}\r\n',
    b'{"a":"b"} trailing',
    b'{"a":"b",}',
    b"{'a':'single quotes'}",
    b'{"a":01}',
    b'{"a":"raw \x01 control"}',
    b"not json at all",
    b'{"a":NaN,"b":"nan is python only"}',
    b'{"a":-Infinity,"b":"so is infinity"}',
    b'\xef\xbb\xbf{"a":"after a byte-order mark"}',
    b'{"a":"nul \\u0000 escape"}',
    b'{"a":"invalid utf-8 \xff"}',
    '{"a":"naïve café ☃"}'.encode(),
    '{"a":"utf-16"}'.encode("utf-16-le"),
    b'{"a":"' + b"long " * 60_000 + b'"}',
    b"[" * 500 + b'"deep"' + b"]" * 500,
    ('{"a":"' + "é☃😀 " * 70_000 + '"}').encode(),  # cut at 256 Ki characters, not bytes
    b'{"a":"' + b"past the size read " * 60_000 + b'"}',  # over 1 MiB: read as text, cut
    b"",
]


@pytest.mark.parametrize("body", BODIES)
def test_the_searchable_text_is_the_same_on_both_paths(tmp_path: Path, body: bytes) -> None:
    call = make_call(request_body=body, response_body=body)
    assert indexed_text(tmp_path, call, direct=True) == indexed_text(tmp_path, call, direct=False)
    # The body parsed on the hot path (the usage stage's ResponseView) is reused, to the same text.
    parsed = make_call(request_body=body, response_body=body)
    ADAPTERS[parsed.protocol].response_view(parsed).tool_calls  # noqa: B018 - parses the message
    assert indexed_text(tmp_path, parsed, direct=True) == indexed_text(tmp_path, call, direct=False)
    streamed = make_call(request_body=body, stream=True, response_body=None, chunks=list(STREAM))
    assert indexed_text(tmp_path, streamed, direct=True) == indexed_text(tmp_path, streamed, direct=False)
    # The request parsed by the parse stage (`call.request_json`) is reused, to the same text.
    try:
        document = json.loads(body)
    except ValueError:
        return  # the parse stage refuses such a body (400): nothing parsed to reuse
    request_parsed = make_call(request_body=body, response_body=body)
    hot_path_parse(request_parsed, document)
    assert indexed_text(tmp_path, request_parsed, direct=True) == indexed_text(tmp_path, call, direct=False)


def hot_path_parse(call: Call, document: Any) -> None:
    """What the parse stage leaves on a call: the parsed request and the body it was parsed from."""
    call.request_json = document
    call.view = RequestView(operation="chat", source=call.request_body)


def test_the_index_reads_the_recorded_request_when_it_is_not_what_was_parsed(tmp_path: Path) -> None:
    body = b'{"messages":[{"role":"user","content":"my card is 4111"}]}'
    edited = make_call(request_body=body)
    hot_path_parse(edited, json.loads(body))
    edited.request_json["messages"][0]["content"] = "changed upstream"  # a stage's edit, in place
    edited.request_changed = True
    assert indexed_text(tmp_path, edited, direct=True)[0] == "my card is 4111"
    redacted = make_call(request_body=body)
    hot_path_parse(redacted, json.loads(body))
    redacted.request_body = b'{"messages":[{"role":"user","content":"my card is <CARD>"}]}'  # the record's redaction
    assert indexed_text(tmp_path, redacted, direct=True)[0] == "my card is <CARD>"
    encoded = make_call(request_body=body, request_headers=[("content-encoding", "br")])
    hot_path_parse(encoded, json.loads(body))  # (a body that says it is compressed is read as the index reads it)
    assert indexed_text(tmp_path, encoded, direct=True) == indexed_text(tmp_path, encoded, direct=False)


def test_compressed_bodies_are_read_by_python(tmp_path: Path) -> None:
    body = gzip.compress(b'{"messages":[{"content":"squeezed words"}]}')
    call = make_call(request_body=body, request_headers=[("content-encoding", "gzip")])
    call.response_headers = [("Content-Encoding", "GZIP")]
    call.response_body = gzip.compress(b'{"content":"answer"}')
    assert indexed_text(tmp_path, call, direct=True) == ("squeezed words", "answer")
    assert indexed_text(tmp_path, call, direct=False) == ("squeezed words", "answer")


STREAM = [
    Chunk(1.0, b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"Par"}}]}\n\n'),
    Chunk(2.0, b'data: {"choices":[{"index":0,"delta":{"content":"is"},"finish_reason":"stop"}]}\n\n'),
    Chunk(3.0, b"data: [DONE]\n\n"),
]


def test_a_call_whose_rows_fail_halfway_leaves_no_rows_behind() -> None:
    rows = Rows()
    rows.add_call(make_call(), "full")
    mark = rows.mark()
    bad = full_call()
    bad.findings[0].value = object()  # type: ignore[assignment]  # not JSON-able: fails after other rows
    with pytest.raises(TypeError):
        rows.add_call(bad, "full")
    assert rows.mark() != mark
    rows.rewind(mark)
    assert rows.mark() == mark


@pytest.mark.parametrize("count", [1, 2, 3, MAX_ROWS - 1, MAX_ROWS, MAX_ROWS + 1, 3 * MAX_ROWS + 5])
def test_multi_row_inserts_write_every_row_once_in_order(count: int) -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT, c BLOB)")
    rows = [(i, f"row {i}", bytes([i % 256]) * 3) for i in range(count)]
    insert_rows(conn, "INSERT INTO t (a, b, c) VALUES (?, ?, ?)", rows)
    assert conn.execute("SELECT a, b, c FROM t ORDER BY rowid").fetchall() == rows


def test_multi_row_inserts_respect_the_parameter_limit() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 10)  # 3 rows of 3 at most per statement
    conn.execute("CREATE TABLE t (a, b, c)")
    rows = [(i, i, i) for i in range(20)]
    insert_rows(conn, "INSERT INTO t (a, b, c) VALUES (?, ?, ?)", rows)
    assert conn.execute("SELECT a, b, c FROM t ORDER BY rowid").fetchall() == rows


def dump_tables(path: Path) -> dict[str, Any]:
    conn = sqlite3.connect(path)
    tables = {
        "calls": "SELECT id, trace_id, session, query, stream, status, outcome, size, capture, meta, attempt_count"
        " FROM calls ORDER BY id",
        "bodies": "SELECT * FROM bodies ORDER BY call_id",
        "chunks": "SELECT * FROM chunks ORDER BY call_id, side, seq",
        "attempts": "SELECT * FROM attempts ORDER BY call_id, seq",
        "events": "SELECT * FROM events ORDER BY call_id, seq",
        "fts": "SELECT c.id, f.request, f.response FROM calls_fts f JOIN calls c ON c.seq = f.rowid ORDER BY c.id",
    }
    out = {name: conn.execute(sql).fetchall() for name, sql in tables.items()}
    conn.close()
    return out


def test_a_batch_written_from_calls_is_the_batch_written_from_records(tmp_path: Path) -> None:
    calls = calls_of_every_shape() * 1
    with Store(tmp_path / "a.db") as a, Store(tmp_path / "b.db") as b:
        a.write([c.to_record() for c in calls])
        rows = Rows()
        for call in calls:
            rows.add_call(call, "full")
        assert write_rows(b.conn, rows) == len(calls)
    assert dump_tables(tmp_path / "a.db") == dump_tables(tmp_path / "b.db")


def test_a_batch_with_known_ids_adds_only_the_new_calls(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        first = [make_call() for _ in range(3)]
        write_records(store.conn, [c.to_record() for c in first])
        again = [*first, make_call()]
        rows = Rows()
        for call in again:
            rows.add_call(call, "full")
        assert write_rows(store.conn, rows) == 1
        assert store.count_calls() == 4
        assert store.conn.execute("SELECT count(*) FROM calls_fts").fetchone()[0] == 4
        assert store.conn.execute("SELECT count(*) FROM bodies").fetchone()[0] == 4


def test_a_large_batch_is_searchable_and_complete(tmp_path: Path) -> None:
    calls = []
    for i in range(3 * MAX_ROWS + 7):
        body = json.dumps({"messages": [{"role": "user", "content": f"needle{i} haystack"}]}).encode()
        calls.append(make_call(id=new_id(), request_body=body))
    with Store(tmp_path / "s.db") as store:
        rows = Rows()
        for call in calls:
            rows.add_call(call, "full")
        assert write_rows(store.conn, rows) == len(calls)
        assert store.count_calls() == len(calls)
        for i in (0, MAX_ROWS, len(calls) - 1):
            assert [r["id"] for r in store.list_calls(q=f"needle{i}")] == [calls[i].id]
        assert len(store.list_calls(q="haystack", limit=10_000)) == len(calls)


def test_dumps_is_json_dumps_with_bytes_as_base64() -> None:
    value = {"a": [1, 2.5, None, True], "é": "☃\u2028", "raw": b"\x00\xff", "nested": {"x": (1, 2)}}
    assert dumps(value) == ('{"a":[1,2.5,null,true],"é":"☃\u2028","raw":{"$bytes":"AP8="},"nested":{"x":[1,2]}}')
    assert json.loads(dumps(["x"])) == ["x"]
    with pytest.raises(TypeError):
        dumps({"lock": object()})


def test_none_and_bytes_reach_sqlite_as_null_and_blob_through_the_cheap_adapters() -> None:
    import interlock.tracing.writing  # noqa: F401 - registers the adapters

    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (a, b, c)")
    insert_rows(conn, "INSERT INTO t (a, b, c) VALUES (?, ?, ?)", [(None, b"\x00body", b""), (None, b"x", None)])
    assert conn.execute("SELECT typeof(a), typeof(b), b, typeof(c), c FROM t ORDER BY rowid").fetchall() == [
        ("null", "blob", b"\x00body", "blob", b""),
        ("null", "blob", b"x", "null", None),
    ]
    assert (type(None), sqlite3.PrepareProtocol) in sqlite3.adapters
