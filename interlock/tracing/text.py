"""The searchable text of a recorded call: what the full-text index holds.

A JSON body gives its string values; a stream is reassembled by its protocol
(`proxy/protocols/reassemble.py`) and the adapter names the texts of the message, with a
format-agnostic fallback (the pieces under the keys every provider uses for deltas). Runs in the
writer thread, never on the event loop.
"""

from __future__ import annotations

import json
from typing import Any

from interlock.proxy.protocols import ADAPTERS
from interlock.proxy.protocols.base import decoded_body
from interlock.proxy.protocols.reassemble import reassemble_stream

#: Cap per side, so one huge body cannot make a batch slow to index.
MAX_TEXT = 256 * 1024

#: A stream longer than this is reassembled from its first `REASSEMBLE_HEAD` and last
#: `REASSEMBLE_TAIL` bytes (cut at event boundaries): its parsed events cost ~7 bytes of memory per
#: byte of stream (32 MB took 230 MB), and the head holds the text, the tail the usage and finish.
#: The chunks themselves are all kept (up to `store.record_max_bytes`).
REASSEMBLE_MAX = 4 * 1024 * 1024
REASSEMBLE_HEAD = 2 * 1024 * 1024
REASSEMBLE_TAIL = 1024 * 1024

# Values under these keys are wire bookkeeping, not text a person searches for.
_SKIP_KEYS = frozenset({"id", "object", "type", "role", "model", "finish_reason", "stop_reason", "index", "call_id"})
# Keys under which providers put streamed pieces of text (OpenAI chat and Responses, Anthropic).
_DELTA_KEYS = frozenset({"content", "text", "delta", "partial_json", "arguments", "thinking", "refusal"})


def record_texts(record: dict[str, Any]) -> tuple[str, str, Any]:
    """(request text, response text, reassembled message or None) of a `Call.to_record()` dict."""
    request = body_text(record.get("request_body"), record.get("request_headers") or [])
    message = None
    if record.get("stream"):
        chunks = record.get("agent_chunks")
        if chunks is None:
            chunks = record.get("chunks") or []
        body = b"".join(d for _, d in chunks)
        protocol = str(record.get("protocol"))
        message = reassemble_stream(protocol, _head_and_tail(body))
        adapter = ADAPTERS.get(protocol)
        texts = adapter.response_texts(message) if message is not None and adapter is not None else []
        response = "\n".join(t.text for t in texts) if texts else stream_text(body)
    else:
        whole = record.get("agent_response_body")
        if whole is None:
            whole = record.get("response_body")
        response = body_text(whole, record.get("response_headers") or [])
    return request[:MAX_TEXT], response[:MAX_TEXT], message


def _head_and_tail(body: bytes) -> bytes:
    """`body`, or for a long stream its first and last events (see `REASSEMBLE_MAX`)."""
    if len(body) <= REASSEMBLE_MAX:
        return body
    head = body.rfind(b"\n\n", 0, REASSEMBLE_HEAD) + 2
    tail = body.find(b"\n\n", len(body) - REASSEMBLE_TAIL) + 2
    if head < 2 or tail < 2:  # no event boundary where expected: not SSE as we know it
        return body[:REASSEMBLE_HEAD]
    return body[:head] + body[tail:]


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
    strings: list[str] = []
    _strings(document, strings)
    return "\n".join(strings)


def _strings(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in _SKIP_KEYS or not isinstance(item, str):
                _strings(item, out)
    elif isinstance(value, list):
        for item in value:
            _strings(item, out)


def stream_text(body: bytes) -> str:
    """The text pieces of an SSE stream joined as the agent would read them."""
    pieces: list[str] = []
    for line in body.decode("utf-8", "replace").splitlines():
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if not payload.startswith("{"):
            continue
        try:
            event = json.loads(payload)
        except ValueError:  # bad JSON, or a number past the int limit
            continue
        if isinstance(event, dict) and str(event.get("type", "")).endswith((".done", ".completed")):
            continue  # the Responses API repeats the whole text in its closing events
        _deltas(event, pieces, inside=False)
    return "".join(pieces)


def _deltas(value: Any, out: list[str], inside: bool) -> None:
    if isinstance(value, str):
        if inside:
            out.append(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in _SKIP_KEYS:
                _deltas(item, out, inside or key in _DELTA_KEYS)
    elif isinstance(value, list):
        for item in value:
            _deltas(item, out, inside)
