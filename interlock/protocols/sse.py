"""Server-sent events: split a byte stream into events, whatever the chunk boundaries."""

from __future__ import annotations

from collections.abc import Iterator

from interlock.core.views import Event


def parse_event(raw: bytes) -> Event:
    lines = raw.decode("utf-8", "replace").splitlines()
    # The usual event, one `data: ` line and its blank line, without the loop below: the proxy splits
    # every event of every stream it relays (docs/bench.md).
    if len(lines) == 2 and not lines[1] and lines[0][:6] == "data: ":
        return Event(raw, None, lines[0][6:])
    name: str | None = None
    data: list[str] = []
    for line in lines:
        if line.startswith(":") or not line:
            continue
        key, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if key == "event":
            name = value
        elif key == "data":
            data.append(value)
    return Event(raw, name, "\n".join(data))


class EventSplitter:
    """Feed bytes, get complete events back; the incomplete tail is kept for the next feed."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> Iterator[Event]:
        buffer = self._buffer + data if self._buffer else data
        if b"\r" not in buffer:  # the usual case: one split, in C
            parts = buffer.split(b"\n\n")
            self._buffer = parts.pop()
            for part in parts:
                yield parse_event(part + b"\n\n")
            return
        start = 0
        while True:
            end, size = _find_terminator(buffer, start)
            if end < 0:
                break
            yield parse_event(buffer[start : end + size])
            start = end + size
        self._buffer = buffer[start:]

    def pending(self) -> bytes:
        """Bytes of an event not yet terminated."""
        return self._buffer

    def close(self) -> Iterator[Event]:
        if self._buffer.strip():
            yield parse_event(self._buffer)
        self._buffer = b""


def _find_terminator(buffer: bytes, start: int) -> tuple[int, int]:
    """The first event terminator at or after `start`: (index, length), or (-1, 0). Each search stops
    where the earliest one found so far starts, so a whole body is split in linear time."""
    best, size = -1, 0
    for terminator in (b"\n\n", b"\r\n\r\n", b"\r\r"):
        end = len(buffer) if best < 0 else best + len(terminator) - 1
        index = buffer.find(terminator, start, end)
        if index >= 0 and (best < 0 or index < best):
            best, size = index, len(terminator)
    return best, size


def iter_events(body: bytes) -> Iterator[Event]:
    splitter = EventSplitter()
    yield from splitter.feed(body)
    yield from splitter.close()


def last_events(splitter: EventSplitter) -> list[Event]:
    """What a splitter holds when its stream ends, as events: the unterminated last one, or bytes
    that make no event (trailing space, a damaged binary frame) as one raw event, so a stream
    relayed through the stages keeps every byte it came with."""
    pending = splitter.pending()
    events = list(splitter.close())
    if pending and not events:
        events.append(Event(pending, None, ""))
    return events


class UnsplittableStream(Exception):
    """Raised by a splitter's `feed` when the stream cannot be cut into events within its bounds
    (an NDJSON line that passes its limit without its newline): the proxy ends the stream with the
    protocol's error event and `code`, as it does a stream that passes `max_stream_bytes`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message
