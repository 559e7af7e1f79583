"""What a finished response says about itself: its id, the model that answered, why it stopped.

Read for export (OpenTelemetry's `gen_ai.response.*`); each adapter's `read_summary` knows its
format. A stream is read from its first event and its last few only, never parsed whole: the answer
is in those, and this runs once per exported call.
"""

from __future__ import annotations

import json
from typing import Any

from interlock.core.call import Call
from interlock.core.views import Event, TextSlot
from interlock.protocols import ADAPTERS
from interlock.protocols.base import Adapter, ResponseSummary, decoded_body

#: How many events from the end of a stream are looked at for the finish reason.
_TAIL_EVENTS = 6
#: How many bytes from the end of a stream hold those events (a larger tail only costs a little).
_TAIL_BYTES = 8192


def summarize_response(call: Call) -> ResponseSummary:
    """The response's id, model and finish reasons, as far as the protocol tells them
    (`Adapter.read_summary`, over the body or a stream's first and last events)."""
    summary = ResponseSummary()
    adapter = ADAPTERS[call.protocol]
    if not adapter.model_api or call.status is None or call.status >= 400:
        return summary
    if call.reply is not None:  # interlock's own answer: no model spoke
        return summary
    if call.stream:
        head, tail = _stream_ends(adapter, call)
        for data in head:
            adapter.read_summary(data, summary)
            if summary.id or summary.model:
                break
        for event in tail:  # parsed lazily, last first: the finish reason is near the end
            adapter.read_summary(adapter.event_json(event), summary)
            if summary.finish_reasons:
                break
        return summary
    body = decoded_body(call.response_body, call.response_headers)
    if body:
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            return summary
        adapter.read_summary(data, summary)
    return summary


def response_message(call: Call, body: bytes) -> Any:
    """A response body as the agent received it, parsed; a stream is reassembled into the message the
    non-streamed call would have returned, so both read the same. None when it is not JSON."""
    if call.stream:
        return ADAPTERS[call.protocol].reassemble_stream(body)
    text = body.decode("utf-8", "replace").lstrip()
    if not text.startswith("{"):
        return None
    try:
        return json.loads(text)
    except ValueError:  # JSON's errors, and a number past Python's int-string limit
        return None


def output_texts(protocol: str, data: Any) -> list[TextSlot]:
    """The texts of a response (`response_message`: a stream reads like the message it reassembles
    to), by the adapter's `response_texts`. Empty texts (a stream's opening `content: ""`) say
    nothing and are left out."""
    if data is None:
        return []
    return [slot for slot in ADAPTERS[protocol].response_texts(data) if slot.text]


def _stream_ends(adapter: Adapter, call: Call) -> tuple[list[Any], list[Event]]:
    """JSON payloads of the first events (in order), and the last events (last first): from the events
    the proxy split as it relayed the stream (`StreamRead`), else from the recorded chunks."""
    read = adapter.response_view(call).stream_read
    if read is not None and read.events is not None:
        first: list[Any] = []
        for event in read.events:
            data = adapter.event_json(event)
            if isinstance(data, dict):
                first.append(data)
                if len(first) == 2:
                    break
        return first, list(reversed(read.events[-_TAIL_EVENTS:]))
    chunks = call.chunks
    splitter = adapter.event_splitter()
    head: list[Any] = []
    for chunk in chunks:
        head += [d for d in (adapter.event_json(e) for e in splitter.feed(chunk.data)) if isinstance(d, dict)]
        if head:
            break
    head = head[:2]
    tail_bytes = b""
    for chunk in reversed(chunks):
        tail_bytes = chunk.data + tail_bytes
        if len(tail_bytes) >= _TAIL_BYTES:
            break
    events = list(adapter.iter_events(tail_bytes))  # a cut-off first event simply fails to parse
    return head, list(reversed(events[-_TAIL_EVENTS:]))
