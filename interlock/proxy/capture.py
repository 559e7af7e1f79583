"""What the proxy keeps of a streamed response for the record, and the bounds on a response's size.

A stream is relayed piece by piece and never held whole: `StreamCapture` keeps its head, up to
`store.record_max_bytes`, and a rolling tail of the last `TAIL_BYTES` (where the usage, the finish
reason and the terminator are), so memory stays bounded whatever the upstream sends (a 1 GB stream
kept 66 → 1,967 MB before). What it dropped is marked on the call (`meta.record_cut`). The
`max_stream_bytes` bound (the stream is ended with the protocol's error event) lives in the app;
`StreamCapture.ended` says whether the stream carried its protocol's terminator (`[DONE]`,
`message_stop`): one that closes without it was cut, and is recorded and ended as such.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from interlock.core.call import Call, Chunk

#: Bytes kept of the end of a stream cut for the record: enough for the last events (usage, finish).
TAIL_BYTES = 64 * 1024

#: How far back from a stream's end its terminator is looked for (the Responses API's final event
#: repeats the whole response, so it can be long).
END_SCAN_BYTES = 8 * 1024 * 1024


class StreamCapture:
    """Adds chunks to `chunks` (a call's `chunks` or the agent's side) while they fit `limit`; past it,
    keeps only a rolling tail, put back by `finish`."""

    __slots__ = (
        "chunks",
        "limit",
        "kept",
        "tail",
        "tail_bytes",
        "dropped_bytes",
        "dropped_chunks",
        "total",
        "markers",
        "last_line",
        "_seen",
    )

    def __init__(
        self,
        chunks: list[Chunk],
        limit: int,
        markers: tuple[bytes, ...] = (),
        line_start: bool = True,
        last_line: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.chunks = chunks
        #: The protocol's end-of-stream events (`data: [DONE]`, `event: message_stop`), each matched
        #: at the start of a line, so the same text inside a JSON string does not count (a binary
        #: framing's, `line_start` False, are matched as they are: Bedrock's holds length bytes).
        self.markers = tuple(b"\n" + marker if line_start else marker for marker in markers)
        self._seen = not markers  # a protocol without a terminator ends when the stream does
        #: When set, the stream ended iff its last line, read whole, says so (NDJSON: the adapter's
        #: `last_line_ends_stream`); the markers are not searched.
        self.last_line = last_line
        self.limit = limit
        self.kept = 0
        self.total = 0  # bytes seen, kept or not
        self.tail: deque[Chunk] = deque()
        self.tail_bytes = 0
        self.dropped_bytes = 0
        self.dropped_chunks = 0

    def add(self, chunk: Chunk) -> None:
        data = chunk.data
        size = len(data)
        self.total += size
        if not self.tail and self.kept + size <= self.limit:
            self.chunks.append(chunk)
            self.kept += size
            return
        tail = self.tail
        tail.append(chunk)
        self.tail_bytes += size
        while len(tail) > 1 and self.tail_bytes - len(tail[0].data) >= TAIL_BYTES:
            dropped = tail.popleft()
            self.tail_bytes -= len(dropped.data)
            self.dropped_bytes += len(dropped.data)
            self.dropped_chunks += 1

    @property
    def ended(self) -> bool:
        """Whether the stream carried its protocol's terminator. Looked for once, when asked (the
        stream's end, or the agent hanging up), backwards from the last chunk: a search per chunk
        as it passed cost more than the rest of `add` (measured). The terminator starts the last
        event, so this reads the last chunk or few (at most `END_SCAN_BYTES`)."""
        if self._seen:
            return True
        source = self.tail if self.tail else self.chunks
        if self.last_line is not None:
            self._seen = self.last_line(_last_line(source))
            return self._seen
        following = b""
        scanned = 0
        for i in range(len(source) - 1, -1, -1):
            data = source[i].data
            window = (b"\n" if i == 0 or source[i - 1].data.endswith(b"\n") else b"") + data + following[:64]
            if any(marker in window for marker in self.markers):
                self._seen = True
                break
            scanned += len(data)
            if scanned > END_SCAN_BYTES:
                break
            following = data
        return self._seen

    def finish(self, call: Call, side: str) -> None:
        """Put the tail back after the head and mark what was dropped (idempotent)."""
        if not self.tail:
            return
        self.chunks.extend(self.tail)
        self.kept += self.tail_bytes
        self.tail.clear()
        self.tail_bytes = 0
        if self.dropped_chunks:
            cut: dict[str, Any] = call.meta.setdefault("record_cut", {})
            cut[side] = {
                "limit": self.limit,
                "dropped_bytes": self.dropped_bytes,
                "dropped_chunks": self.dropped_chunks,
                "kept_head": self.limit,
                "kept_tail": TAIL_BYTES,
            }


__all__ = ["TAIL_BYTES", "StreamCapture"]


def _last_line(chunks: Sequence[Chunk]) -> bytes:
    """The last line of a stream's bytes, without its newline(s): read backwards over the last
    chunks until the line before it ends (at most `END_SCAN_BYTES`)."""
    parts: list[bytes] = []
    size = 0
    content = False  # whether the line's own bytes have begun (past the trailing newlines)
    for i in range(len(chunks) - 1, -1, -1):
        data = chunks[i].data
        parts.append(data)
        size += len(data)
        if not content:
            data = data.rstrip(b"\r\n")
            content = bool(data)
        if (content and b"\n" in data) or size > END_SCAN_BYTES:
            break
    return b"".join(reversed(parts)).rstrip(b"\r\n").rsplit(b"\n", 1)[-1]
