"""The searchable text of a recorded call: what the full-text index holds.

A JSON body gives its string values; a stream is read by its protocol's adapter
(`Adapter.recorded_stream_text`: the texts of the message it reassembles, or the stream's text
pieces when it does not reassemble). Runs in the writer thread, never on the event loop.
"""

from __future__ import annotations

import json
from typing import Any

from interlock.core.views import UNPARSED
from interlock.protocols import ADAPTERS
from interlock.protocols.base import SKIP_KEYS, decoded_body

#: Cap per side, so one huge body cannot make a batch slow to index.
MAX_TEXT = 256 * 1024


def record_texts(record: dict[str, Any], response: Any = UNPARSED, request: Any = UNPARSED) -> tuple[str, str, Any]:
    """(request text, response text, reassembled message or None) of a `Call.to_record()` dict.
    `response`: the `response_body` already parsed, or the stream already reassembled from the events
    the proxy split once (the call's `ResponseView`), and
    `request`: the `request_body` already parsed (the parse stage's `call.request_json`), so neither
    is parsed again."""
    request_body = record.get("request_body")
    if request is not UNPARSED and whole_json(request_body, request):
        request = _joined_strings(request)
    else:
        request = body_text(request_body, record.get("request_headers") or [])
    message = None
    if record.get("stream"):
        chunks = record.get("agent_chunks")
        if chunks is None:
            chunks = record.get("chunks") or []
        adapter = ADAPTERS.get(str(record.get("protocol")), ADAPTERS["http"])
        message, response = adapter.recorded_stream_text(chunks, response)
    else:
        whole = record.get("agent_response_body")
        if whole is not None or response is UNPARSED or not whole_json(record.get("response_body"), response):
            if whole is None:
                whole = record.get("response_body")
            response = body_text(whole, record.get("response_headers") or [])
        else:
            response = _joined_strings(response)
    return request[:MAX_TEXT], response[:MAX_TEXT], message


def whole_json(body: bytes | None, parsed: Any) -> bool:
    """Whether `parsed` is what `body_text` would read of `body`: a JSON document read whole (the
    proxy records bodies decoded; `body_text` reads at most `MAX_TEXT * 4` bytes)."""
    return parsed is not None and body is not None and len(body) <= MAX_TEXT * 4


def body_text(body: bytes | None, headers: list[tuple[str, str]] | list[list[str]]) -> str:
    """A JSON body's string values, one a line; another body as text."""
    raw = decoded_body(body, headers)
    if not raw:
        return ""
    raw = raw[: MAX_TEXT * 4]
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, ValueError):  # ValueError: bad JSON, or a number past the int limit
        return raw.decode("utf-8", "replace")
    return _joined_strings(document)


def _joined_strings(document: Any) -> str:
    strings: list[str] = []
    _strings(document, strings)
    return "\n".join(strings)


def _strings(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in SKIP_KEYS or not isinstance(item, str):
                _strings(item, out)
    elif isinstance(value, list):
        for item in value:
            _strings(item, out)
