"""Recorded calls as JSON-able dicts: what `/api/calls/{id}` returns and `traces show` prints.

Bodies become `{"size", "encoding", "content"}`: parsed JSON when the body is JSON, text when it is
UTF-8, base64 otherwise (content-encoding such as gzip undone first).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from interlock.protocols.base import decoded_body
from interlock.tracing.backend import Store
from interlock.tracing.rows import Record

_BODIES = ("request_body", "upstream_body", "response_body", "agent_response_body")


def body_view(data: bytes | None, headers: list[Any]) -> dict[str, Any] | None:
    if data is None:
        return None
    raw = decoded_body(data, headers) if data else b""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"size": len(data), "encoding": "base64", "content": base64.b64encode(data).decode()}
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


def detail_of(record: Record, row: dict[str, Any]) -> dict[str, Any]:
    """`call_detail` of a call's record and stored row (`Store.get_detail`), for a reader that
    reads the record too (the UI's call page reads its answer through the adapter)."""
    view = dict(record)
    view["request_body"] = body_view(record["request_body"], record["request_headers"])
    view["upstream_body"] = body_view(record["upstream_body"], record["request_headers"])
    view["response_body"] = body_view(record["response_body"], record["response_headers"])
    view["agent_response_body"] = body_view(record["agent_response_body"], record["response_headers"])
    view["request_headers"] = [list(h) for h in record["request_headers"]]
    view["response_headers"] = [list(h) for h in record["response_headers"]]
    view["chunks"] = chunks_view(record["chunks"])
    view["agent_chunks"] = chunks_view(record["agent_chunks"])
    message = row["response_message"]
    view["response_message"] = json.loads(message) if message else None
    view["capture"], view["size"], view["attempt_count"] = row["capture"], row["size"], row["attempt_count"]
    for key, value in list(view.items()):
        if isinstance(value, bytes):  # a field added to to_record later
            view[key] = body_view(value, [])
    return view
