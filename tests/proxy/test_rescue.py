"""Stream rescue (issue 21, `stream_rescue: true`): a stream that breaks or stalls after bytes reached
the agent is continued by the next target with the delivered text as an assistant prefill, spliced
into the same stream, and parsed by the real openai and anthropic SDKs as one complete message."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import openai
import pytest
from aiohttp.streams import StreamReader

from interlock.config import Guardrails as GuardrailSettings
from interlock.core.call import Call
from interlock.guardrails.scanner import detector_for
from interlock.scripted import Script, ScriptedUpstream, ToolUse
from tests.proxy.routing_support import anthropic_client, collect_calls, finished, openai_client, route
from tests.sdk_errors import protocol_error

#: 60 tokens of 4 characters each, streamed one token per delta (`chunk_size=4`).
TOKENS = [f"w{i:02d} " for i in range(60)]
TEXT = "".join(TOKENS).rstrip()
DELIVERED = "".join(TOKENS[:40])  # what reached the agent before the cut

#: The primary cut after 40 of its 60 tokens: OpenAI's role chunk, or Anthropic's message_start and
#: content_block_start, then 40 deltas; its connection is then reset.
CUT_CHAT = Script(text=TEXT, chunk_size=4, reset_after=1 + 40, message_id="chatcmpl-first", output_tokens=60)
CUT_MESSAGES = Script(text=TEXT, chunk_size=4, reset_after=2 + 40, message_id="msg_first", output_tokens=60)
#: The fallback continues from the prefill: 20 tokens, its prompt counting the 40 of the prefill.
CONTINUES = Script(text=TEXT, chunk_size=4, input_tokens=11 + 40, output_tokens=20, message_id="other")


def chain() -> dict[str, Any]:
    return {"smart": [{"model": "big"}, {"model": "alt"}]}


def chat_route(upstream: ScriptedUpstream, prefill: str | None = "prefix", **extra: Any) -> dict[str, Any]:
    main: dict[str, Any] = {"name": "main", "url": upstream.url + "/v1"}
    if prefill is not None:
        main["prefill"] = prefill
    return route("openai", [main], models=chain(), stream_rescue=True, **extra)


def messages_route(upstream: ScriptedUpstream, **extra: Any) -> dict[str, Any]:
    return route("anthropic", [{"name": "main", "url": upstream.url}], models=chain(), stream_rescue=True, **extra)


Serve = Callable[..., tuple[Any, list[Call]]]


@pytest.fixture
def serve(make_interlock: Any, upstream: ScriptedUpstream) -> Serve:
    """`serve(routes, big, alt=None, **config)`: an interlock with `routes` (and `config`), the primary
    model `big` and the fallback `alt` scripted; returns it and the list its finished calls land in."""

    def start(routes: dict[str, Any], big: Script, alt: Script | None = None, **config: Any) -> tuple[Any, list[Call]]:
        running = make_interlock(routes=routes, **config)
        calls = collect_calls(running)
        upstream.set_model("big", big)
        if alt is not None:
            upstream.set_model("alt", alt)
        return running, calls

    return start


def stream_chat(client: openai.OpenAI) -> tuple[list[Any], Any]:
    # The client is closed after (its pooled connection would otherwise be collected, open, in a later test).
    with (
        client,
        client.chat.completions.stream(
            model="smart", messages=[{"role": "user", "content": "count"}], stream_options={"include_usage": True}
        ) as stream,
    ):
        chunks = [event.chunk for event in stream if event.type == "chunk"]
        return chunks, stream.get_final_completion()


def stream_messages(client: anthropic.Anthropic) -> tuple[list[Any], Any]:
    with (
        client,
        client.messages.stream(
            model="smart", max_tokens=200, messages=[{"role": "user", "content": "count"}]
        ) as stream,
    ):
        events = list(stream)
        return events, stream.get_final_message()


def read_after_the_hang_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """interlock reads an upstream body only once all of it arrived, the upstream's hang-up included:
    its last events and the reset reach the relay together, as when the relay is busy under heavy load
    (the flake this pins). A condition, not a duration: the bound only keeps a broken test from hanging."""
    read = StreamReader.read

    async def late(self: StreamReader, n: int = -1) -> bytes:
        for _ in range(2000):
            if self.is_eof() or self.exception() is not None:
                break
            await asyncio.sleep(0.005)
        return await read(self, n)

    monkeypatch.setattr(StreamReader, "read", late)


def tried(call: Any) -> list[tuple[str | None, int | None]]:
    return [(a.model, a.status) for a in call.attempts]


# -- rescued -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("late", [False, True], ids=["read-as-it-comes", "read-after-the-hang-up"])
def test_an_openai_stream_cut_after_40_of_60_tokens_is_completed_by_the_fallback(
    serve: Serve, upstream: ScriptedUpstream, late: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if late:  # every one of the 40 deltas reached the agent, and the prefill is all of them
        read_after_the_hang_up(monkeypatch)
    running, calls = serve({"openai": chat_route(upstream)}, CUT_CHAT, CONTINUES)
    chunks, completion = stream_chat(openai_client(running))
    assert completion.choices[0].message.content == TEXT
    assert completion.choices[0].finish_reason == "stop"
    assert {chunk.id for chunk in chunks} == {"chatcmpl-first"}  # one message id
    assert sum(1 for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason) == 1
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (11 + 51, 40 + 20, 122)
    continued = upstream.requests[-1].json()
    assert continued["model"] == "alt"
    assert continued["messages"][-1] == {"role": "assistant", "content": DELIVERED.rstrip(), "prefix": True}
    (call,) = finished(calls)
    assert call.rescued and call.outcome == "ok" and not call.truncated
    assert tried(call) == [("big", 200), ("alt", 200)]
    rescue = call.meta["rescue"]
    assert rescue["outcome"] == "rescued" and rescue["mode"] == "prefill" and rescue["prefill"] == "prefix"
    assert rescue["offset_chars"] == len(DELIVERED) and rescue["usage_estimated"] is True
    assert rescue["from"] == {"upstream": "main", "model": "big"} and rescue["to"] == {
        "upstream": "main",
        "model": "alt",
    }
    assert (call.input_tokens, call.output_tokens) == (62, 60)  # read from the spliced stream, as recorded
    assert b"".join(c.data for c in call.chunks).count(b"data: [DONE]") == 1
    # The store, its API and the UI's call page show it.
    assert running.runtime.recorder.flush()
    assert httpx.get(f"{running.admin_url}/api/calls/{call.id}").json()["rescued"] is True
    assert httpx.get(f"{running.admin_url}/api/calls", params={"limit": 5}).json()["calls"][0]["rescued"] is True
    page = httpx.get(f"{running.admin_url}/call/{call.id}").text
    assert "Stream rescued" in page and f"main alt after {len(DELIVERED)} characters" in page


def test_an_anthropic_stream_cut_after_40_of_60_tokens_is_completed_by_the_fallback(
    serve: Serve, upstream: ScriptedUpstream
) -> None:
    running, calls = serve({"anthropic": messages_route(upstream)}, CUT_MESSAGES, CONTINUES)
    events, message = stream_messages(anthropic_client(running))
    assert message.id == "msg_first" and message.stop_reason == "end_turn"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == TEXT
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11 + 51, 40 + 20)
    kinds = [event.type for event in events]
    assert kinds.count("message_start") == 1 and kinds.count("message_stop") == 1
    assert kinds.count("content_block_start") == 1 and kinds.count("content_block_stop") == 1
    assert {event.index for event in events if event.type.startswith("content_block")} == {0}
    continued = upstream.requests[-1].json()
    assert continued["messages"][-1] == {"role": "assistant", "content": DELIVERED.rstrip()}  # no trailing space
    assert continued["max_tokens"] == 200 - 40  # what is left of the agent's bound
    (call,) = finished(calls)
    assert call.rescued and tried(call) == [("big", 200), ("alt", 200)]
    assert call.meta["rescue"]["mode"] == "prefill" and "prefill" not in call.meta["rescue"]
    assert (call.input_tokens, call.output_tokens) == (62, 60)


def test_a_stream_stalled_past_idle_is_continued(serve: Serve, upstream: ScriptedUpstream) -> None:
    timeouts = {"connect": 5, "first_token": 30, "idle": 0.3, "total": 60}
    running, calls = serve(
        {"anthropic": messages_route(upstream, timeouts=timeouts)},
        Script(text=TEXT, chunk_size=4, stall_after=2 + 40, stall_seconds=30),
        CONTINUES,
    )
    _, message = stream_messages(anthropic_client(running))
    assert message.content[0].text == TEXT
    (call,) = finished(calls)
    assert call.rescued and "timeouts.idle" in call.meta["rescue"]["failure"]


def test_an_upstream_error_event_mid_stream_is_never_seen_when_the_stream_is_continued(
    serve: Serve, upstream: ScriptedUpstream
) -> None:
    # Anthropic's `overloaded_error` mid-stream, then the stream closes without message_stop.
    running, calls = serve(
        {"anthropic": messages_route(upstream)}, Script(text=TEXT, chunk_size=4, error_event_after=2 + 40), CONTINUES
    )
    events, message = stream_messages(anthropic_client(running))
    assert message.content[0].text == TEXT and "error" not in [event.type for event in events]
    (call,) = finished(calls)
    assert call.rescued and "end-of-stream" in call.meta["rescue"]["failure"]
    assert b"overloaded_error" not in b"".join(c.data for c in call.chunks)
    assert "overloaded_error" in call.meta["rescue"]["upstream_error_event"]  # on record, not lost


def test_an_upstream_error_event_is_the_agents_error_when_the_stream_cannot_be_continued(
    serve: Serve, upstream: ScriptedUpstream
) -> None:
    running, calls = serve(
        {"anthropic": messages_route(upstream)},
        Script(text=TEXT, chunk_size=4, error_event_after=2 + 40),
        Script(text=TEXT, prefill="reject"),
    )
    with pytest.raises(anthropic.APIStatusError) as raised:
        stream_messages(anthropic_client(running))
    body = raised.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "overloaded_error"  # the upstream's own, held back
    (call,) = finished(calls)
    assert not call.rescued and call.error_code == "stream_truncated"


def test_only_whitespace_delivered_restarts_cleanly_without_a_prefill(serve: Serve, upstream: ScriptedUpstream) -> None:
    # An upstream that declares no prefill support (the default on openai routes) still restarts an
    # answer of which only whitespace reached the agent.
    running, calls = serve(
        {"openai": chat_route(upstream, prefill=None)},
        Script(text="\n\nnever seen", chunk_size=2, reset_after=2),
        Script(text="\n\nthe answer", chunk_size=2),
    )
    _, completion = stream_chat(openai_client(running))
    assert completion.choices[0].message.content == "\n\nthe answer"
    assert upstream.requests[-1].json()["messages"] == [{"role": "user", "content": "count"}]
    (call,) = finished(calls)
    assert call.rescued and call.meta["rescue"]["mode"] == "restart"


# -- not rescued: the agent gets the original failure -----------------------------------------------------


def test_a_fallback_refusing_the_prefill_leaves_the_original_failure_openai(
    serve: Serve, upstream: ScriptedUpstream
) -> None:
    running, calls = serve({"openai": chat_route(upstream)}, CUT_CHAT, Script(text=TEXT, prefill="reject"))
    received: list[str] = []
    with pytest.raises(openai.APIError) as raised, openai_client(running) as client:
        with client.chat.completions.stream(model="smart", messages=[{"role": "user", "content": "count"}]) as stream:
            for event in stream:
                if event.type == "content.delta":
                    received.append(event.delta)
    assert protocol_error(raised.value)["code"] == "stream_broken"  # the cut, not the fallback's 400
    assert "".join(received) == DELIVERED
    (call,) = finished(calls)
    assert not call.rescued and call.error_code == "stream_broken" and call.truncated
    assert tried(call) == [("big", 200), ("alt", 400)]
    assert call.meta["rescue"]["outcome"] == "not_rescued" and "refused the prefill" in call.meta["rescue"]["reason"]


def test_a_fallback_refusing_the_prefill_leaves_the_original_failure_anthropic(
    serve: Serve, upstream: ScriptedUpstream
) -> None:
    running, calls = serve({"anthropic": messages_route(upstream)}, CUT_MESSAGES, Script(text=TEXT, prefill="reject"))
    with pytest.raises(anthropic.APIStatusError) as raised:
        stream_messages(anthropic_client(running))
    assert protocol_error(raised.value)["code"] == "stream_broken"
    (call,) = finished(calls)
    assert not call.rescued and tried(call) == [("big", 200), ("alt", 400)]


def test_an_openai_target_without_prefill_support_is_never_asked(serve: Serve, upstream: ScriptedUpstream) -> None:
    running, calls = serve({"openai": chat_route(upstream, prefill=None)}, CUT_CHAT)
    with pytest.raises(openai.APIError) as raised:
        stream_chat(openai_client(running))
    assert protocol_error(raised.value)["code"] == "stream_broken"
    (call,) = finished(calls)
    assert tried(call) == [("big", 200)] and not call.rescued
    assert "accepts a prefill" in call.meta["rescue"]["reason"]


@pytest.mark.parametrize("late", [False, True], ids=["read-as-it-comes", "read-after-the-hang-up"])
def test_a_stream_that_emitted_a_tool_call_is_not_continued(
    serve: Serve, upstream: ScriptedUpstream, late: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if late:  # the tool call arrives with the reset: relayed and judged before the reset is acted on
        read_after_the_hang_up(monkeypatch)
    running, calls = serve(
        {"openai": chat_route(upstream)},
        Script(tool_calls=[ToolUse("lookup", {"q": "a long enough query"})], reset_after=3),
    )
    with pytest.raises(openai.APIError) as raised:
        stream_chat(openai_client(running))
    assert protocol_error(raised.value)["code"] == "stream_broken"
    (call,) = finished(calls)
    assert tried(call) == [("big", 200)]  # the fallback would not know the call was made: not asked
    assert "tool call" in call.meta["rescue"]["reason"]


def test_config_refuses_stream_rescue_where_no_stream_can_be_continued() -> None:
    from pydantic import ValidationError

    from interlock.config import Route

    with pytest.raises(ValidationError, match="stream_rescue"):
        Route.model_validate({"protocol": "http", "upstream": "http://x", "stream_rescue": True})
    with pytest.raises(ValidationError, match="prefill"):
        Route.model_validate(
            {"protocol": "anthropic", "upstreams": [{"url": "http://x", "prefill": "continue_final_message"}]}
        )


def test_guardrails_read_the_continuation_as_the_rest_of_the_same_stream(
    make_interlock: Any, upstream: ScriptedUpstream
) -> None:
    # The secret rule needs "heroku api key" before the UUID: the words come from the broken stream, the
    # UUID from the continuation, so it is found only if the guardrail reads both as one text.
    text = "Use the heroku api key: 01234567-89ab-cdef-0123-456789abcdef for deploys."
    guardrails = {"response": {"SECRET": "redact"}}
    # Built here, on the main thread (cached per process): building it on interlock's thread while
    # this one waits has failed once in CPython's parser (`AST constructor recursion depth mismatch`).
    detector_for(GuardrailSettings.model_validate(guardrails))
    running = make_interlock(routes={"openai": chat_route(upstream)}, guardrails=guardrails)
    calls = collect_calls(running)
    upstream.set_model("big", Script(text=text, chunk_size=4, reset_after=1 + 6))  # "Use the heroku api key: "
    upstream.set_model("alt", Script(text=text, chunk_size=4))
    _, completion = stream_chat(openai_client(running))
    assert completion.choices[0].message.content == "Use the heroku api key: <SECRET> for deploys."
    (call,) = finished(calls)
    assert call.rescued and call.meta["rescue"]["offset_chars"] == len("Use the heroku api key: ")
    assert [f.entity for f in call.findings] == ["SECRET"]


# -- the splice itself, event by event ----------------------------------------------------------------------


def events_of(*raw: bytes) -> list[Any]:
    from interlock.protocols.sse import iter_events

    return list(iter_events(b"".join(raw)))


def test_an_anthropic_continuation_after_a_closed_block_opens_the_next_index() -> None:
    import json

    from interlock.protocols.rescue import AnthropicRescue
    from interlock.scripted.anthropic_replies import anthropic_reply

    first, _ = anthropic_reply("Hello there.", Script(chunk_size=6, message_id="msg_1"), "big")
    rescue = AnthropicRescue()
    for event in events_of(*first[:5]):  # message_start, block 0 start, 2 deltas, block 0 stop
        assert rescue.observe(event)
    assert rescue.delivered == "Hello there." and rescue.open_text is None
    built = rescue.request(
        {"model": "big", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}, "assistant"
    )
    assert built is not None and built[1] == "prefill"
    second, _ = anthropic_reply(" More.", Script(chunk_size=6), "alt")  # what follows the prefill
    out = [e.raw for e in (rescue.splice(event) for event in events_of(*second)) if e is not None]
    spliced = [json.loads(e.data) for e in events_of(*out)]
    assert [e["type"] for e in spliced] == [
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert {e["index"] for e in spliced if "index" in e} == {1}  # block 0 was closed: the continuation is block 1
    assert spliced[1]["delta"]["text"] == " More."  # no whitespace was left out of the prefill: none dropped


def test_a_chat_continuation_keeps_the_first_id_and_drops_the_role() -> None:
    import json

    from interlock.protocols.rescue import ChatRescue
    from interlock.scripted.openai_replies import chat_reply

    first, _ = chat_reply("one two", Script(chunk_size=4, message_id="chatcmpl-1"), "big", {})
    rescue = ChatRescue()
    for event in events_of(*first[:2]):
        rescue.observe(event)
    assert rescue.delivered == "one " and rescue.blocker is None
    assert rescue.request({"messages": [{"role": "user", "content": "x"}]}, "none") is None  # cannot continue text
    built = rescue.request({"messages": [{"role": "user", "content": "x"}]}, "continue_final_message")
    assert (
        built is not None and built[0]["continue_final_message"] is True and built[0]["add_generation_prompt"] is False
    )
    second, _ = chat_reply("one two", Script(chunk_size=4, message_id="chatcmpl-2"), "alt", {})
    chunks = [
        json.loads(e.data)
        for e in events_of(*(s.raw for s in map(rescue.splice, events_of(*second)) if s is not None))
        if e.data != "[DONE]"
    ]
    assert {c["id"] for c in chunks} == {"chatcmpl-1"}
    assert all("role" not in c["choices"][0]["delta"] for c in chunks)


def test_after_an_upstream_error_event_nothing_is_relayed_not_even_the_terminator() -> None:
    # A server that sends its error and then `[DONE]` must not make a failed answer look complete.
    from interlock.protocols.rescue import ChatRescue
    from interlock.proxy.app import ProxyApp, _Watch

    state = _Watch()
    state.rescue = ChatRescue()
    first = b'data: {"id":"a","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
    error = b'data: {"error": {"message": "boom", "type": "server_error"}}\n\n'
    followed = ProxyApp._follow(events_of(first, error, b"data: [DONE]\n\n"), state)
    assert [e.raw for e in followed] == [first]
    assert state.rescue.held_error == error and state.rescue.delivered == "hi"
