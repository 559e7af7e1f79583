"""Splitting a byte stream into server-sent events, whatever the chunk boundaries and terminators."""

from __future__ import annotations

import random

import pytest

from interlock.protocols.sse import EventSplitter, iter_events, parse_event

TERMINATORS = (b"\n\n", b"\r\n\r\n", b"\r\r")


def events(rng: random.Random, count: int, terminators: tuple[bytes, ...]) -> list[bytes]:
    made = []
    for number in range(count):
        terminator = rng.choice(terminators)
        line_end = b"\r\n" if terminator == b"\r\n\r\n" else (b"\r" if terminator == b"\r\r" else b"\n")
        lines = [b"event: delta"] if rng.random() < 0.3 else []
        lines += [b": keep-alive"] if rng.random() < 0.1 else []
        lines += [b'data: {"n": %d, "text": "%s"}' % (number, b"x" * rng.randrange(0, 40))]
        lines += [b"data: second line"] if rng.random() < 0.2 else []
        made.append(line_end.join(lines) + terminator)
    return made


def split(body: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(body)), min(len(body) - 1, rng.randrange(1, 40))))
    return [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]


@pytest.mark.parametrize("terminators", [(b"\n\n",), (b"\r\n\r\n",), (b"\r\r",), TERMINATORS])
@pytest.mark.parametrize("seed", range(20))
def test_every_event_comes_out_whole_and_exact_however_the_bytes_arrive(
    terminators: tuple[bytes, ...], seed: int
) -> None:
    rng = random.Random(seed)
    expected = events(rng, rng.randrange(1, 60), terminators)
    body = b"".join(expected)
    assert [e.raw for e in iter_events(body)] == expected
    splitter = EventSplitter()
    got = [event for chunk in split(body, rng) for event in splitter.feed(chunk)]
    assert [e.raw for e in got] == expected
    assert splitter.pending() == b""
    assert [(e.event, e.data) for e in got] == [(e.event, e.data) for e in map(parse_event, expected)]


def test_an_unterminated_tail_waits_for_more_or_the_end() -> None:
    splitter = EventSplitter()
    assert list(splitter.feed(b'data: {"a": 1}\n\ndata: {"b"')) == [parse_event(b'data: {"a": 1}\n\n')]
    assert splitter.pending() == b'data: {"b"'
    (event,) = splitter.feed(b": 2}\r\n\r\n")
    assert event.data == '{"b": 2}'
    assert list(iter_events(b"data: last, no terminator")) == [parse_event(b"data: last, no terminator")]
