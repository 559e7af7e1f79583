"""AWS event-stream framing (`application/vnd.amazon.eventstream`): Bedrock's ConverseStream and
InvokeModelWithResponseStream.

Each message is a prelude (total length, headers length: big-endian u32, then the prelude's CRC32),
typed headers, a payload, and the CRC32 of everything before it. Reading uses botocore's parser
(`botocore.eventstream.EventStreamBuffer`, which checks both CRCs); writing (an event a stage
rewrote, interlock's own error event) is the same layout, string headers only, as AWS sends them.
A message becomes an `Event` (`core/views.py`) so that every stage reads it as it reads server-sent events:
`raw` its exact bytes, `event` its `:event-type` (or `exception:<type>`, for an exception
message), `data` its payload as text (for a `chunk`, the model event base64 inside it).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import zlib
from collections.abc import Iterator

from interlock.core.views import Event
from interlock.protocols.sse import EventSplitter

#: A message may not be longer (AWS's own limit: 16 MiB); a longer prelude is a broken stream.
MAX_MESSAGE = 16 * 1024 * 1024
_PRELUDE = 12
_STRING = 7


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message with string headers, both CRCs computed."""
    head = b"".join(
        struct.pack("!B", len(k := name.encode())) + k + struct.pack("!BH", _STRING, len(v := value.encode())) + v
        for name, value in headers.items()
    )
    total = _PRELUDE + len(head) + len(payload) + 4
    prelude = struct.pack("!II", total, len(head))
    prelude += struct.pack("!I", zlib.crc32(prelude))
    message = prelude + head + payload
    return message + struct.pack("!I", zlib.crc32(message))


def event_message(event_type: str, payload: bytes) -> bytes:
    return encode_message(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}, payload
    )


def exception_message(exception_type: str, payload: bytes) -> bytes:
    return encode_message(
        {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"},
        payload,
    )


def _event(raw: bytes) -> Event:
    """A whole message as an Event (its CRCs checked by botocore's parser)."""
    # Optional dependency: botocore is the `bedrock` extra, loaded on the first Bedrock stream.
    from botocore.eventstream import EventStreamBuffer, ParserError

    buffer = EventStreamBuffer()
    buffer.add_data(raw)
    try:
        message = next(iter(buffer))
    except (ParserError, StopIteration) as exc:
        raise ValueError(f"not a valid event-stream message: {exc}") from None
    headers = message.headers
    name = headers.get(":event-type") or headers.get(":exception-type")
    kind = headers.get(":message-type")
    if kind in ("exception", "error"):
        name = f"{kind}:{headers.get(':exception-type') or headers.get(':error-code') or ''}"
    payload: bytes = message.payload
    if name == "chunk":
        payload = _unwrapped(payload)
    return Event(raw, name if isinstance(name, str) else None, payload.decode("utf-8", "replace"))


def _unwrapped(payload: bytes) -> bytes:
    """A `chunk` event's (InvokeModelWithResponseStream) model event: the JSON base64 in its `bytes`,
    so that stages read and rewrite the model's own event (`chunk_message` wraps it again). A payload
    that is not such a wrapper stays as it came."""
    try:
        wrapper = json.loads(payload)
        return base64.b64decode(wrapper["bytes"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        return payload


def chunk_message(inner: bytes) -> bytes:
    """A `chunk` event carrying this model event (its JSON), base64 in `bytes` as Bedrock sends it."""
    return event_message("chunk", json.dumps({"bytes": base64.b64encode(inner).decode()}).encode())


class MessageSplitter(EventSplitter):
    """`EventSplitter`'s contract for event-stream bytes: feed any chunks, get whole messages back
    as Events; the incomplete tail is kept. A message that is damaged (a prelude past `MAX_MESSAGE`,
    a CRC that does not match) ends the splitting: the rest stays pending, relayed as it came and
    never read as events (the recorded stream then lacks its end, and is marked cut)."""

    __slots__ = ("_broken",)

    def __init__(self) -> None:
        super().__init__()
        self._broken = False

    def feed(self, data: bytes) -> Iterator[Event]:
        self._buffer += data
        while not self._broken and len(self._buffer) >= _PRELUDE:
            (total,) = struct.unpack_from("!I", self._buffer)
            if total < _PRELUDE + 4 or total > MAX_MESSAGE:
                self._broken = True
                return
            if len(self._buffer) < total:
                return
            raw, self._buffer = self._buffer[:total], self._buffer[total:]
            try:
                yield _event(raw)
            except ValueError:
                self._buffer = raw + self._buffer
                self._broken = True
                return

    def pending(self) -> bytes:
        return self._buffer

    def close(self) -> Iterator[Event]:
        # An unfinished message is not an event: nothing to yield (the caller relays `pending`).
        self._buffer = b""
        return iter(())


def iter_messages(body: bytes) -> Iterator[Event]:
    splitter = MessageSplitter()
    yield from splitter.feed(body)
