"""Failover users never notice (issue 21), each behaviour through the real openai and anthropic SDKs:
the primary retried before the fallback (Retry-After, a one-off 500), a model outage that never
blocks the other model on the same upstream, failover on a context-length error (never on a
content-policy refusal), first-token and idle timeouts, and `x-should-retry: false` whenever interlock
chose not to retry."""

from __future__ import annotations

import json
import re
from typing import Any

import anthropic
import httpx
import openai
import pytest

from interlock.scripted import Script, ScriptedUpstream
from tests.proxy.routing_support import (
    anthropic_client,
    breaker_state,
    closed_url,
    collect_calls,
    finished,
    openai_client,
    route,
    upstreams_state,
)
from tests.sdk_errors import protocol_error


class Clock:
    """The breakers' clock: the cooldown passes when the test says so, not when a loaded machine does."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def chain(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"smart": list(entries)}


def openai_route(upstream: ScriptedUpstream, models: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return route("openai", [{"name": "main", "url": upstream.url + "/v1"}], models=models, **extra)


def anthropic_route(upstream: ScriptedUpstream, models: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return route("anthropic", [{"name": "main", "url": upstream.url}], models=models, **extra)


def ask(client: openai.OpenAI, text: str = "hi") -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(model="smart", messages=[{"role": "user", "content": text}])


def tried(call: Any) -> list[tuple[str | None, int | None]]:
    return [(a.model, a.status) for a in call.attempts]


CONTEXT_LENGTH = json.dumps(
    {
        "error": {
            "message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
).encode()

PROMPT_TOO_LONG = json.dumps(
    {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "prompt is too long: 208656 tokens > 200000 maximum"},
    }
).encode()

CONTENT_FILTER = json.dumps(
    {
        "error": {
            "message": "The response was filtered due to the prompt triggering the content management policy.",
            "type": "invalid_request_error",
            "param": "prompt",
            "code": "content_filter",
        }
    }
).encode()


# -- retry the primary before the fallback ---------------------------------------------------------------


def test_429_with_retry_after_on_the_primary_is_served_by_the_primary_after_the_wait(
    make_interlock: Any, upstream: ScriptedUpstream
) -> None:
    models = chain({"model": "gpt-big"}, {"model": "gpt-small"})
    running = make_interlock(routes={"openai": openai_route(upstream, models, retry={"retry_after_max": 5})})
    calls = collect_calls(running)
    upstream.script(Script(status=429, retry_after="2"))  # the case: served by the primary after ~2 s
    completion = ask(openai_client(running))
    assert completion.model == "gpt-big" and completion.choices[0].message.content == "echo: hi"
    (call,) = finished(calls)
    assert tried(call) == [("gpt-big", 429), ("gpt-big", 200)]
    first, second = call.attempts
    assert second.backoff_ms == pytest.approx(2000.0)  # the Retry-After, as the upstream said
    assert first.duration_ms is not None and second.started_ms >= first.started_ms + first.duration_ms + 1999.0
    assert "fallback" not in call.meta
    assert [r.json()["model"] for r in upstream.requests] == ["gpt-big", "gpt-big"]


def test_a_one_off_500_on_the_primary_is_served_by_the_primary(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    models = chain({"model": "claude-big"}, {"model": "claude-small"})
    running = make_interlock(routes={"anthropic": anthropic_route(upstream, models)})
    calls = collect_calls(running)
    upstream.script(Script(status=500))
    message = anthropic_client(running).messages.create(
        model="smart", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.model == "claude-big"
    (call,) = finished(calls)
    assert tried(call) == [("claude-big", 500), ("claude-big", 200)]
    assert "fallback" not in call.meta


# -- a model's outage is that model's ------------------------------------------------------------------


def test_a_primary_model_outage_never_blocks_the_fallback_model_and_traffic_returns_after_recovery(
    make_interlock: Any, upstream: ScriptedUpstream
) -> None:
    models = chain({"model": "gpt-big"}, {"model": "gpt-small"})
    config = openai_route(upstream, models, breaker={"consecutive_failures": 2, "cooldown": 30})
    running = make_interlock(routes={"openai": config})
    clock = Clock()
    running.runtime.forwarder.routers["openai"].set_clock(clock)
    calls = collect_calls(running)
    client = openai_client(running)
    upstream.set_model("gpt-big", Script(status=503))

    # The outage: the first call tries the primary twice (its breaker opens), then the fallback
    # model on the same upstream answers; every later call goes straight to the fallback.
    served = [ask(client).model for _ in range(15)]
    assert served == ["gpt-small"] * 15
    done = finished(calls, 15)
    assert tried(done[0]) == [("gpt-big", 503), ("gpt-big", 503), ("gpt-small", 200)]
    assert all(tried(c) == [("gpt-small", 200)] for c in done[1:])
    assert breaker_state(running, "openai", "main", "gpt-big") == "open"
    assert breaker_state(running, "openai", "main", "gpt-small") == "closed"
    assert breaker_state(running, "openai", "main") == "closed"  # the upstream itself is fine
    page = httpx.get(running.admin_url + "/upstreams").text  # the UI shows both kinds
    shown = {
        m: s for m, s in re.findall(r'data-model="([^"]+)"><code>[^<]*</code>\s*<span[^>]*data-state="(\w+)"', page)
    }
    assert shown == {"gpt-big": "open", "gpt-small": "closed"}
    assert re.findall(r'class="upstream-breaker">\s*<span[^>]*data-state="(\w+)"', page) == ["closed"]

    # A cooldown later, still down: the probe fails, the breaker re-opens, the call is still served.
    clock.now += 30
    assert breaker_state(running, "openai", "main", "gpt-big") == "half_open"
    assert ask(client).model == "gpt-small"
    assert tried(finished(calls, 16)[15]) == [("gpt-big", 503), ("gpt-small", 200)]
    assert breaker_state(running, "openai", "main", "gpt-big") == "open"

    # Recovered: within one cooldown the probe finds it, and traffic is back on the primary.
    upstream.set_model("gpt-big", None)
    clock.now += 30
    assert [ask(client).model for _ in range(3)] == ["gpt-big"] * 3
    assert all(tried(c) == [("gpt-big", 200)] for c in finished(calls, 19)[16:])
    entry = upstreams_state(running)["routes"]["openai"]["upstreams"][0]
    assert entry["models"]["gpt-big"]["state"] == "closed" and entry["breaker"]["state"] == "closed"


def test_connection_failures_open_the_upstream_wide_breaker(make_interlock: Any) -> None:
    # A refused connection is the upstream's, not one model's: its breaker stops every model on it.
    models = chain({"model": "gpt-big"}, {"model": "gpt-small"})
    config = route(
        "openai", [{"name": "main", "url": closed_url()}], models=models, breaker={"consecutive_failures": 2}
    )
    running = make_interlock(routes={"openai": config})
    body = {"model": "smart", "messages": [{"role": "user", "content": "x"}]}
    response = httpx.post(running.url + "/openai/chat/completions", json=body)
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_unreachable"
    assert response.headers["x-should-retry"] == "false"
    assert breaker_state(running, "openai", "main") == "open"
    assert breaker_state(running, "openai", "main", "gpt-big") == "closed"
    response = httpx.post(running.url + "/openai/chat/completions", json=body)
    assert response.status_code == 503 and response.json()["error"]["code"] == "circuit_open"


# -- errors a larger context window can serve; refusals stay refusals --------------------------------------


def test_context_length_exceeded_is_served_by_the_larger_context_fallback_and_a_refusal_is_relayed(
    make_interlock: Any, upstream: ScriptedUpstream
) -> None:
    models = chain(
        {"model": "gpt-8k", "context_window": 8192},
        {"model": "gpt-4k", "context_window": 4096},
        {"model": "gpt-128k", "context_window": 128000},
    )
    running = make_interlock(routes={"openai": openai_route(upstream, models)})
    calls = collect_calls(running)
    client = openai_client(running)

    upstream.set_model("gpt-8k", Script(status=400, body=CONTEXT_LENGTH))
    completion = ask(client, "a long conversation")
    assert completion.model == "gpt-128k"  # the smaller window in between is skipped
    (call,) = finished(calls)
    assert tried(call) == [("gpt-8k", 400), ("gpt-128k", 200)]
    assert call.meta["fallback"] is True and call.meta["failover_code"] == "context_length_exceeded"

    # A content-policy refusal is the answer: relayed as it came, never routed around.
    upstream.set_model("gpt-8k", Script(status=400, body=CONTENT_FILTER))
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, "something filtered")
    assert caught.value.status_code == 400 and protocol_error(caught.value)["code"] == "content_filter"
    assert tried(finished(calls, 2)[1]) == [("gpt-8k", 400)]


def test_anthropic_prompt_too_long_fails_over_and_is_relayed_when_no_larger_window_is_left(
    make_interlock: Any, upstream: ScriptedUpstream
) -> None:
    models = chain(
        {"model": "claude-200k", "context_window": 200000}, {"model": "claude-1m", "context_window": 1000000}
    )
    running = make_interlock(routes={"anthropic": anthropic_route(upstream, models)})
    calls = collect_calls(running)
    client = anthropic_client(running)
    upstream.set_model("claude-200k", Script(status=400, body=PROMPT_TOO_LONG))
    message = client.messages.create(model="smart", max_tokens=50, messages=[{"role": "user", "content": "long"}])
    assert message.model == "claude-1m"
    assert tried(finished(calls)[0]) == [("claude-200k", 400), ("claude-1m", 200)]

    # Too long for every window: the last target's own error reaches the agent.
    upstream.set_model("claude-1m", Script(status=400, body=PROMPT_TOO_LONG))
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="smart", max_tokens=50, messages=[{"role": "user", "content": "longer"}])
    assert caught.value.status_code == 400
    assert caught.value.response.json()["error"]["type"] == "invalid_request_error"
    call = finished(calls, 2)[1]
    assert tried(call) == [("claude-200k", 400), ("claude-1m", 400)]
    assert call.meta["retry_stop"] == "no_larger_context"


# -- first token and idle: two timeouts, two jobs -----------------------------------------------------------


def test_a_slow_first_token_fails_over_after_first_token_without_cutting_a_slow_stream(
    make_interlock: Any, upstream: ScriptedUpstream
) -> None:
    models = chain({"model": "gpt-big", "retry": {"same_target": 1}}, {"model": "gpt-small"})
    config = openai_route(upstream, models, timeouts={"first_token": 0.5, "idle": 30})
    running = make_interlock(routes={"openai": config})
    calls = collect_calls(running)
    client = openai_client(running)

    # The primary's first event would come after 3 s: cut at first_token, the fallback answers.
    upstream.set_model("gpt-big", Script(first_byte_delay=3.0))
    stream = client.chat.completions.create(model="smart", messages=[{"role": "user", "content": "x"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "echo: x"
    (call,) = finished(calls)
    assert tried(call) == [("gpt-big", 200), ("gpt-small", 200)]  # the primary's head came, its first event did not
    assert call.attempts[0].error is not None and call.attempts[0].error.startswith("timeout:")
    assert breaker_state(running, "openai", "main", "gpt-big") == "closed"  # one failure, not an outage

    # A stream whose chunks come slower than first_token (but within idle) is relayed whole.
    upstream.set_model("gpt-big", Script(text="slow but sure", chunk_size=5, chunk_delay=0.7))
    stream = client.chat.completions.create(model="smart", messages=[{"role": "user", "content": "x"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "slow but sure"
    call = finished(calls, 2)[1]
    assert tried(call) == [("gpt-big", 200)] and not call.truncated and call.outcome == "ok"


def test_a_probe_cut_at_first_token_reopens_the_breaker(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    models = chain({"model": "gpt-big", "retry": {"same_target": 1}}, {"model": "gpt-small"})
    config = openai_route(
        upstream, models, timeouts={"first_token": 0.5, "idle": 30}, breaker={"consecutive_failures": 1, "cooldown": 30}
    )
    running = make_interlock(routes={"openai": config})
    clock = Clock()
    running.runtime.forwarder.routers["openai"].set_clock(clock)
    calls = collect_calls(running)
    client = openai_client(running)
    upstream.set_model("gpt-big", Script(first_byte_delay=3.0))
    assert ask(client).model == "gpt-small"
    assert breaker_state(running, "openai", "main", "gpt-big") == "open"
    clock.now += 30
    assert ask(client).model == "gpt-small"  # the probe timed out...
    assert breaker_state(running, "openai", "main", "gpt-big") == "open"  # ...and re-opened it
    assert ask(client).model == "gpt-small"
    done = finished(calls, 3)
    assert [len(c.attempts) for c in done] == [2, 2, 1]  # the third call waits on no probe


def test_a_stream_idle_past_idle_ends_with_the_protocols_error_event(
    make_interlock: Any, upstream: ScriptedUpstream
) -> None:
    config = openai_route(upstream, {}, timeouts={"first_token": 30, "idle": 0.5})
    running = make_interlock(routes={"openai": config})
    calls = collect_calls(running)
    upstream.script(Script(text="abcdefgh", chunk_size=1, chunk_delay=3.0))
    stream = openai_client(running).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(openai.APIError) as caught:
        for _ in stream:
            pass
    assert protocol_error(caught.value)["code"] == "stream_broken"
    (call,) = finished(calls)
    assert call.truncated and call.error_code == "stream_broken" and len(call.attempts) == 1
    # A stall is the model's: its breaker counts it, the upstream's does not.
    entry = upstreams_state(running)["routes"]["openai"]["upstreams"][0]
    assert entry["models"]["gpt-test"]["consecutive_failures"] == 1
    assert entry["breaker"]["consecutive_failures"] == 0


def test_first_byte_is_a_deprecated_alias_of_first_token_and_idle() -> None:
    from interlock.config import Timeouts

    old = Timeouts(first_byte=7)
    assert old.first_token == 7 and old.idle == 7
    mixed = Timeouts(first_byte=7, idle=60)
    assert mixed.first_token == 7 and mixed.idle == 60


# -- the agent is told when interlock chose not to retry -------------------------------------------------------


def test_a_breaker_opened_by_the_only_attempt_says_do_not_retry(
    make_interlock: Any, upstream: ScriptedUpstream
) -> None:
    config = route(
        "anthropic", [{"name": "main", "url": upstream.url}], breaker={"consecutive_failures": 1, "cooldown": 60}
    )
    running = make_interlock(routes={"anthropic": config})
    calls = collect_calls(running)
    upstream.set_default(Script(status=503))
    client = anthropic_client(running, max_retries=2)  # an SDK that would retry twice on its own
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(model="claude-test", max_tokens=50, messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 503
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(upstream.requests) == 1  # the SDK honoured it: no amplification
    (call,) = finished(calls)
    assert len(call.attempts) == 1 and call.meta["retry_stop"] == "circuit_open"


def test_a_retry_cut_at_the_deadline_says_do_not_retry(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    config = route("openai", [{"name": "main", "url": upstream.url + "/v1"}], retry={"deadline": 1.0})
    running = make_interlock(routes={"openai": config})
    calls = collect_calls(running)
    upstream.script(Script(status=503), Script(delay=5.0))  # the second try would outlast the deadline
    client = openai_client(running, max_retries=2)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 504 and protocol_error(caught.value)["code"] == "upstream_timeout"
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(upstream.requests) == 2  # interlock's two tries; the SDK added none
    (call,) = finished(calls)
    assert call.meta["retry_stop"] == "deadline"
