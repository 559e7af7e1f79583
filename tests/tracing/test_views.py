"""`views.call_detail`: the JSON view of one call, from one read of its rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from interlock.core.call import Attempt, Call, Chunk
from interlock.testing import make_call
from interlock.tracing.store import Store
from interlock.tracing.views import call_detail

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
    assert detail["response_message"] == store.response_message(call.id)
    assert detail["response_message"]["choices"][0]["message"]["content"] == "on the cape"
    assert detail["chunks"][0]["size"] == len(STREAM) and detail["request_body"]["encoding"] == "json"


def test_call_detail_of_a_metadata_only_call(store: Store) -> None:
    call = streamed_call()
    store.write([call.to_record()], capture="metadata")
    detail = call_detail(store, call.id)
    assert detail is not None
    assert (detail["capture"], detail["size"], detail["response_message"]) == ("metadata", 0, None)
    assert call_detail(store, "missing") is None
