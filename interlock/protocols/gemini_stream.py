"""Gemini's two stream framings, and a stream put back together as the non-streamed answer.

`:streamGenerateContent?alt=sse` (what google-genai asks for) answers server-sent events, each
`data: <GenerateContentResponse>` ended by `\\r\\n\\r\\n`. Without `alt=sse` the same responses come
as one JSON array written as it is produced: `[{...}\\n,\\r\\n{...}\\n]`. A splitter tells the two
apart by the first byte and cuts the array at each top-level object, so every stage reads Gemini
events whatever the framing (docs/providers.md, "Gemini").

An array element is an `Event` whose `event` says where it sits: `"["` for the first (its raw bytes
open the array), `","` for the others; the closing bracket is an event whose data is `"]"` (not
JSON, so held text is released before it). A rewritten element is written back after its own
separator; a copy (held text released in a copy of an earlier element) always after a comma.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from interlock.core.views import Event
from interlock.protocols.sse import EventSplitter

#: What changes the array scanner's state outside a string (braces, brackets, quotes), and inside one.
_SIGNIFICANT = re.compile(rb'[{}\[\]"]')
_IN_STRING = re.compile(rb'["\\]')
FIRST, NEXT, CLOSE = "[", ",", "]"


class JsonArraySplitter:
    """`EventSplitter`'s interface over Gemini's JSON-array stream: one event per top-level object."""

    __slots__ = ("_buffer", "_scanned", "_depth", "_in_string", "_escaped", "_opened", "_elements", "_start")

    def __init__(self) -> None:
        self._buffer = b""
        self._scanned = 0  # bytes of the buffer already scanned
        self._depth = 0  # nesting inside the array: 0 between elements
        self._in_string = False
        self._escaped = False
        self._opened = False  # the array's `[` was read
        self._elements = 0
        self._start = -1  # where the element being read starts in the buffer

    def feed(self, data: bytes) -> Iterator[Event]:
        buffer = self._buffer = self._buffer + data if self._buffer else data
        position, cut, size = self._scanned, 0, len(buffer)
        while position < size:
            if self._in_string:
                if self._escaped:
                    self._escaped, position = False, position + 1
                    continue
                match = _IN_STRING.search(buffer, position)
                if match is None:
                    position = size
                    break
                position = match.end()
                self._escaped = match.group() == b"\\"
                self._in_string = self._escaped
                continue
            match = _SIGNIFICANT.search(buffer, position)
            if match is None:
                position = size
                break
            char, position = match.group(), match.end()
            if char == b'"':
                self._in_string = self._depth > 0  # strings live inside elements
            elif char == b"[" and self._depth == 0 and not self._opened:
                self._opened = True
            elif char in b"{[":
                if self._depth == 0:
                    self._start = match.start()
                self._depth += 1
            elif self._depth > 0:
                self._depth -= 1
                if self._depth == 0:
                    name = FIRST if self._elements == 0 else NEXT
                    self._elements += 1
                    yield Event(buffer[cut:position], name, buffer[self._start : position].decode("utf-8", "replace"))
                    cut, self._start = position, -1
            elif char == b"]":  # the array's end: the rest of the stream goes with it
                self._buffer, self._scanned = b"", 0
                yield Event(buffer[cut:], CLOSE, CLOSE)
                return
        self._buffer = buffer[cut:]
        self._scanned = position - cut
        if self._start >= 0:
            self._start -= cut

    def pending(self) -> bytes:
        return self._buffer

    def close(self) -> Iterator[Event]:
        if self._buffer:
            yield Event(self._buffer, None, "")  # a cut-off element, or trailing space: passed on as it came
        self._buffer, self._scanned, self._depth, self._start = b"", 0, 0, -1
        self._in_string = self._escaped = False


class GeminiSplitter:
    """Server-sent events or the JSON array, whichever the stream's first byte says."""

    __slots__ = ("_inner", "_head")

    def __init__(self) -> None:
        self._inner: EventSplitter | JsonArraySplitter | None = None
        self._head = b""

    def feed(self, data: bytes) -> Iterator[Event]:
        if self._inner is None:
            self._head += data
            first = self._head.lstrip()[:1]
            if not first:
                return
            self._inner = JsonArraySplitter() if first in b"[{," else EventSplitter()
            data, self._head = self._head, b""
        yield from self._inner.feed(data)

    def pending(self) -> bytes:
        return self._head if self._inner is None else self._inner.pending()

    def close(self) -> Iterator[Event]:
        if self._inner is not None:
            yield from self._inner.close()
        elif self._head.strip():
            yield Event(self._head, None, "")


