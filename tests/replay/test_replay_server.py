"""The replay server: recorded responses byte for byte, streams chunk by chunk, misses per protocol."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import anthropic
import httpx
import openai
import pytest
from replay_helpers import SESSION, chat, recorded_call

from interlock.core.views import Event
from interlock.replay import playback
from interlock.replay.bundle import bundle_from_calls
from interlock.replay.server import ReplayApp
from interlock.scripted import ScriptedUpstream
from interlock.scripted.anthropic_replies import anthropic_reply
from interlock.scripted.openai_replies import chat_reply
from interlock.scripted.replies import Script
from interlock.testing import replay_server
from tests.proxy.routing_support import wait_for
from tests.sdk_errors import protocol_error


def stream_of(events: list[bytes], gap_ms: float = 0.0) -> list[tuple[float, bytes]]:
    return [(10.0 + i * gap_ms, e) for i, e in enumerate(events)]


def test_a_recorded_response_comes_back_with_its_status_headers_and_bytes() -> None:
    body = b'{"error": {"message": "rate limited", "type": "rate_limit_error"}}'
    call = recorded_call(
        chat("x"),
        body,
        status=429,
        headers=[
            ("content-type", "application/json"),
            ("retry-after", "7"),
            ("content-length", "999"),
            ("connection", "close"),
        ],
    )
    with replay_server(bundle_from_calls([call])) as replay:
        response = httpx.post(replay.url + "/openai/chat/completions", json=chat("x"))
    assert response.status_code == 429 and response.content == body
    assert response.headers["retry-after"] == "7"
    assert response.headers["content-length"] == str(len(body))


async def test_streams_keep_their_chunk_boundaries() -> None:
    # At the ASGI level, so that what the network might coalesce cannot hide a regrouping.
    events, _ = chat_reply("one two three", Script(chunk_size=4), "gpt-4o", {})
    app = ReplayApp([recorded_call(chat("s", stream=True), chunks=stream_of(events))], speed=None)
    body = json.dumps(chat("s", stream=True)).encode()
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, object]] = []
    answered = asyncio.Event()

    async def receive() -> dict[str, object]:
        if incoming:
            return incoming.pop()
        await answered.wait()  # as a server does: the client leaves after its answer, not before
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            answered.set()

    scope = {"type": "http", "method": "POST", "path": "/openai/chat/completions", "query_string": b"", "headers": []}
    await app(scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert [m["body"] for m in sent[1:] if m["body"]] == events
    assert sent[-1] == {"type": "http.response.body", "body": b""}


def test_streams_keep_the_recorded_timing() -> None:
    events, _ = chat_reply("one two three", Script(chunk_size=4), "gpt-4o", {})
    call = recorded_call(chat("s", stream=True), chunks=stream_of(events, gap_ms=40))
    with replay_server(bundle_from_calls([call]), speed=1.0) as replay:
        started = time.perf_counter()
        response = httpx.post(replay.url + "/openai/chat/completions", json=chat("s", stream=True))
        elapsed = time.perf_counter() - started
    assert response.content == b"".join(events)
    assert elapsed >= 0.04 * (len(events) - 1)  # never sooner than recorded (a lower bound only)


def test_speed_max_does_not_wait() -> None:
    events, _ = chat_reply("slow", Script(), "gpt-4o", {})
    # Recorded over ten minutes: at recorded speed this would outlast the client's 5 s timeout.
    call = recorded_call(chat("s", stream=True), chunks=stream_of(events, gap_ms=60_000), ttfb_ms=60_000)
    with replay_server(bundle_from_calls([call]), speed=None) as replay:
        client = openai.OpenAI(base_url=replay.base_url("openai"), api_key="x", max_retries=0, timeout=5)
        stream = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "s"}], stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "slow"


def test_an_anthropic_stream_replays_through_the_sdk() -> None:
    events, _ = anthropic_reply("bonjour à vous", Script(chunk_size=3), "claude-test")
    request = {
        "model": "claude-test",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "salut"}],
        "stream": True,
    }
    call = recorded_call(
        request, route="anthropic", protocol="anthropic", path="/v1/messages", chunks=stream_of(events)
    )
    with replay_server(bundle_from_calls([call])):
        client = anthropic.Anthropic(api_key="x", max_retries=0)  # ANTHROPIC_BASE_URL points at the replay
        with client.messages.stream(
            model="claude-test", max_tokens=100, messages=[{"role": "user", "content": "salut"}]
        ) as stream:
            message = stream.get_final_message()
        assert message.content[0].text == "bonjour à vous"  # type: ignore[union-attr]
        with pytest.raises(anthropic.APIStatusError) as raised:
            client.messages.create(model="claude-test", max_tokens=100, messages=[{"role": "user", "content": "other"}])
    assert raised.value.status_code == 409
    assert raised.value.body["error"]["code"] == "replay_divergence"  # type: ignore[index]
    assert "messages[0] (user)" in raised.value.body["error"]["message"]  # type: ignore[index]


def test_a_broken_stream_ends_as_the_agent_saw_it() -> None:
    events, _ = chat_reply("cut short", Script(), "gpt-4o", {})
    call = recorded_call(
        chat("s", stream=True),
        chunks=stream_of(events[:3]),
        outcome="upstream_error",
        error_code="stream_broken",
        error="the upstream stream broke",
    )
    with replay_server(bundle_from_calls([call])) as replay:
        client = openai.OpenAI(base_url=replay.base_url("openai"), api_key="x", max_retries=0)
        with pytest.raises(openai.APIError) as caught:
            for _ in client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "s"}], stream=True
            ):
                pass
    assert protocol_error(caught.value)["code"] == "stream_broken"


def test_mcp_replies_carry_the_incoming_jsonrpc_id_json_and_sse() -> None:
    def rpc(method: str, id_: int) -> dict[str, object]:
        return {"jsonrpc": "2.0", "id": id_, "method": method, "params": {}}

    json_reply = recorded_call(
        rpc("tools/list", 3),
        {"jsonrpc": "2.0", "id": 3, "result": {"tools": []}},
        route="mcp",
        protocol="mcp",
        path="/mcp",
        headers=[("content-type", "application/json"), ("mcp-session-id", "s-1")],
    )
    event = b'event: message\ndata: {"jsonrpc":"2.0","id":4,"result":{"content":[]}}\n\n'
    sse_reply = recorded_call(
        rpc("tools/call", 4), route="mcp", protocol="mcp", path="/mcp", chunks=[(1.0, event[:20]), (2.0, event[20:])]
    )
    with replay_server(bundle_from_calls([json_reply, sse_reply])) as replay:
        listed = httpx.post(replay.url + "/mcp/mcp", json=rpc("tools/list", 41))
        called = httpx.post(replay.url + "/mcp/mcp", json=rpc("tools/call", "abc"))
        missed = httpx.post(replay.url + "/mcp/mcp", json=rpc("prompts/list", 9))
        # A step already served asked again: a miss decided without a detailed diff.
        repeated = httpx.post(replay.url + "/mcp/mcp", json=rpc("tools/list", 42))
    assert repeated.status_code == 200 and repeated.json()["id"] == 42  # the 1.x client drops a session on 409
    assert repeated.json()["error"]["data"]["code"] == "replay_divergence"
    assert listed.json() == {"jsonrpc": "2.0", "id": 41, "result": {"tools": []}}
    assert listed.headers["mcp-session-id"] == "s-1"
    assert called.text == 'event: message\ndata: {"jsonrpc":"2.0","id":"abc","result":{"content":[]}}\n\n'
    assert missed.status_code == 200 and missed.json()["id"] == 9
    assert missed.json()["error"]["data"]["code"] == "replay_divergence"


def test_an_abandoned_stream_stays_open_until_the_agent_leaves() -> None:
    # An MCP GET event stream: the agent closed it, never the server; replaying must not end it.
    call = recorded_call(
        b"", route="mcp", protocol="mcp", method="GET", path="/mcp", chunks=[(1.0, b": ping\n\n")], outcome="aborted"
    )
    with replay_server(bundle_from_calls([call])) as replay:
        with httpx.stream("GET", replay.url + "/mcp/mcp", timeout=httpx.Timeout(5, read=1.5)) as response:
            pieces = response.iter_raw()
            assert next(pieces) == b": ping\n\n"
            with pytest.raises(httpx.ReadTimeout):
                next(pieces)


def test_placeholders_split_across_deltas_are_restored_in_streams() -> None:
    # The model wrote the placeholder over three deltas, and the chunks split an event too.
    events = [
        b'data: {"choices":[{"index":0,"delta":{"content":"Write to <EMAIL_AD"}}]}\n\ndata: {"choices":[{"index":0,',
        b'"delta":{"content":"DRESS"}}]}\n\n',
        b'data: {"choices":[{"index":0,"delta":{"content":"_1> now"}}]}\n\n',
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n',
    ]
    call = recorded_call(chat("mail <EMAIL_ADDRESS_1>", stream=True), chunks=stream_of(events))
    with replay_server(bundle_from_calls([call])) as replay:
        client = openai.OpenAI(base_url=replay.base_url("openai"), api_key="x", max_retries=0)
        stream = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": 'mail "ann"@x.io'}], stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == 'Write to "ann"@x.io now'


def test_unknown_routes_and_the_summary_endpoint() -> None:
    call = recorded_call(chat("x"))
    with replay_server(bundle_from_calls([call])) as replay:
        unknown = httpx.post(replay.url + "/nope/x", json={})
        httpx.post(replay.url + "/openai/chat/completions", json=chat("x"))
        httpx.post(replay.url + "/openai/chat/completions", json=chat("y"))
        summary = httpx.get(replay.url + "/__replay__/summary").json()
    assert unknown.status_code == 404 and "routes: /openai/" in unknown.json()["error"]["message"]
    assert (summary["requests"], summary["served"], len(summary["misses"]), summary["unused"]) == (3, 1, 2, [])
    assert summary["misses"][0]["headline"].startswith("request #1 (POST /nope/x) matches no recorded call:")
    assert summary["misses"][1]["differences"][0]["label"] == "messages[0] (user)"


def test_misses_past_the_kept_ones_are_counted_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(playback, "KEPT_MISSES", 2)  # 1000 by default: the bound, not its size, is tested
    with replay_server(bundle_from_calls([recorded_call(chat("x"))])) as replay:
        for i in range(5):
            httpx.post(replay.url + "/openai/chat/completions", json=chat(f"not recorded {i}"))
        summary = httpx.get(replay.url + "/__replay__/summary").json()
        text = replay.summary().text()
    assert (summary["requests"], len(summary["misses"]), summary["misses_left_out"]) == (5, 2, 3)
    assert [m["headline"].split(" ")[1] for m in summary["misses"]] == ["#1", "#2"]
    assert "5 misses" in text and "3 more misses, left out" in text


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="on_miss"):
        ReplayApp([], on_miss="retry")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs an app"):
        ReplayApp([], on_miss="live")
    with pytest.raises(ValueError, match="speed"):
        ReplayApp([], speed=0)


def test_session_header_is_used_when_the_bundle_has_several() -> None:
    calls = [recorded_call(chat("same"), {"who": "a"}, session="a"), recorded_call(chat("same"), {"who": SESSION})]
    with replay_server(bundle_from_calls(calls)) as replay:
        response = httpx.post(
            replay.url + "/openai/chat/completions", json=chat("same"), headers={"x-interlock-session": SESSION}
        )
    assert json.loads(response.content) == {"who": SESSION}


def test_headers_interlock_never_records_are_not_replayed(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    # docs/replay.md: "the same headers" holds for every header on record; credentials, set-cookie and
    # openai-organization among them, are never recorded, so a replay cannot send them.
    running = make_interlock()
    upstream.script(
        Script(headers={"set-cookie": "session=s3cret", "openai-organization": "org-x", "x-request-id": "req-1"})
    )
    live = httpx.post(running.url + "/openai/chat/completions", json=chat("x"), timeout=30)
    assert live.headers["set-cookie"] == "session=s3cret" and live.headers["openai-organization"] == "org-x"
    store, recorder = running.runtime.store, running.runtime.recorder
    # The call is queued for the record once its response is done, which may be after the client read it.
    wait_for(lambda: recorder.flush() and store.count_calls() == 1)
    calls = list(store.iter_calls())
    with replay_server(bundle_from_calls(calls)) as replay:
        replayed = httpx.post(replay.url + "/openai/chat/completions", json=chat("x"), timeout=30)
    assert replayed.status_code == 200 and replayed.content == live.content
    assert replayed.headers["x-request-id"] == "req-1"
    assert "set-cookie" not in replayed.headers and "openai-organization" not in replayed.headers


def test_a_query_credential_recorded_masked_still_matches() -> None:
    # The proxy records `?key=***` (issue 17): the agent, replaying, sends its real key again.
    body = b'{"choices": []}'
    call = recorded_call(chat("q"), body, query="api-version=1&key=***")
    with replay_server(bundle_from_calls([call])) as replay:
        response = httpx.post(replay.url + "/openai/chat/completions?api-version=1&key=AIzaRealKey", json=chat("q"))
    assert response.status_code == 200 and response.content == body


async def test_a_played_back_stream_runs_through_a_users_chunk_hook() -> None:
    # Playback supplies the recorded answer (`call.supplied`): the proxy relays it through every
    # response hook, so a stage of one's own sees each whole event, and what it returns is what
    # the agent gets.
    events, _ = chat_reply("one two three", Script(chunk_size=4), "gpt-4o", {})

    class Collect:
        def __init__(self) -> None:
            self.seen: list[bytes] = []
            self.supplied_by: object = None

        async def chunk(self, call: Any, got: list[Any], last: bool) -> list[Any]:
            self.seen += [event.raw for event in got]
            if last:
                return [*got, Event(b": seen by a stage\n\n", None, "")]
            return got

        async def response(self, call: Any) -> None:
            self.supplied_by = call.meta.get("supplied_by")

    collect = Collect()
    app = ReplayApp([recorded_call(chat("s", stream=True), chunks=stream_of(events))], speed=None, stages=[collect])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        response = await client.post("/openai/chat/completions", json=chat("s", stream=True))
    assert response.status_code == 200
    assert collect.seen == events and collect.supplied_by == "replay"
    assert response.content == b"".join(events) + b": seen by a stage\n\n"
