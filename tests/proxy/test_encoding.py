"""The one response decoder (interlock/protocols/encoding.py): every coding, any chunking,
bounded steps, and `Unreadable` for what does not decode."""

from __future__ import annotations

import gzip
import os
import zlib

import brotli
import pytest
import zstandard

from interlock.protocols.base import decoded_body
from interlock.protocols.encoding import PIECE_BYTES, Decoder, Unreadable, codings, decode_body
from interlock.proxy.upstream import decodable_accept_encoding

PLAIN = b"".join(b'data: {"n": %d}\n\n' % i for i in range(20_000)) + os.urandom(1000)

ENCODED = {
    "gzip": gzip.compress(PLAIN),
    "gzip, two members": gzip.compress(PLAIN[:100]) + gzip.compress(PLAIN[100:]),
    "deflate": zlib.compress(PLAIN),
    "deflate, raw": zlib.compress(PLAIN)[2:-4],  # what some servers send as `deflate`
    "br": brotli.compress(PLAIN),
    "zstd": zstandard.ZstdCompressor().compress(PLAIN),
}


@pytest.mark.parametrize("name", list(ENCODED))
@pytest.mark.parametrize("size", [1, 7, 4096, 10**7])
def test_every_coding_decodes_in_any_chunking(name: str, size: int) -> None:
    body = ENCODED[name]
    decoder = Decoder([name.split(",")[0]])
    out: list[bytes] = []
    for i in range(0, len(body), size):
        out += decoder.feed(body[i : i + size])
    out += decoder.finish()
    assert b"".join(out) == PLAIN
    assert max(len(p) for p in out) <= 2 * PIECE_BYTES  # bounded steps (brotli may pass the limit a little)


def test_a_list_of_codings_is_undone_last_first() -> None:
    body = brotli.compress(gzip.compress(PLAIN))
    assert decode_body(body, [("Content-Encoding", "gzip, br")], 10**8) == PLAIN
    assert codings([("content-encoding", "identity"), ("content-encoding", "gzip")]) == ["gzip"]


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        ("gzip", b"not gzip at all"),
        ("gzip", gzip.compress(PLAIN)[:-10]),  # ends early
        ("deflate", zlib.compress(b"x") + b"trailing"),
        ("br", b"\xff\xff\xffjunk"),
        ("br", brotli.compress(PLAIN)[:-3]),
        ("zstd", b"junkjunkjunk"),
        ("zstd", zstandard.ZstdCompressor().compress(PLAIN)[:-3]),
        ("compress", b"x"),  # a coding interlock does not know
    ],
)
def test_what_does_not_decode_is_unreadable(coding: str, body: bytes) -> None:
    with pytest.raises(Unreadable):
        decode_body(body, [("content-encoding", coding)], 10**8)
    assert decoded_body(body, [("content-encoding", coding)]) == b""  # a reader of old records gets nothing


def test_a_body_that_expands_past_the_limit_is_unreadable() -> None:
    bomb = brotli.compress(b"\0" * 50_000_000)  # a few dozen bytes
    with pytest.raises(Unreadable, match="more than"):
        decode_body(bomb, [("content-encoding", "br")], 1_000_000)


def test_no_encoding_is_no_decoder() -> None:
    assert Decoder.for_headers([("content-type", "text/event-stream")]) is None
    assert decode_body(b"plain", [], 10) == b"plain"


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_an_empty_body_is_no_truncated_one(coding: str) -> None:
    # A HEAD reply or a 304 carries the content-encoding of a body it does not send.
    assert decode_body(b"", [("content-encoding", coding)], 10) == b""
    decoder = Decoder([coding])
    assert list(decoder.feed(b"")) == [] and list(decoder.finish()) == []


def test_the_agents_accept_encoding_goes_upstream_without_codings_interlock_cannot_read() -> None:
    assert decodable_accept_encoding("gzip, deflate, br, zstd") == "gzip, deflate, br, zstd"
    assert decodable_accept_encoding("gzip;q=1.0, compress;q=0.5, x-squeeze") == "gzip;q=1.0"
    assert decodable_accept_encoding("*") == "identity"  # the upstream could pick any coding for `*`
    assert decodable_accept_encoding("compress") == "identity"
