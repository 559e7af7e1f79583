"""Content-encodings undone, incrementally: the one decoder every reader of a response goes through.

interlock reads every response it relays (usage, tool-call policy, guardrails, the record, search),
so a body in `gzip`, `deflate`, `br` or `zstd` is decoded as it arrives, piece by piece, and the
decoded bytes are what the stages, the store and the agent see (issue 16; docs/guardrails.md,
"Compressed responses"). An encoding outside that list, or bytes that do not decode, raise
`Unreadable`: the proxy then fails the call closed when a rule must read the response.

Every decoder bounds what one input piece may expand to (`PIECE_BYTES` at a time): a small
compressed body can stand for gigabytes (brotli and zstd compress a run of zeros more than 10⁴:1).
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any

import brotli

#: The most one step of a decoder produces before the caller gets it.
PIECE_BYTES = 256 * 1024
#: zstd's decompressobj has no output bound: its input is fed in slices this long. A zstd block of
#: one repeated byte is 4 bytes for 128 KiB (32768:1), so a slice expands to at most 8 MiB.
_ZSTD_SLICE = 256

#: The codings interlock decodes (besides `identity`).
KNOWN = ("gzip", "x-gzip", "deflate", "br", "zstd")


class Unreadable(Exception):
    """A body interlock cannot decode: an unknown content-encoding, or bytes that do not decode."""


def codings(headers: Iterable[Sequence[str]]) -> list[str]:
    """The response's content-codings in the order they were applied (`identity` dropped).
    Headers as tuples (a live Call) or [name, value] lists (loaded back from the store)."""
    out: list[str] = []
    for name, value in headers:
        # The length first: every header of every recorded call passes here (the writer's index).
        if len(name) == 16 and str(name).lower() == "content-encoding":
            out += [c for c in (p.strip().lower() for p in str(value).split(",")) if c and c != "identity"]
    return out


class _Zlib:
    def __init__(self, wbits: int, name: str) -> None:
        self.name = name
        self.wbits = wbits
        self.obj: Any = zlib.decompressobj(wbits)
        self.started = False
        self.head = b""  # deflate: the first two bytes tell zlib-wrapped from raw

    def feed(self, data: bytes) -> Iterator[bytes]:
        if not data:  # an empty body (a HEAD reply, a 304) is no compressed stream cut short
            return
        if not self.started and self.wbits == zlib.MAX_WBITS:
            data = self.head = self.head + data
            if len(data) < 2:
                return
        try:
            while True:
                if self.obj.eof:
                    if not data:
                        return
                    if self.name != "gzip":
                        raise Unreadable(f"{self.name}: data after the end of the compressed stream")
                    self.obj = zlib.decompressobj(self.wbits)  # gzip allows several members in a row
                out = self.obj.decompress(data, PIECE_BYTES)
                self.started = True
                if out:
                    yield out
                if self.obj.eof:
                    data = self.obj.unused_data
                else:
                    data = self.obj.unconsumed_tail
                    if not data and len(out) < PIECE_BYTES:
                        return
        except zlib.error as exc:
            if self.name == "deflate" and not self.started and self.wbits > 0:
                # `deflate` is zlib-wrapped by the RFC, raw in some servers (as browsers and httpx accept).
                self.wbits = -zlib.MAX_WBITS
                self.obj = zlib.decompressobj(self.wbits)
                yield from self.feed(self.head)
                return
            raise Unreadable(f"{self.name}: {exc}") from None

    def finish(self) -> Iterator[bytes]:
        if (self.started and not self.obj.eof) or (self.head and not self.started):
            raise Unreadable(f"{self.name}: the compressed stream ends early")
        yield from ()  # a generator: checked when iterated, after the last `feed`


class _Brotli:
    name = "br"

    def __init__(self) -> None:

        self.error: Any = brotli.error
        self.obj: Any = brotli.Decompressor()
        self.started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        if not data:
            return
        self.started = True
        try:
            out = self.obj.process(data, output_buffer_limit=PIECE_BYTES)
            if out:
                yield out
            while not self.obj.can_accept_more_data():
                out = self.obj.process(b"", output_buffer_limit=PIECE_BYTES)
                if out:
                    yield out
        except self.error as exc:
            raise Unreadable(f"br: {exc}") from None

    def finish(self) -> Iterator[bytes]:
        if self.started and not self.obj.is_finished():
            raise Unreadable("br: the compressed stream ends early")
        yield from ()  # a generator: checked when iterated, after the last `feed`


class _Zstd:
    name = "zstd"

    def __init__(self) -> None:
        # Imported on the first zstd body: ~11 ms of every start otherwise (measured, shared load).
        import zstandard

        self.module: Any = zstandard
        self.dctx: Any = zstandard.ZstdDecompressor()
        self.obj: Any = self.dctx.decompressobj()
        self.started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        if not data:
            return
        view = memoryview(data)
        try:
            for start in range(0, len(view), _ZSTD_SLICE):
                piece = view[start : start + _ZSTD_SLICE].tobytes()
                if self.obj.eof:  # frames one after the other
                    piece = self.obj.unused_data + piece
                    self.obj = self.dctx.decompressobj()
                self.started = True
                out = self.obj.decompress(piece)
                if out:
                    yield out
        except self.module.ZstdError as exc:
            raise Unreadable(f"zstd: {exc}") from None

    def finish(self) -> Iterator[bytes]:
        if self.started and not self.obj.eof:
            raise Unreadable("zstd: the compressed stream ends early")
        yield from ()  # a generator: checked when iterated, after the last `feed`


def _decoder(coding: str) -> _Zlib | _Brotli | _Zstd:
    if coding in ("gzip", "x-gzip"):
        return _Zlib(16 + zlib.MAX_WBITS, "gzip")
    if coding == "deflate":
        return _Zlib(zlib.MAX_WBITS, "deflate")
    if coding == "br":
        return _Brotli()
    if coding == "zstd":
        return _Zstd()
    raise Unreadable(f"content-encoding {coding!r} is not one interlock decodes ({', '.join(KNOWN)})")


class Decoder:
    """Undoes a list of content-codings (last applied, first undone), one input piece at a time."""

    def __init__(self, applied: Sequence[str]) -> None:
        if not applied:
            raise ValueError("nothing to decode")
        self.encoding = ", ".join(applied)
        self.steps = [_decoder(c) for c in reversed(applied)]  # raises Unreadable for an unknown one

    @classmethod
    def for_headers(cls, headers: Iterable[Sequence[str]]) -> Decoder | None:
        """The decoder a response needs; None when it is not encoded. Raises `Unreadable`."""
        applied = codings(headers)
        return cls(applied) if applied else None

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Decoded pieces of `data` (none while a decoder only buffers)."""
        if len(self.steps) == 1:  # the usual case: no chain of generators per chunk
            return self.steps[0].feed(data)
        return self._through(0, [data], final=False)

    def finish(self) -> Iterator[bytes]:
        """What is left, after the last input; raises `Unreadable` when the body ends early."""
        if len(self.steps) == 1:
            return self.steps[0].finish()
        return self._through(0, [], final=True)

    def _through(self, index: int, pieces: Iterable[bytes], *, final: bool) -> Iterator[bytes]:
        step = self.steps[index]
        last = index == len(self.steps) - 1

        def outputs() -> Iterator[bytes]:
            for piece in pieces:
                yield from step.feed(piece)
            if final:
                yield from step.finish()

        if last:
            yield from outputs()
        else:
            yield from self._through(index + 1, outputs(), final=final)

    def decode(self, body: bytes, limit: int) -> bytes:
        """A whole body, decoded; raises `Unreadable` past `limit` decoded bytes."""
        out: list[bytes] = []
        size = 0
        for piece in itertools.chain(self.feed(body), self.finish()):
            size += len(piece)
            if size > limit:
                raise Unreadable(f"{self.encoding}: decodes to more than {limit} bytes")
            out.append(piece)
        return out[0] if len(out) == 1 else b"".join(out)

    async def stream(self, raw: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The decoded pieces of an upstream's raw body as it arrives (empty pieces skipped)."""
        async for data in raw:
            for piece in self.feed(data):
                yield piece
        for piece in self.finish():
            yield piece


def decode_body(body: bytes, headers: Iterable[Sequence[str]], limit: int) -> bytes:
    """`body` with its content-encoding undone (unchanged when it has none); raises `Unreadable`."""
    decoder = Decoder.for_headers(headers)
    return body if decoder is None or not body else decoder.decode(body, limit)


__all__ = ["KNOWN", "PIECE_BYTES", "Decoder", "Unreadable", "codings", "decode_body"]
