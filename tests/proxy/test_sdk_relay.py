"""Agents built on the real openai and anthropic SDKs get exactly what the upstream sent."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from interlock.scripted import Script, ScriptedUpstream, ToolUse
from interlock.testing import Running
from tests.proxy.routing_support import anthropic_client, openai_client


def test_chat_completion_is_relayed_byte_exact(interlock: Running, upstream: ScriptedUpstream) -> None:
    client = openai_client(interlock)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi there"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hi there"
    assert completion.usage is not None and completion.usage.prompt_tokens == 11
    sent = upstream.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.json()["messages"] == [{"role": "user", "content": "hi there"}]
    direct = httpx.post(
        upstream.url + "/v1/chat/completions", content=sent.body, headers={"content-type": "application/json"}
    )
    assert raw.http_response.content == direct.content


def test_streamed_chat_matches_the_upstream_chunks(interlock: Running, upstream: ScriptedUpstream) -> None:
    upstream.script(Script(text="streaming works fine", chunk_size=3))
    client = openai_client(interlock)
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "x"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == "streaming works fine"
    assert pieces[0] == "str"


def test_raw_stream_bytes_are_identical(interlock: Running, upstream: ScriptedUpstream) -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "abc"}], "stream": True})
    headers = {"content-type": "application/json"}
    direct = httpx.post(upstream.url + "/v1/chat/completions", content=body, headers=headers)
    proxied = httpx.post(interlock.url + "/openai/chat/completions", content=body, headers=headers)
    assert proxied.status_code == 200
    assert proxied.headers["content-type"].startswith("text/event-stream")
    assert proxied.content == direct.content


def test_tool_calls_round_trip(interlock: Running, upstream: ScriptedUpstream) -> None:
    upstream.script(Script(tool_calls=[ToolUse("get_weather", {"city": "Paris"})]), Script(text="It is sunny."))
    client = openai_client(interlock)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    messages: list[dict[str, object]] = [{"role": "user", "content": "weather in Paris?"}]
    first = client.chat.completions.create(model="gpt-4o", messages=messages, tools=tools)  # type: ignore[arg-type]
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    second = client.chat.completions.create(model="gpt-4o", messages=messages, tools=tools)  # type: ignore[arg-type]
    assert second.choices[0].message.content == "It is sunny."


def test_responses_api_streamed_and_not(interlock: Running, upstream: ScriptedUpstream) -> None:
    client = openai_client(interlock)
    response = client.responses.create(model="gpt-4.1", input="tell me")
    assert response.output_text == "echo: tell me"
    with client.responses.stream(model="gpt-4.1", input="stream me") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
    assert text == "echo: stream me"


def test_anthropic_messages_streamed_and_not(interlock: Running, upstream: ScriptedUpstream) -> None:
    client = anthropic_client(interlock)
    message = client.messages.create(
        model="claude-test-model", max_tokens=100, messages=[{"role": "user", "content": "bonjour"}]
    )
    assert message.content[0].text == "echo: bonjour"  # type: ignore[union-attr]
    upstream.script(Script(tool_calls=[ToolUse("lookup", {"q": "x"})]))
    with client.messages.stream(
        model="claude-test-model", max_tokens=100, messages=[{"role": "user", "content": "use a tool"}]
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input == {"q": "x"}  # type: ignore[union-attr]
    assert final.usage.output_tokens == 7
    assert upstream.requests[-1].headers["x-api-key"] == "sk-ant-real"


@pytest.mark.parametrize("status", [400, 429, 500])
def test_upstream_errors_are_relayed_as_they_are(make_interlock: Any, upstream: ScriptedUpstream, status: int) -> None:
    # With retries off (429 and 5xx are retried by default; see tests/proxy/test_retry.py).
    openai_route = {"protocol": "openai", "upstream": upstream.url + "/v1", "retry": {"attempts": 1}}
    interlock = make_interlock(routes={"openai": openai_route})
    upstream.script(Script(status=status, retry_after="7"))
    response = httpx.post(interlock.url + "/openai/chat/completions", json={"model": "m", "messages": []})
    assert response.status_code == status
    assert response.json()["error"]["message"] == f"scripted error {status}"
    assert response.headers["retry-after"] == "7"