#: How interlock's own error event starts (`GeminiAdapter.stream_error_event`, Google's SSE form).
_ERROR_EVENT = b'data: {"error"'


class JsonArrayFramer:
    """The agent's side of a JSON-array stream: interlock's own error event (a stage's refusal, a
    broken upstream) is written in SSE form by code that does not know the framing; here it becomes
    the array's last element, Google's error object, and the array is closed. Google ends a failing
    array stream the same way (`[{...}\n,\r\n{"error": {...}}\n]`; before any element, `[{"error": ...}]`),
    so a client reading the array gets the API's error, not a parse error (docs/providers.md, "Gemini").

    The upstream's closing bracket is held until the stream's last events: a stage may still end the
    stream with an error after it (the loop guard judges the whole answer), and nothing may follow `]`."""

    __slots__ = ("_opened", "_closed", "_held_close", "_array")

    def __init__(self) -> None:
        self._opened = False  # an element went to the agent (its `[` with it)
        self._closed = False  # the array's `]` went to the agent: nothing more may
        self._held_close: Event | None = None
        self._array: bool | None = None  # None until the first event says (SSE from an upstream that ignores the ask)

    def frame(self, events: list[Event], last: bool) -> list[Event]:
        out: list[Event] = []
        for event in events:
            if self._closed:
                continue
            if self._array is None and event.raw.strip():
                self._array = event.event in (FIRST, NEXT, CLOSE) or event.raw.startswith(_ERROR_EVENT)
            if not self._array:
                out.append(event)
                continue
            if event.event == CLOSE:
                self._held_close = event
                continue
            if event.raw.startswith(_ERROR_EVENT):
                error = event.raw[len(b"data: ") :].strip()
                opening = b"\n,\r\n" if self._opened else b"["
                out.append(Event(opening + error + b"\n]", None, ""))
                self._opened = self._closed = True
                continue
            if event.raw.strip():
                self._opened = True
            out.append(event)
        if last and not self._closed:
            if self._held_close is not None:
                out.append(self._held_close)
            self._closed = True
        return out


def iter_gemini_events(body: bytes) -> Iterator[Event]:
    splitter = GeminiSplitter()
    yield from splitter.feed(body)
    yield from splitter.close()


# -- reassembly -----------------------------------------------------------------------------------


def reassemble(events: list[dict[str, Any]]) -> dict[str, Any]:
    """A stream's `GenerateContentResponse`s as the one the non-streamed call returns: per candidate,
    text parts that follow each other (and are alike in being thoughts or not) joined, other parts
    (function calls, inline data) kept whole; the last finish reason, ratings and metadata; the
    last usage (each chunk repeats the running totals)."""
    merged: dict[str, Any] = {}
    candidates: dict[int, dict[str, Any]] = {}
    for event in events:
        if "error" in event and "candidates" not in event:
            merged["error"] = event["error"]
            continue
        for key, value in event.items():
            if key != "candidates":
                merged[key] = value
        for position, candidate in enumerate(event.get("candidates") or []):
            if not isinstance(candidate, dict):
                continue
            index = candidate.get("index", position)
            target = candidates.setdefault(index if isinstance(index, int) else position, {})
            for key, value in candidate.items():
                if key == "content" and isinstance(value, dict):
                    _merge_content(target.setdefault("content", {}), value)
                else:
                    target[key] = value
    if candidates:
        merged["candidates"] = [_joined(candidates[i]) for i in sorted(candidates)]
    return {"candidates": merged.pop("candidates"), **merged} if "candidates" in merged else merged


def _merge_content(target: dict[str, Any], content: dict[str, Any]) -> None:
    for key, value in content.items():
        if key != "parts":
            target[key] = value
    parts: list[Any] = target.setdefault("parts", [])
    for part in content.get("parts") or []:
        if not isinstance(part, dict):
            continue
        last = parts[-1] if parts else None
        if (
            isinstance(part.get("text"), str)
            and isinstance(last, dict)
            and isinstance(last.get("text"), list)
            and bool(last.get("thought")) == bool(part.get("thought"))
        ):
            last["text"].append(part["text"])
            for key, value in part.items():
                if key != "text":
                    last[key] = value  # a thought signature comes with the last piece
            continue
        part = dict(part)
        if isinstance(part.get("text"), str):
            part["text"] = [part["text"]]  # pieces joined once at the end (linear time)
        parts.append(part)


def _joined(candidate: dict[str, Any]) -> dict[str, Any]:
    for part in (candidate.get("content") or {}).get("parts") or []:
        if isinstance(part.get("text"), list):
            part["text"] = "".join(part["text"])
    return candidate
