"""Ollama's stream framing (NDJSON), and a stream put back together as the non-streamed answer.

`/api/chat` and `/api/generate` stream by default (`"stream": false` asks for one JSON object):
`application/x-ndjson`, one JSON object a line, each ended by `\\n` (the server writes
`json.Marshal(chunk)` and a newline, and flushes). The last object has `"done": true`, the
`done_reason` and the counts (`prompt_eval_count`, `eval_count`); an error mid-stream is a line
`{"error": "..."}`, then the stream ends (ollama/ollama `server/routes.go`, `streamResponse`).

Each line is an `Event` (`event` None, `data` the line without its newline, `raw` its exact bytes).
A line is held until its newline arrives, whatever the read boundaries; a line still open when the
stream ends is passed on as it came (`close`). A live line is bounded (`NdjsonSplitter.max_line`):
one that passes the bound, ended or not, ends the stream with `UnsplittableStream`, which the proxy
answers with the protocol's error line (an unbounded line would be an unbounded buffer, and a line
that is never read whole could carry text no guardrail read).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from interlock.core.views import Event
from interlock.protocols.sse import UnsplittableStream

#: The longest line a live stream may send without its newline. An Ollama line is one chunk (a few
#: tokens), or the last one, which `/api/generate` may give its `context` (the conversation's token
#: ids, ~6 bytes a token: ~6 MB for a million tokens); 16 MiB is well past both.
MAX_LINE_BYTES = 16 * 1024 * 1024


class NdjsonSplitter:
    """`EventSplitter`'s interface over newline-delimited JSON: one event per line."""

    __slots__ = ("_buffer", "max_line")

    def __init__(self, max_line: int | None = MAX_LINE_BYTES) -> None:
        self._buffer = b""
        #: None: unbounded (a recorded stream, read back whole, was bounded when it was relayed).
        self.max_line = max_line

    def feed(self, data: bytes) -> Iterator[Event]:
        buffer = self._buffer + data if self._buffer else data
        lines = buffer.split(b"\n")  # one split, in C
        rest = lines.pop()
        limit = self.max_line
        if limit is not None and (len(rest) > limit or (lines and max(map(len, lines)) > limit)):
            self._buffer = b""
            raise UnsplittableStream(
                "stream_event_too_large", f"a line of the upstream's NDJSON stream passed {limit} bytes"
            )
        self._buffer = rest
        return iter([line_event(line + b"\n") for line in lines])

    def pending(self) -> bytes:
        """Bytes of a line not yet ended."""
        return self._buffer

    def close(self) -> Iterator[Event]:
        rest, self._buffer = self._buffer, b""
        if rest.strip():
            yield line_event(rest)  # the last object, sent without its newline


def line_event(raw: bytes) -> Event:
    return Event(raw, None, raw.decode("utf-8", "replace").strip())


def iter_ndjson_events(body: bytes) -> Iterator[Event]:
    """The events of a whole recorded stream (unbounded: it was bounded as it was relayed)."""
    splitter = NdjsonSplitter(max_line=None)
    yield from splitter.feed(body)
    yield from splitter.close()


def head_and_tail(body: bytes, head: int, tail: int) -> bytes:
    """A long stream's first ~`head` and last ~`tail` bytes, cut at line ends."""
    start = body.rfind(b"\n", 0, head) + 1
    end = body.find(b"\n", len(body) - tail) + 1
    if start < 1 or end < 1:  # no line end where one was expected: keep the head only
        return body[:head]
    return body[:start] + body[end:]


# -- reassembly -----------------------------------------------------------------------------------

#: The pieces a chunk carries, joined in order: `/api/chat`'s in `message`, `/api/generate`'s at the top.
_PIECES = ("content", "thinking")
_GENERATE_PIECES = ("response", "thinking")


def reassemble(events: list[dict[str, Any]]) -> dict[str, Any]:
    """A stream's chunks as the one object the non-streamed call returns: `/api/chat`'s message
    (its `content` and `thinking` pieces joined, its tool calls in order, which Ollama sends whole),
    or `/api/generate`'s `response` and `thinking` joined; every other field as the last chunk that
    has it says (`done`, `done_reason`, the counts and durations, `context`). An error line's
    `error` is kept."""
    merged: dict[str, Any] = {}
    message: dict[str, Any] | None = None
    pieces: dict[str, list[str]] = {}  # the message's
    top: dict[str, list[str]] = {}  # `/api/generate`'s
    calls: list[Any] = []
    for event in events:
        for key, value in event.items():
            if key == "message" and isinstance(value, dict):
                if message is None:
                    message = merged["message"] = {}
                for field, item in value.items():
                    if field in _PIECES and isinstance(item, str):
                        pieces.setdefault(field, []).append(item)
                    elif field == "tool_calls" and isinstance(item, list):
                        calls += item
                    else:
                        message[field] = item
            elif key in _GENERATE_PIECES and isinstance(value, str):
                merged.setdefault(key, None)  # the field's place among the others
                top.setdefault(key, []).append(value)
            else:
                merged[key] = value
    if message is not None:
        for field in _PIECES:
            joined = "".join(pieces.get(field, []))
            if field == "content" or joined:  # `content` is always there; `thinking` only when said
                message[field] = joined
        if calls:
            message["tool_calls"] = calls
    for key, parts in top.items():
        merged[key] = "".join(parts)
    return merged


__all__ = ["MAX_LINE_BYTES", "NdjsonSplitter", "head_and_tail", "iter_ndjson_events", "line_event", "reassemble"]
