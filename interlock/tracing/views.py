"""Recorded calls as JSON-able dicts: what `/api/calls/{id}` returns and `traces show` prints.

Bodies become `{"size", "encoding", "content"}`: parsed JSON when the body is JSON, text when it is
UTF-8, base64 otherwise (content-encoding such as gzip undone first).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from interlock.core.views import UNPARSED, ResponseView
from interlock.protocols import recorded_adapter
from interlock.protocols.base import decoded_body
from interlock.tracing.backend import Store
from interlock.tracing.rows import Record

_BODIES = ("request_body", "upstream_body", "response_body", "agent_response_body")


def body_view(data: bytes | None, headers: list[Any], parsed: Any = UNPARSED) -> dict[str, Any] | None:
    """`parsed`: the body's JSON when a reader parsed it already (a response view's `body_json`;
    None: it is not JSON), so the body is not parsed again."""
    if data is None:
        return None
    if parsed is not None and parsed is not UNPARSED:
        return {"size": len(data), "encoding": "json", "content": parsed}
    raw = decoded_body(data, headers) if data else b""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"size": len(data), "encoding": "base64", "content": base64.b64encode(data).decode()}
    if parsed is None and text.strip() != "null":  # not JSON, as its reader found (`null` reads as None)
        return _text(data, text)
    try:
        return (
            {"size": len(data), "encoding": "json", "content": json.loads(text)} if text.strip() else _text(data, text)
        )
    except ValueError:  # bad JSON, or a number past the int limit
        return _text(data, text)


def _text(data: bytes, text: str) -> dict[str, Any]:
    return {"size": len(data), "encoding": "text", "content": text}


def chunks_view(chunks: list[tuple[float, bytes]] | None) -> list[dict[str, Any]] | None:
    if chunks is None:
        return None
    return [{"t_ms": t, "size": len(d), "text": d.decode("utf-8", "replace")} for t, d in chunks]


def call_detail(store: Store, call_id: str) -> dict[str, Any] | None:
    """Everything recorded about one call, JSON-able; None if there is no such call."""
    found = store.get_detail(call_id)
    return None if found is None else detail_of(*found)


def stored_answer(record: Record, row: dict[str, Any]) -> ResponseView:
    """A recorded call's answer as its adapter reads it from the stored columns (`Adapter.stored_view`):
    the record's reassembly of a stream (`response_message`) when it has one, else its chunks, or
    its body. Each part is parsed once, on first use, and shared by every reader of the view."""
    message = row["response_message"] or None
    stream = bool(record["stream"])
    # A stream with a stored reassembly is read from it alone: its chunks are not joined for nothing.
    chunks = b"" if stream and message is not None else b"".join(data for _, data in record["chunks"] or [])
    return recorded_adapter(record["protocol"]).stored_view(
        stream=stream, body=record["response_body"], headers=record["response_headers"], message=message, chunks=chunks
    )


def detail_of(record: Record, row: dict[str, Any], answer: ResponseView | None = None) -> dict[str, Any]:
    """`call_detail` of a call's record and stored row (`Store.get_detail`). `answer`: the call's
    `stored_answer` when the caller reads it too (the UI's call page renders its conversation from
    it): the response body and the stored reassembly are then parsed once for both."""
    if answer is None:
        answer = stored_answer(record, row)
    view = dict(record)
    view["request_body"] = body_view(record["request_body"], record["request_headers"])
    view["upstream_body"] = body_view(record["upstream_body"], record["request_headers"])
    view["response_body"] = body_view(record["response_body"], record["response_headers"], answer.body_json())
    view["agent_response_body"] = body_view(record["agent_response_body"], record["response_headers"])
    view["request_headers"] = [list(h) for h in record["request_headers"]]
    view["response_headers"] = [list(h) for h in record["response_headers"]]
    view["chunks"] = chunks_view(record["chunks"])
    view["agent_chunks"] = chunks_view(record["agent_chunks"])
    # The stored reassembly of a stream (the writer stores one for streams only), as the view read it.
    view["response_message"] = answer.message if record["stream"] and row["response_message"] else None
    view["capture"], view["size"], view["attempt_count"] = row["capture"], row["size"], row["attempt_count"]
    for key, value in list(view.items()):
        if isinstance(value, bytes):  # a field added to to_record later
            view[key] = body_view(value, [])
    return view
