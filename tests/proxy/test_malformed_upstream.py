"""A malformed upstream response (bad status line, invalid header, body longer than its
Content-Length) is an upstream failure: retried and failed over like a reset, counted by the
breaker, recorded `upstream_error` with the parse error — never interlock's `internal_error`."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from interlock.scripted import ScriptedUpstream
from tests.proxy.raw_upstream import RawUpstream, fixed
from tests.proxy.routing_support import CHAT, collect_calls, finished, route, upstreams_state

_BODY = json.dumps({"id": "x", "object": "chat.completion", "choices": []}).encode()

MALFORMED = {
    "bad_status_line": b"HTTP/1.1 two hundred OK\r\ncontent-length: 2\r\n\r\n{}",
    "invalid_header": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nbad header line\r\ncontent-length: 2\r\n\r\n{}",
    "body_longer_than_content_length": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
    + b"x" * 100,
    "not_http": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_broken_then_good_is_served_by_good(make_interlock: Any, upstream: ScriptedUpstream, raw: bytes) -> None:
    with RawUpstream(fixed(raw)) as broken:
        upstreams = [
            {"name": "broken", "url": broken.url + "/v1", "api_key": "k"},
            {"name": "good", "url": upstream.url + "/v1", "api_key": "k"},
        ]
        # Two calls, so the same pooled connection is used again (a body longer than its length
        # poisons the next response on that connection).
        running = make_interlock(routes={"openai": route("openai", upstreams, strategy="priority")})
        calls = collect_calls(running)
        for _ in range(2):
            response = httpx.post(running.url + "/openai/chat/completions", json=CHAT, timeout=10)
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["message"]["content"] == "echo: hi"
        finished(calls, 2)
        for call in calls:
            assert call.outcome == "ok" and call.upstream == "good"
            assert call.error_code is None
        failed = [a for call in calls for a in call.attempts if a.upstream == "broken" and a.error]
        # A body longer than its length is read as its length; the bytes after it are the next
        # response's status line on that pooled connection: at least one attempt meets them.
        assert len(failed) >= (1 if raw is MALFORMED["body_longer_than_content_length"] else 2)
        assert all(a.error and a.error.startswith("malformed") for a in failed), failed
        states = {u["name"]: u for u in upstreams_state(running)["routes"]["openai"]["upstreams"]}
        assert states["broken"]["breaker"]["consecutive_failures"] >= 1


def test_only_a_broken_upstream_is_an_upstream_error_with_the_parse_error(make_interlock: Any) -> None:
    with RawUpstream(fixed(MALFORMED["bad_status_line"])) as broken:
        upstreams = [{"name": "broken", "url": broken.url + "/v1", "api_key": "k"}]
        running = make_interlock(routes={"openai": route("openai", upstreams)})
        calls = collect_calls(running)
        response = httpx.post(running.url + "/openai/chat/completions", json=CHAT, timeout=10)
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "upstream_unreachable"
        (call,) = finished(calls)
        assert call.outcome == "upstream_error" and call.error_code == "upstream_unreachable"
        assert call.error is not None and "malformed" in call.error
        assert len(call.attempts) == 3 and broken.requests == 3
