"""Retries: statuses, Retry-After, timeouts and resets before the first byte, budgets and deadlines,
and no retry amplification — driven through the real SDKs (with their own retries off)."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import anthropic
import httpx
import openai
import pytest

from interlock.config import Retry, Route
from interlock.proxy.retry import backoff_delay, may_resend, retry_after_seconds
from interlock.scripted import Script, ScriptedUpstream
from tests.proxy.routing_support import (
    CHAT,
    FAST_RETRY,
    anthropic_client,
    closed_url,
    collect_calls,
    finished,
    openai_client,
    route,
    upstreams_state,
)
from tests.sdk_errors import protocol_error


def single(upstream: ScriptedUpstream, protocol: str = "openai", **extra: Any) -> dict[str, Any]:
    url = upstream.url + ("/v1" if protocol == "openai" else "")
    return route(protocol, [{"name": "main", "url": url, "api_key": "sk-real"}], **extra)


def chat(client: openai.OpenAI, text: str = "hi") -> str | None:
    completion = client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": text}])
    return completion.choices[0].message.content


# -- statuses and Retry-After -----------------------------------------------------------------------


def test_503_then_success_is_retried(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    running = make_interlock(routes={"openai": single(upstream)})
    calls = collect_calls(running)
    upstream.script(Script(status=503))
    raw = openai_client(running).chat.completions.with_raw_response.create(
        model="gpt-test", messages=[{"role": "user", "content": "again"}]
    )
    assert raw.parse().choices[0].message.content == "echo: again"
    assert "x-should-retry" not in raw.http_response.headers
    assert len(upstream.requests) == 2
    (call,) = finished(calls)
    assert [(a.upstream, a.status) for a in call.attempts] == [("main", 503), ("main", 200)]
    first, second = call.attempts
    assert first.backoff_ms == 0.0
    assert 0.0 <= second.backoff_ms <= FAST_RETRY["backoff_initial"] * 1000
    assert first.duration_ms is not None and first.ttfb_ms is not None
    assert second.started_ms >= first.started_ms + first.duration_ms + second.backoff_ms - 1.0
    assert call.status == 200 and call.outcome == "ok" and call.upstream == "main"
    assert "retries_exhausted" not in call.meta


def test_429_retry_after_seconds_is_honoured(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    running = make_interlock(routes={"openai": single(upstream, retry={"retry_after_max": 2})})
    calls = collect_calls(running)
    upstream.script(Script(status=429, retry_after="0.1"))
    assert chat(openai_client(running)) == "echo: hi"
    (call,) = finished(calls)
    assert [a.status for a in call.attempts] == [429, 200]
    first, second = call.attempts
    assert second.backoff_ms == pytest.approx(100.0)
    assert first.duration_ms is not None
    assert second.started_ms - (first.started_ms + first.duration_ms) >= 99.0


def test_a_retry_after_past_the_cap_is_relayed_and_not_retried(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    # Retry-After: 1 s, over retry_after_max (50 ms): no other target, so the 429 goes to the agent,
    # which must not retry it at once either.
    running = make_interlock(routes={"openai": single(upstream)})
    calls = collect_calls(running)
    upstream.script(Script(status=429, retry_after="1"))
    response = httpx.post(running.url + "/openai/chat/completions", json=CHAT)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1" and response.headers["x-should-retry"] == "false"
    (call,) = finished(calls)
    assert [a.status for a in call.attempts] == [429] and call.meta["retry_stop"] == "retry_after"


def test_429_retry_after_http_date_is_honoured(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    running = make_interlock(routes={"openai": single(upstream, retry={"retry_after_max": 30})})
    calls = collect_calls(running)
    upstream.script(Script(status=429, retry_after=email.utils.formatdate(time.time() - 5, usegmt=True)))
    assert chat(openai_client(running)) == "echo: hi"
    (call,) = finished(calls)
    assert [a.status for a in call.attempts] == [429, 200]
    assert call.attempts[1].backoff_ms == 0.0  # a date in the past: at once


def test_statuses_outside_the_list_are_relayed_at_once(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    running = make_interlock(routes={"openai": single(upstream, retry={"statuses": [503]})})
    calls = collect_calls(running)
    upstream.script(Script(status=500))
    with pytest.raises(openai.InternalServerError) as caught:
        chat(openai_client(running))
    assert caught.value.status_code == 500
    assert "x-should-retry" not in caught.value.response.headers
    (call,) = finished(calls)
    assert [a.status for a in call.attempts] == [500]


def test_relayed_error_after_exhausting_attempts_says_do_not_retry(
    make_interlock: Any, upstream: ScriptedUpstream
) -> None:
    running = make_interlock(routes={"openai": single(upstream)})
    calls = collect_calls(running)
    upstream.set_default(Script(status=503))
    # The SDK would retry twice on its own; x-should-retry: false stops it.
    with pytest.raises(openai.InternalServerError) as caught:
        chat(openai_client(running, max_retries=2))
    error = caught.value
    assert error.status_code == 503
    assert error.response.headers["x-should-retry"] == "false"
    assert error.response.json()["error"]["message"] == "scripted error 503"
    assert len(upstream.requests) == 3  # the attempt budget, and not 9
    (call,) = finished(calls)
    assert [a.status for a in call.attempts] == [503, 503, 503]
    assert call.meta["retries_exhausted"] is True and call.meta["retry_stop"] == "attempts"
    assert all(a.backoff_ms <= FAST_RETRY["backoff_max"] * 1000 for a in call.attempts)
    assert call.outcome == "upstream_error" and call.error_code == "http_503"


def test_a_single_attempt_route_leaves_retrying_to_the_agent(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    running = make_interlock(routes={"openai": single(upstream, retry={"attempts": 1})})
    upstream.script(Script(status=503))
    response = httpx.post(running.url + "/openai/chat/completions", json=CHAT)
    assert response.status_code == 503
    assert "x-should-retry" not in response.headers
    assert len(upstream.requests) == 1


# -- timeouts and resets before the first byte --------------------------------------------------------


def test_slow_first_byte_of_a_stream_is_retried(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    running = make_interlock(routes={"openai": single(upstream, timeouts={"first_byte": 0.25})})
    calls = collect_calls(running)
    upstream.script(Script(first_byte_delay=1.0), Script(text="on time"))
    stream = openai_client(running).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "x"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "on time"
    (call,) = finished(calls)
    first, second = call.attempts
    assert first.error is not None and first.error.startswith("timeout:")
    assert second.status == 200 and second.error is None and second.ttfb_ms is not None
    assert call.stream and not call.truncated and call.outcome == "ok"


def test_slow_response_head_is_retried(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    running = make_interlock(routes={"openai": single(upstream, timeouts={"first_byte": 0.25})})
    calls = collect_calls(running)
    upstream.script(Script(delay=1.0))
    assert chat(openai_client(running)) == "echo: hi"
    (call,) = finished(calls)
    assert call.attempts[0].error is not None and call.attempts[0].error.startswith("timeout:")
    assert call.attempts[0].status is None
    assert call.attempts[1].status == 200


def test_stream_reset_before_the_first_byte_is_retried(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    running = make_interlock(routes={"openai": single(upstream)})
    calls = collect_calls(running)
    upstream.script(Script(reset_after=0), Script(text="second try"))
    stream = openai_client(running).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "x"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "second try"
    (call,) = finished(calls)
    assert len(call.attempts) == 2
    assert call.attempts[0].error is not None and call.attempts[0].error.startswith("reset:")
    assert not call.truncated and call.outcome == "ok"


def test_body_reset_mid_json_is_retried(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    # A non-streamed body is buffered before the agent sees any of it, so a break mid-body is retried.
    running = make_interlock(routes={"openai": single(upstream)})
    calls = collect_calls(running)
    upstream.script(Script(reset_after=1))
    assert chat(openai_client(running)) == "echo: hi"
    (call,) = finished(calls)
    assert call.attempts[0].status == 200 and (call.attempts[0].error or "").startswith("reset:")
    assert call.attempts[1].error is None


# -- after the first byte: no retry, a loud end ----------------------------------------------------------


def test_openai_stream_broken_after_bytes_ends_with_an_error_event(
    make_interlock: Any, upstream: ScriptedUpstream
) -> None:
    running = make_interlock(routes={"openai": single(upstream)})
    calls = collect_calls(running)
    upstream.script(Script(text="abcdefgh", chunk_size=1, reset_after=3))
    stream = openai_client(running).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "x"}], stream=True
    )
    pieces: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            pieces.append(chunk.choices[0].delta.content or "")
    assert "broke after" in protocol_error(caught.value)["message"]
    assert "".join(pieces) == "ab"  # what arrived before the break, and nothing invented
    (call,) = finished(calls)
    assert len(call.attempts) == 1 and len(upstream.requests) == 1
    assert call.truncated and call.outcome == "upstream_error" and call.error_code == "stream_broken"


def test_anthropic_stream_broken_after_bytes_ends_with_an_error_event(
    make_interlock: Any, upstream: ScriptedUpstream
) -> None:
    running = make_interlock(routes={"anthropic": single(upstream, "anthropic")})
    calls = collect_calls(running)
    upstream.script(Script(text="abcdefgh", chunk_size=1, reset_after=4))
    client = anthropic_client(running)
    received: list[str] = []
    with pytest.raises(anthropic.APIError) as caught:
        with client.messages.stream(
            model="claude-test", max_tokens=50, messages=[{"role": "user", "content": "x"}]
        ) as stream:
            for text in stream.text_stream:
                received.append(text)
    # The protocol, not the SDK's wording: the stream's error event carries interlock's JSON code.
    event: Any = caught.value.body
    assert event["type"] == "error" and event["error"]["code"] == "stream_broken"
    assert "".join(received) == "ab"
    (call,) = finished(calls)
    assert len(call.attempts) == 1
    assert call.truncated and call.error_code == "stream_broken"


# -- all upstreams down ------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_all_upstreams_down_is_a_clear_502_in_the_protocols_shape(make_interlock: Any, protocol: str) -> None:
    dead = [{"name": "a", "url": closed_url()}, {"name": "b", "url": closed_url()}]
    running = make_interlock(routes={protocol: route(protocol, dead)})
    calls = collect_calls(running)
    if protocol == "openai":
        with pytest.raises(openai.APIStatusError) as caught:
            chat(openai_client(running, max_retries=2))
        error: Any = caught.value
        body = error.response.json()["error"]
    else:
        with pytest.raises(anthropic.APIStatusError) as caught_a:
            anthropic_client(running, max_retries=2).messages.create(
                model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "x"}]
            )
        error = caught_a.value
        assert error.response.json()["type"] == "error"
        body = error.response.json()["error"]
    assert error.status_code == 502
    assert error.response.headers["x-should-retry"] == "false"
    assert body["code"] == "upstream_unreachable"
    assert "3 attempts" in body["message"] and "a: connect:" in body["message"] and "b: connect:" in body["message"]
    (call,) = finished(calls)  # the SDK did not retry on its own
    assert [a.upstream for a in call.attempts] == ["a", "b", "a"]
    assert all((a.error or "").startswith("connect:") for a in call.attempts)
    # Failing over to a fresh upstream is immediate; going back to one that failed waits a backoff.
    assert call.attempts[1].backoff_ms == 0.0
    assert 0.0 <= call.attempts[2].backoff_ms <= FAST_RETRY["backoff_initial"] * 1000
    assert call.meta["retries_exhausted"] is True
    assert call.outcome == "upstream_error" and call.error_code == "upstream_unreachable"


# -- budgets, deadlines, idempotency -------------------------------------------------------------------------


def test_the_deadline_stops_retries_that_would_wait_past_it(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    running = make_interlock(
        routes={"openai": single(upstream, retry={"deadline": 10, "retry_after_max": 60, "attempts": 5})}
    )
    calls = collect_calls(running)
    upstream.set_default(Script(status=503, retry_after="30"))  # past the deadline, by far on any machine
    response = httpx.post(running.url + "/openai/chat/completions", json=CHAT, timeout=60)
    assert response.status_code == 503
    (call,) = finished(calls)
    assert len(call.attempts) == 1
    assert call.meta["retry_stop"] == "retry_after"  # a Retry-After past the deadline is not waited for
    assert response.headers["x-should-retry"] == "false"


def test_a_slow_retry_is_cut_at_the_deadline(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    running = make_interlock(routes={"openai": single(upstream, retry={"deadline": 3, "attempts": 5})})
    calls = collect_calls(running)
    upstream.script(Script(status=503), Script(delay=30))  # the deadline comes first on any machine
    response = httpx.post(running.url + "/openai/chat/completions", json=CHAT, timeout=60)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert response.headers["x-should-retry"] == "false"
    (call,) = finished(calls)
    assert [a.status for a in call.attempts] == [503, None]
    assert (call.attempts[1].error or "").startswith("deadline:")


def test_a_slow_first_attempt_is_cut_at_a_deadline_shorter_than_first_byte(
    make_interlock: Any, upstream: ScriptedUpstream
) -> None:
    # first_byte (60 s by default) would let the first attempt run past the whole call's deadline
    running = make_interlock(routes={"openai": single(upstream, retry={"deadline": 2, "attempts": 5})})
    calls = collect_calls(running)
    upstream.script(Script(delay=8))  # the upstream's shutdown waits this out: keep it short, past the deadline
    response = httpx.post(running.url + "/openai/chat/completions", json=CHAT, timeout=60)
    assert response.status_code == 504, response.text  # not the upstream's answer after 8 s
    assert response.json()["error"]["code"] == "upstream_timeout"
    (call,) = finished(calls)
    assert len(call.attempts) == 1 and (call.attempts[0].error or "").startswith("deadline:")
    assert call.meta["retry_stop"] == "deadline"


def test_non_idempotent_tool_post_is_not_retried(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    tools = route("http", [{"name": "t", "url": upstream.url + "/tools"}])
    running = make_interlock(routes={"tools": tools})
    calls = collect_calls(running)
    upstream.script(Script(status=503))
    response = httpx.post(running.url + "/tools/run", json={"x": 1})
    assert response.status_code == 503
    assert len(upstream.requests) == 1
    (call,) = finished(calls)
    assert call.meta["retry_stop"] == "not_idempotent"
    # The same route retries GET, which is idempotent.
    upstream.script(Script(status=503))
    assert httpx.get(running.url + "/tools/list").status_code == 200
    assert len(upstream.requests) == 3


def test_non_idempotent_post_is_retried_when_the_route_says_so(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    tools = route("http", [{"name": "t", "url": upstream.url + "/tools"}], retry={"non_idempotent": True})
    running = make_interlock(routes={"tools": tools})
    upstream.script(Script(status=503))
    assert httpx.post(running.url + "/tools/run", json={"x": 1}).status_code == 200
    assert len(upstream.requests) == 2


def test_a_refused_connection_is_always_safe_to_send_elsewhere(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    tools = route("http", [{"name": "dead", "url": closed_url()}, {"name": "live", "url": upstream.url + "/tools"}])
    running = make_interlock(routes={"tools": tools})
    calls = collect_calls(running)
    assert httpx.post(running.url + "/tools/run", json={"x": 1}).status_code == 200
    (call,) = finished(calls)
    assert [a.upstream for a in call.attempts] == ["dead", "live"]


# -- units ----------------------------------------------------------------------------------------------------


def test_retry_after_parsing() -> None:
    now = 1_700_000_000.0
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(" 0 ") == 0.0
    assert retry_after_seconds("1.5") == 1.5
    assert retry_after_seconds(email.utils.formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30.0)
    assert retry_after_seconds(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("-3") is None


def test_backoff_is_full_jitter_exponential_and_capped() -> None:
    retry = Retry(backoff_initial=0.1, backoff_max=0.3)
    for tries, cap in [(1, 0.1), (2, 0.2), (3, 0.3), (8, 0.3)]:
        waits = [backoff_delay(retry, tries) for _ in range(300)]
        assert all(0.0 <= w <= cap for w in waits)
        assert max(waits) > cap * 0.8 and min(waits) < cap * 0.2  # spread over the whole range


def test_which_requests_may_be_sent_twice() -> None:
    http = Route(protocol="http", upstream="http://x")
    assert not may_resend(http, "POST", "http") and not may_resend(http, "PATCH", "http")
    assert may_resend(http, "GET", "http") and may_resend(http, "PUT", "http")
    assert may_resend(Route(protocol="http", upstream="http://x", retry=Retry(non_idempotent=True)), "POST", "http")
    mcp = Route(protocol="mcp", upstream="http://x")
    assert not may_resend(mcp, "POST", "tools/call") and may_resend(mcp, "POST", "tools/list")
    assert may_resend(Route(upstream="http://x"), "POST", "chat")


def test_anthropic_overloaded_529_is_retried(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    running = make_interlock(routes={"anthropic": single(upstream, "anthropic")})
    calls = collect_calls(running)
    upstream.script(Script(status=529))
    message = anthropic_client(running).messages.create(
        model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "busy?"}]
    )
    assert message.content[0].text == "echo: busy?"  # type: ignore[union-attr]
    (call,) = finished(calls)
    assert [a.status for a in call.attempts] == [529, 200]


def test_an_agent_leaving_mid_retry_is_recorded_and_releases_the_upstream(
    make_interlock: Any, upstream: ScriptedUpstream
) -> None:
    running = make_interlock(routes={"openai": single(upstream)})
    calls = collect_calls(running)
    upstream.script(Script(status=503), Script(delay=2.0))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(running.url + "/openai/chat/completions", json=CHAT, timeout=0.5)
    (call,) = finished(calls)
    assert call.outcome == "aborted"
    assert [a.status for a in call.attempts] == [503, None]
    assert call.attempts[1].error == "cancelled"
    entry = upstreams_state(running)["routes"]["openai"]["upstreams"][0]
    assert entry["inflight"] == 0 and entry["models"]["gpt-test"]["consecutive_failures"] == 1
