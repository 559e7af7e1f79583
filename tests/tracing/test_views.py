"""`views.call_detail`: the JSON view of one call, from one read of its rows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from interlock.core.call import Attempt, Call, Chunk
from interlock.testing import make_call
from interlock.tracing.rows import INSERT_BODY, insert_columns
from interlock.tracing.store import Store
from interlock.tracing.views import call_detail, detail_of, stored_answer

STREAM = (
    b'data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,'
    b'"delta":{"role":"assistant","content":"on the cape"},"finish_reason":null}]}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,'
    b'"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
)


def streamed_call() -> Call:
    call = make_call(
        request_body=b'{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"where?"}]}',
        stream=True,
        response_headers=[("content-type", "text/event-stream")],
        response_body=None,
        chunks=[Chunk(5.0, STREAM)],
        session="s",
    )
    call.attempts = [Attempt("primary", "http://a/v1/chat/completions", "gpt-4o", 0.0, 5.0, 4.0, 200, None, 0.0)]
    return call


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "calls.db") as opened:
        yield opened


def test_call_detail_reads_the_call_once(store: Store) -> None:
    call = streamed_call()
    store.write([call.to_record()], capture="full")
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    try:
        detail = call_detail(store, call.id)
    finally:
        store.conn.set_trace_callback(None)
    assert detail is not None
    # The joined row (with the reassembled stream), then chunks, attempts and events: nothing re-read.
    assert len(statements) == 4, statements
    assert sum("FROM calls" in s for s in statements) == 1
    assert (
        detail["capture"] == "full"
        and detail["attempt_count"] == 1
        and detail["size"] == len(call.request_body) + len(STREAM)
    )
    ((stored,),) = store.rows("SELECT response_message FROM bodies WHERE call_id = ?", (call.id,))
    assert detail["response_message"] == json.loads(stored)  # the writer's reassembly, as stored
    assert detail["response_message"]["choices"][0]["message"]["content"] == "on the cape"
    assert detail["chunks"][0]["size"] == len(STREAM) and detail["request_body"]["encoding"] == "json"


def test_call_detail_of_a_metadata_only_call(store: Store) -> None:
    call = streamed_call()
    store.write([call.to_record()], capture="metadata")
    detail = call_detail(store, call.id)
    assert detail is not None
    assert (detail["capture"], detail["size"], detail["response_message"]) == ("metadata", 0, None)
    assert call_detail(store, "missing") is None


def plain_call(body: bytes) -> Call:
    return make_call(response_headers=[("content-type", "application/json")], response_body=body, session="s")


def test_the_call_page_reads_a_recorded_answer_once(store: Store) -> None:
    # The raw view and the conversation (the UI's call page) share one parse: of the body, of the
    # stored reassembly of a stream.
    plain = plain_call(b'{"id":"c2","object":"chat.completion","choices":[{"index":0,"message":{"content":"hi"}}]}')
    streamed = streamed_call()
    store.write([plain.to_record(), streamed.to_record()], capture="full")
    for call, key in ((plain, "response_body"), (streamed, "response_message")):
        found = store.get_detail(call.id)
        assert found is not None
        answer = stored_answer(*found)
        detail = detail_of(*found, answer)
        shown = detail[key]["content"] if key == "response_body" else detail[key]
        assert shown is answer.message and shown is not None


@pytest.mark.parametrize(
    ("body", "encoding", "content"),
    [(b"<html>bad gateway</html>", "text", "<html>bad gateway</html>"), (b"null", "json", None), (b"", "text", "")],
)
def test_a_body_the_answer_does_not_read_as_json_is_shown_as_it_is(
    store: Store, body: bytes, encoding: str, content: object
) -> None:
    call = plain_call(body)
    store.write([call.to_record()], capture="full")
    detail = call_detail(store, call.id)
    assert detail is not None
    assert (detail["response_body"]["encoding"], detail["response_body"]["content"]) == (encoding, content)


def test_a_damaged_stored_reassembly_reads_as_none_not_an_error(store: Store) -> None:
    call = streamed_call()
    store.write([call.to_record()], capture="full")
    store.conn.execute("UPDATE bodies SET response_message = '{not json' WHERE call_id = ?", (call.id,))
    detail = call_detail(store, call.id)
    assert detail is not None and detail["response_message"] is None


def test_a_copied_record_keeps_its_stored_reassembly_as_stored(store: Store) -> None:
    # An export or import (`record_pages`) copies the stored JSON text: not parsed and written again.
    call = streamed_call()
    store.write([call.to_record()], capture="full")
    spaced = '{"choices": [{"index": 0, "message": {"content": "on the cape"}}]}'
    store.conn.execute("UPDATE bodies SET response_message = ? WHERE call_id = ?", (spaced, call.id))
    (rows,) = list(store.record_pages(["c.id = ?"], [call.id]))
    column = insert_columns(INSERT_BODY).index("response_message")
    assert [row[column] for row in rows.bodies] == [spaced]
