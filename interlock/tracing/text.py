"""The searchable text of a recorded call: what the full-text index holds.

A JSON body gives its string values; a stream is reassembled by its protocol's adapter
(`Adapter.reassemble_stream`), which names the texts of the message, or, when it does not
reassemble, gives the stream's text pieces (`Adapter.stream_search_text`). Runs in the
writer thread, never on the event loop.
"""

from __future__ import annotations

import json
from typing import Any

from interlock.core.views import UNPARSED
from interlock.protocols import ADAPTERS
from interlock.protocols.base import SKIP_KEYS, decoded_body

#: Cap per side, so one huge body cannot make a batch slow to index.
MAX_TEXT = 256 * 1024

#: A stream longer than this is reassembled from its first `REASSEMBLE_HEAD` and last
#: `REASSEMBLE_TAIL` bytes (cut at event boundaries): its parsed events cost ~7 bytes of memory per
#: byte of stream (32 MB took 230 MB), and the head holds the text, the tail the usage and finish.
#: The chunks themselves are all kept (up to `store.record_max_bytes`).
REASSEMBLE_MAX = 4 * 1024 * 1024
REASSEMBLE_HEAD = 2 * 1024 * 1024
REASSEMBLE_TAIL = 1024 * 1024


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
        body: bytes | None = None
        if response is not UNPARSED:  # reassembled from the events the proxy split as it relayed them
            message = response
        else:
            body = b"".join(d for _, d in chunks)
            if len(body) > REASSEMBLE_MAX:
                message = adapter.reassemble_stream(
                    adapter.stream_head_and_tail(body, REASSEMBLE_HEAD, REASSEMBLE_TAIL)
                )
            else:
                message = adapter.reassemble_stream(body)
        texts = adapter.response_texts(message) if message is not None else []
        if texts:
            response = "\n".join(t.text for t in texts)
        else:  # a stream that does not reassemble: its text pieces
            response = adapter.stream_search_text(body if body is not None else b"".join(d for _, d in chunks))
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
