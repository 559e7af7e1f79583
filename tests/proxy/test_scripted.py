"""The scripted provider speaks the real wire formats: its streams are what the SDKs' own stream
accumulators turn into exactly its non-streamed answers, both validate as the SDK models, and it
compresses on request as the real APIs do."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import anthropic.types
import brotli
import httpx
import openai
import openai.types.chat
import openai.types.responses
import pytest

from interlock.protocols import ADAPTERS
from interlock.scripted import ScriptedUpstream
from interlock.scripted.anthropic_replies import anthropic_reply
from interlock.scripted.openai_replies import chat_reply, responses_reply
from interlock.scripted.replies import Script, ToolUse

TOOLS = [
    ToolUse("lookup_order", {"order_id": "42", "fields": ["status", "eta"]}, id="call_1"),
    ToolUse("ship", {}, id="call_2"),
]
SCRIPTS = {
    "text": Script(text="Order 42 shipped on 2026-11-20."),
    "tools": Script(tool_calls=TOOLS),
    "thinking": Script(text="It shipped.", thinking="The user asks about order 42; the tool said shipped."),
    "thinking+tools": Script(tool_calls=TOOLS[:1], thinking="I need the order first."),
    "refusal": Script(refusal="I can't help with that."),
}
STRUCTURED = {
    "text": {
        "format": {
            "type": "json_schema",
            "name": "order",
            "schema": {"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]},
            "strict": True,
        }
    }
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as running:
        yield running


def unparsed(value: Any) -> Any:
    """A dump without the SDK accumulator's own additions (`parsed`, `parsed_arguments`, a tool call's `index`)."""
    if isinstance(value, dict):
        extra = ("parsed", "parsed_arguments", "index") if "function" in value else ("parsed", "parsed_arguments")
        return {k: unparsed(v) for k, v in value.items() if k not in extra}
    if isinstance(value, list):
        return [unparsed(v) for v in value]
    return value


def data_of(events: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(e.split(b"data: ", 1)[1]) for e in events if b"data: {" in e]


# -- the replies, as built -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SCRIPTS))
@pytest.mark.parametrize("logprobs", [False, True])
def test_a_chat_stream_reassembles_to_the_completion(name: str, logprobs: bool) -> None:
    events, whole = chat_reply(
        SCRIPTS[name].text or "",
        SCRIPTS[name],
        "gpt-4o",
        {"stream_options": {"include_usage": True}, "logprobs": logprobs},
    )
    openai.types.chat.ChatCompletion.model_validate(whole)
    assert ADAPTERS["openai"].reassemble_stream(b"".join(events)) == whole
    chunks = data_of(events)
    assert [c["usage"] for c in chunks[:-1]] == [None] * (len(chunks) - 1) and chunks[-1]["choices"] == []
    assert events[-1] == b"data: [DONE]\n\n"
    if logprobs and name == "text":
        assert [t["token"] for t in whole["choices"][0]["logprobs"]["content"]] == [
            "Orde", "r 42", " shi", "pped", " on ", "2026", "-11-", "20."
        ]  # fmt: skip


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_a_responses_stream_has_every_event_and_reassembles_to_the_response(name: str) -> None:
    script = SCRIPTS[name]
    events, whole = responses_reply(script.text or "", script, "gpt-5", {"include": ["reasoning.encrypted_content"]})
    openai.types.responses.Response.model_validate(whole)
    assert ADAPTERS["openai"].reassemble_stream(b"".join(events)) == whole
    sent = data_of(events)
    assert [e["sequence_number"] for e in sent] == list(range(len(sent)))
    assert all(e.startswith(f"event: {d['type']}\n".encode()) for e, d in zip(events, sent, strict=True))
    kinds = [e["type"] for e in sent]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert kinds.count("response.output_item.added") == kinds.count("response.output_item.done") == len(whole["output"])
    if script.tool_calls:
        assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
        done = [e for e in sent if e["type"] == "response.function_call_arguments.done"]
        assert [json.loads(e["arguments"]) for e in done] == [t.arguments for t in script.tool_calls]
    if script.thinking:
        assert whole["output"][0]["type"] == "reasoning" and whole["output"][0]["encrypted_content"]
        assert "response.reasoning_summary_text.delta" in kinds
    # A stream cut before response.completed still reassembles to the same output.
    assert ADAPTERS["openai"].reassemble_stream(b"".join(events[:-1]))["output"] == whole["output"]


def test_a_structured_output_request_gets_its_format_back() -> None:
    events, whole = responses_reply('{"status": "shipped"}', Script(), "gpt-5", STRUCTURED)
    parsed = openai.types.responses.Response.model_validate(whole)
    assert parsed.text is not None and parsed.text.format is not None and parsed.text.format.type == "json_schema"
    assert json.loads(parsed.output_text) == {"status": "shipped"}
    assert ADAPTERS["openai"].reassemble_stream(b"".join(events)) == whole


@pytest.mark.parametrize("name", [n for n in SCRIPTS if n != "refusal"])
def test_an_anthropic_stream_reassembles_to_the_message_with_its_signature(name: str) -> None:
    events, whole = anthropic_reply(SCRIPTS[name].text or "", SCRIPTS[name], "claude-sonnet-4-5")
    message = anthropic.types.Message.model_validate(whole)
    assert ADAPTERS["anthropic"].reassemble_stream(b"".join(events)) == whole
    if SCRIPTS[name].thinking:
        assert message.content[0].type == "thinking" and message.content[0].signature
        deltas = [e["delta"]["type"] for e in data_of(events) if e["type"] == "content_block_delta"]
        assert "signature_delta" in deltas


# -- through the SDKs' own stream accumulators -------------------------------------------------------


def openai_client(upstream: ScriptedUpstream) -> openai.OpenAI:
    return openai.OpenAI(base_url=upstream.url + "/v1", api_key="sk-x", max_retries=0)


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_the_openai_sdk_streams_chat_to_the_non_streamed_completion(upstream: ScriptedUpstream, name: str) -> None:
    upstream.script(SCRIPTS[name], SCRIPTS[name])
    with openai_client(upstream) as client:
        asked: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "where is 42?"}]}
        whole = client.chat.completions.create(**asked, logprobs=True)
        with client.chat.completions.stream(**asked, logprobs=True, stream_options={"include_usage": True}) as s:
            streamed = s.get_final_completion()
    assert unparsed(streamed.model_dump()) == whole.model_dump()


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_the_openai_sdk_streams_responses_to_the_non_streamed_response(upstream: ScriptedUpstream, name: str) -> None:
    upstream.script(SCRIPTS[name], SCRIPTS[name])
    with openai_client(upstream) as client:
        asked: dict[str, Any] = {"model": "gpt-5", "input": "where is 42?", "include": ["reasoning.encrypted_content"]}
        whole = client.responses.create(**asked)
        with client.responses.stream(**asked) as s:
            for _ in s:
                pass
            streamed = s.get_final_response()
    assert unparsed(streamed.model_dump()) == whole.model_dump()


def test_the_openai_sdk_parses_streamed_structured_output(upstream: ScriptedUpstream) -> None:
    from pydantic import BaseModel

    class Order(BaseModel):
        status: str

    upstream.script(Script(text='{"status": "shipped"}'))
    with openai_client(upstream) as client:
        with client.responses.stream(model="gpt-5", input="where is 42?", text_format=Order) as s:
            final = s.get_final_response()
    assert final.output_parsed == Order(status="shipped")
    assert upstream.requests[-1].json()["text"]["format"]["type"] == "json_schema"


@pytest.mark.parametrize("name", [n for n in SCRIPTS if n != "refusal"])
def test_the_anthropic_sdk_streams_to_the_non_streamed_message(upstream: ScriptedUpstream, name: str) -> None:
    upstream.script(SCRIPTS[name], SCRIPTS[name])
    with anthropic.Anthropic(base_url=upstream.url, api_key="sk-x", max_retries=0) as client:
        asked: dict[str, Any] = {
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "messages": [{"role": "user", "content": "where is 42?"}],
        }
        whole = client.messages.create(**asked)
        with client.messages.stream(**asked) as s:
            streamed = s.get_final_message()
    assert streamed.model_dump() == whole.model_dump()


# -- compression on request ------------------------------------------------------------------------

DECODE: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.decompress,
    "deflate": zlib.decompress,
    "br": brotli.decompress,
}


@pytest.mark.parametrize("encoding", list(DECODE))
@pytest.mark.parametrize("stream", [True, False])
def test_a_script_compresses_when_the_client_accepts_it(
    upstream: ScriptedUpstream, encoding: str, stream: bool
) -> None:
    body = {"model": "claude", "max_tokens": 10, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    upstream.script(Script(text="hello", encoding=encoding), Script(text="hello"))
    with httpx.Client(base_url=upstream.url) as client:
        raw = b""
        with client.stream("POST", "/v1/messages", json=body, headers={"accept-encoding": encoding}) as response:
            assert response.headers["content-encoding"] == encoding
            for piece in response.iter_raw():
                raw += piece
        plain = client.post("/v1/messages", json=body, headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert raw != plain.content and DECODE[encoding](raw) == plain.content


def test_a_compressed_stream_decodes_event_by_event(upstream: ScriptedUpstream) -> None:
    body = {"model": "gpt-5", "input": "hi", "stream": True}
    upstream.script(Script(text="hello there", encoding="gzip"))
    with httpx.Client(base_url=upstream.url) as client:
        with client.stream("POST", "/v1/responses", json=body, headers={"accept-encoding": "gzip"}) as response:
            decoder = zlib.decompressobj(wbits=31)
            decoded = [decoder.decompress(piece) for piece in response.iter_raw()]
    # Every piece decodes on its own (the stream is flushed per event), so a reader sees events as they come.
    assert all(piece.endswith(b"\n\n") for piece in decoded if piece)
    assert ADAPTERS["openai"].reassemble_stream(b"".join(decoded))["output"][0]["content"][0]["text"] == "hello there"


def test_a_script_does_not_compress_when_the_client_does_not_ask(upstream: ScriptedUpstream) -> None:
    upstream.script(Script(text="hello", encoding="br"))
    with httpx.Client(base_url=upstream.url) as client:
        got = client.post(
            "/v1/chat/completions", json={"model": "m", "messages": []}, headers={"accept-encoding": "gzip"}
        )
    assert "content-encoding" not in got.headers and got.json()["choices"][0]["message"]["content"] == "hello"


def test_an_unknown_encoding_is_only_a_label(upstream: ScriptedUpstream) -> None:
    upstream.script(Script(text="hello", encoding="x-scrambled"))
    with httpx.Client(base_url=upstream.url) as client:
        with client.stream("POST", "/v1/chat/completions", json={"model": "m", "messages": []}) as response:
            raw = b"".join(response.iter_raw())
    assert response.headers["content-encoding"] == "x-scrambled"
    assert json.loads(raw)["choices"][0]["message"]["content"] == "hello"
