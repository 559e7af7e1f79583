"""A recorded response, read back and re-rendered (the `Adapter` members that work on a record delegate
here): its view from stored columns (`stored_view`), a recorded stream's chunks re-rendered
(`rewrite_chunks`), and its search text for the store's full-text index (`recorded_stream_text`: the
texts of the message the stream reassembles to or, when it does not, its text pieces as the agent
read them)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from interlock.core.call import Call, Chunk
from interlock.core.views import UNPARSED, Event, ResponseView
from interlock.protocols.sse import last_events

if TYPE_CHECKING:  # the adapter calls these; they call its members back
    from interlock.protocols.base import Adapter

#: A recorded stream longer than this is reassembled for the search index from its first
#: `REASSEMBLE_HEAD` and last `REASSEMBLE_TAIL` bytes (cut at event boundaries): its parsed events cost
#: ~7 bytes of memory per byte of stream (32 MB took 230 MB), and the head holds the text, the tail
#: the usage and finish. The chunks themselves are all kept (up to `store.record_max_bytes`).
REASSEMBLE_MAX = 4 * 1024 * 1024
REASSEMBLE_HEAD = 2 * 1024 * 1024
REASSEMBLE_TAIL = 1024 * 1024

#: Values under these keys are wire bookkeeping, not text a person searches for.
SKIP_KEYS = frozenset({"id", "object", "type", "role", "model", "finish_reason", "stop_reason", "index", "call_id"})
#: Keys under which providers put streamed pieces of text (OpenAI chat and Responses, Anthropic).
_DELTA_KEYS = frozenset({"content", "text", "delta", "partial_json", "arguments", "thinking", "refusal"})


def stored_view(
    adapter: Adapter,
    stream: bool,
    body: bytes | None,
    headers: Iterable[Sequence[str]],
    message: str | None,
    chunks: bytes,
) -> ResponseView:
    """`Adapter.stored_view`: the view of a response read back as stored columns."""
    known: Any = UNPARSED
    if stream and message is not None:
        try:
            known = json.loads(message)
        except ValueError:  # a damaged record: read like a response that is not JSON
            known = None
    call = Call(
        id="",
        route="",
        protocol=adapter.name,
        method="",
        path="",
        stream=stream,
        response_headers=[(str(k), str(v)) for k, v in headers],
        response_body=body,
        chunks=[Chunk(0.0, chunks)] if chunks else [],
    )
    view = call.response_view = ResponseView(adapter, call, known)
    return view


def rewrite_chunks(
    adapter: Adapter, chunks: Sequence[Chunk], rewrite: Callable[[list[Event], bool], list[Event]]
) -> list[Chunk]:
    """`Adapter.rewrite_chunks`: a recorded stream's chunks re-rendered, event by event."""
    splitter = adapter.event_splitter()
    out: list[Chunk] = []
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        events = list(splitter.feed(chunk.data))
        if last:
            events += last_events(splitter)
        data = b"".join(event.raw for event in rewrite(events, last))
        if data:
            out.append(Chunk(chunk.t_ms, data))
    return out


def recorded_stream_text(adapter: Adapter, chunks: Sequence[tuple[float, bytes]], message: Any) -> tuple[Any, str]:
    """`Adapter.recorded_stream_text`: (the message, its search text) of a recorded stream."""
    body: bytes | None = None
    if message is UNPARSED:
        body = b"".join(d for _, d in chunks)
        if len(body) > REASSEMBLE_MAX:
            message = adapter.reassemble_stream(adapter.stream_head_and_tail(body, REASSEMBLE_HEAD, REASSEMBLE_TAIL))
        else:
            message = adapter.reassemble_stream(body)
    texts = adapter.response_texts(message) if message is not None else []
    if texts:
        return message, "\n".join(t.text for t in texts)
    return message, adapter.stream_search_text(body if body is not None else b"".join(d for _, d in chunks))


def sse_head_and_tail(body: bytes, head: int, tail: int) -> bytes:
    """`Adapter.stream_head_and_tail` for server-sent events: cut at blank lines."""
    start = body.rfind(b"\n\n", 0, head) + 2
    end = body.find(b"\n\n", len(body) - tail) + 2
    if start < 2 or end < 2:  # no event boundary where expected: not SSE as we know it
        return body[:head]
    return body[:start] + body[end:]


def stream_search_text(adapter: Adapter, body: bytes) -> str:
    """`Adapter.stream_search_text`: the strings under the keys providers put streamed text in."""
    pieces: list[str] = []
    for event in adapter.iter_events(body):
        payload = adapter.event_json(event)
        if not isinstance(payload, dict):
            continue
        if str(payload.get("type", "")).endswith((".done", ".completed")):
            continue  # the Responses API repeats the whole text in its closing events
        _deltas(payload, pieces, inside=False)
    return "".join(pieces)


def _deltas(value: Any, out: list[str], inside: bool) -> None:
    if isinstance(value, str):
        if inside:
            out.append(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in SKIP_KEYS:
                _deltas(item, out, inside or key in _DELTA_KEYS)
    elif isinstance(value, list):
        for item in value:
            _deltas(item, out, inside)
