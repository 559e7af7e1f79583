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
from typing import Any

from interlock.tracing.call import Call, Chunk

#: Bytes kept of the end of a stream cut for the record: enough for the last events (usage, finish).
TAIL_BYTES = 64 * 1024


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
        "ended",
        "_edge",
    )

    def __init__(self, chunks: list[Chunk], limit: int, markers: tuple[bytes, ...] = ()) -> None:
        self.chunks = chunks
        #: The protocol's end-of-stream events (`data: [DONE]`, `event: message_stop`), each matched
        #: at the start of a line, so the same text inside a JSON string does not count.
        self.markers = tuple(b"\n" + marker for marker in markers)
        self.ended = not markers  # a protocol without a terminator ends when the stream does
        self._edge = b"\n"  # the end of the previous chunk: a marker may straddle two
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
        if not self.ended:
            # The chunk itself, and its start after the previous chunk's end (a marker may
            # straddle two), without copying the chunk.
            edge = self._edge + data[:64]
            self.ended = any(marker in edge or marker in data for marker in self.markers)
            self._edge = data[-64:] if size >= 64 else edge[-64:]
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
