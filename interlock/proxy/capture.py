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
from collections.abc import Callable
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
        "_line",
        "_open",
        "_open_bytes",
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
        #: `last_line_ends_stream`); the markers are not searched. The last line is followed as the
        #: chunks pass (`_line`, the last non-blank line ended; `_open`, the pieces of the one still
        #: open), not read back from the chunks kept: past `limit` only a `TAIL_BYTES` tail is, and a
        #: last line can be longer (Ollama's `/api/generate` ends with the conversation's token ids).
        self.last_line = last_line
        self._line = b""
        self._open: list[bytes] = []
        self._open_bytes = 0  # past END_SCAN_BYTES: the open line is too long to be read
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
        if self.last_line is not None:
            self._follow_line(data)
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
        if self.last_line is not None:
            pending = b"".join(self._open) if self._open_bytes <= END_SCAN_BYTES else b"\0"  # unreadable
            self._seen = self.last_line(pending if pending.strip(b"\r") else self._line)
            return self._seen
        source = self.tail if self.tail else self.chunks
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

    def _follow_line(self, data: bytes) -> None:
        """The last line, followed over one more chunk (`last_line`): the last non-blank line this
        chunk ends becomes `_line` (one longer than END_SCAN_BYTES is not kept: a NUL byte, which no
        last line parses as), and what follows the chunk's last newline opens the next."""
        end = data.rfind(b"\n")
        if end < 0:
            self._open.append(data)
            self._open_bytes += len(data)
            if self._open_bytes > END_SCAN_BYTES:
                self._open = [b""]  # bounded: the line is past reading, its bytes need not be kept
            return
        stop = end
        while True:
            start = data.rfind(b"\n", 0, stop) + 1
            if start == 0 and self._open_bytes > END_SCAN_BYTES:
                line = b"\0"  # the line begun in earlier chunks was too long to be read
            elif start == 0 and self._open:
                line = b"".join(self._open) + data[:stop]
            else:
                line = data[start:stop]
            if line.strip(b"\r"):
                self._line = line
                break
            if start == 0:
                break  # every line this chunk ends is blank: the last line is still the one before
            stop = start - 1
        rest = data[end + 1 :]
        self._open = [rest] if rest else []
        self._open_bytes = len(rest)

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
