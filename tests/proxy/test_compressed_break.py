"""A compressed upstream stream that breaks mid-way (issue 16's decoding, issue 21's breaks): every
event the upstream sent before it hung up reaches the agent, decoded, and the record, whatever the
content-coding; then the protocol's error event says the stream broke."""

from __future__ import annotations

from typing import Any

import httpx

from interlock.scripted import Script, ScriptedUpstream
from interlock.testing import Running
from tests.proxy.routing_support import collect_calls, finished

CODINGS = ["gzip", "br", "zstd", "deflate", None]
TEXT = "alpha bravo charlie delta echo foxtrot golf hotel india juliet"
#: The upstream hangs up after this many events (message_start, content_block_start, then deltas).
SENT = 7


def events_of(body: bytes) -> list[bytes]:
    return [e for e in body.replace(b"\r\n", b"\n").split(b"\n\n") if e.strip()]


def stream(running: Running, coding: str | None) -> bytes:
    body = {"model": "claude-test", "max_tokens": 100, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"x-api-key": "sk-agent", "anthropic-version": "2023-06-01", "accept-encoding": coding or "identity"}
    with httpx.stream("POST", running.url + "/anthropic/v1/messages", json=body, headers=headers, timeout=60) as answer:
        assert answer.status_code == 200
        return b"".join(answer.iter_bytes())


def test_the_events_before_a_hang_up_reach_the_agent_and_the_record(
    make_interlock: Any, upstream: ScriptedUpstream
) -> None:
    running = make_interlock()
    calls = collect_calls(running)
    script = {"text": TEXT, "chunk_size": 6, "message_id": "msg_fixed"}
    upstream.script(Script(**script))
    whole = events_of(stream(running, None))  # the same answer, not cut: what the first events are
    assert len(whole) > SENT + 3
    for n, coding in enumerate(CODINGS, start=2):
        upstream.script(Script(**script, encoding=coding, reset_after=SENT))
        got = events_of(stream(running, coding))
        assert got[:-1] == whole[:SENT], coding  # each event sent before the hang-up, decoded, in order
        assert b"stream_broken" in got[-1], coding  # then the error event
        call = finished(calls, n)[-1]
        assert call.error_code == "stream_broken" and call.truncated, coding
        assert events_of(b"".join(c.data for c in call.chunks)) == whole[:SENT], coding  # recorded plain
        if coding is not None:
            assert call.meta["content_encoding"] == coding
