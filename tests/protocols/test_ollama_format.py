"""The Ollama adapter without a network: its NDJSON stream split at any read boundary (a line across
reads, the last object without its newline, a line past its bound), a stream reassembled into the
non-streamed answer, texts and tool calls read from chunks, parameters set in `options`."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from interlock.core.call import Call
from interlock.protocols import ADAPTERS, BadRequest
from interlock.protocols.ollama_stream import NdjsonSplitter
from interlock.protocols.sse import UnsplittableStream
from interlock.scripted import Script, ToolUse
from interlock.scripted.ollama import chat_reply, generate_reply, go_json

OLLAMA = ADAPTERS["ollama"]
TEXT = 'hello {wor]ld" \\ <done> & \n more'


def ndjson(chunks: list[dict[str, Any]]) -> bytes:
    return b"".join(go_json(chunk) + b"\n" for chunk in chunks)


def test_every_read_boundary_gives_the_same_events() -> None:
    chunks, _ = chat_reply(TEXT, Script(chunk_size=2), "llama3.2")
    body = ndjson(chunks)
    expected = [e.data for e in OLLAMA.iter_events(body)]
    assert len(expected) == len(chunks) and all(json.loads(d)["model"] == "llama3.2" for d in expected)
    for size in (1, 2, 3, 7, 64, len(body)):
        splitter = OLLAMA.event_splitter()
        events = []
        for start in range(0, len(body), size):
            events += list(splitter.feed(body[start : start + size]))
        events += list(splitter.close())
        assert b"".join(e.raw for e in events) == body  # byte-exact: every line with its newline
        assert [e.data for e in events] == expected


def test_a_line_is_held_until_its_newline_and_the_last_may_come_without_one() -> None:
    splitter = OLLAMA.event_splitter()
    assert list(splitter.feed(b'{"done":false,"response":"a')) == []
    assert splitter.pending() == b'{"done":false,"response":"a'
    (first,) = splitter.feed(b'b"}\n{"done":true}')
    assert first.json() == {"done": False, "response": "ab"} and first.raw.endswith(b"\n")
    (last,) = splitter.close()  # the server closed without the last newline: still an object
    assert last.json() == {"done": True} and last.raw == b'{"done":true}'
    assert list(splitter.close()) == []


def test_a_line_past_its_bound_ends_the_split() -> None:
    splitter = NdjsonSplitter(max_line=16)
    assert [e.data for e in splitter.feed(b'{"a":1}\n{"b":')] == ['{"a":1}']
    with pytest.raises(UnsplittableStream) as raised:
        list(splitter.feed(b'"' + b"x" * 20))
    assert raised.value.code == "stream_event_too_large"
    # A recorded stream is read back whole, unbounded: it was bounded as it was relayed.
    long_line = b'{"response":"' + b"y" * 100 + b'"}'
    assert [e.json() for e in OLLAMA.iter_events(long_line)] == [{"response": "y" * 100}]


@pytest.mark.parametrize("kind", ["text", "thinking", "tools"])
def test_a_chat_stream_reassembles_into_the_non_streamed_answer(kind: str) -> None:
    script = {
        "text": Script(chunk_size=3),
        "thinking": Script(chunk_size=3, thinking="first, think <this> through"),
        "tools": Script(tool_calls=[ToolUse("get_weather", {"city": "Paris"}), ToolUse("rm", {"path": "/"})]),
    }[kind]
    chunks, whole = chat_reply(TEXT, script, "llama3.2")
    assert OLLAMA.reassemble_stream(ndjson(chunks)) == whole


def test_a_generate_stream_reassembles_into_the_non_streamed_answer() -> None:
    chunks, whole = generate_reply(TEXT, Script(chunk_size=4, thinking="hmm"), "llama3.2")
    assert OLLAMA.reassemble_stream(ndjson(chunks)) == whole
    assert whole["response"] == TEXT and whole["context"] == [1, 2, 3]


def test_an_error_line_is_kept_in_the_reassembly() -> None:
    chunks, _ = chat_reply("partial answer", Script(chunk_size=5), "llama3.2")
    body = ndjson(chunks[:2]) + b'{"error":"an error was encountered while running the model"}\n'
    message = OLLAMA.reassemble_stream(body)
    assert message["error"] == "an error was encountered while running the model"
    assert message["message"]["content"] == "partial answer"[:10]


def test_texts_and_tool_calls_of_chunks_and_answers() -> None:
    chunks, whole = chat_reply("", Script(tool_calls=[ToolUse("lookup", {"who": {"email": "a@b.c"}})]), "m")
    call_chunk = next(c for c in chunks if c["message"].get("tool_calls"))
    (text,) = OLLAMA.stream_texts(None, call_chunk)
    assert (text.text, text.path, text.delta) == (
        "a@b.c",
        ("message", "tool_calls", 0, "function", "arguments", "who", "email"),
        False,
    )
    assert [c.name for c in OLLAMA.response_tool_calls(whole)] == ["lookup"]
    assert json.loads(OLLAMA.response_tool_calls(whole)[0].arguments) == {"who": {"email": "a@b.c"}}
    assert [s.text for s in OLLAMA.response_texts(whole)] == ["a@b.c"]
    # An empty piece holds text back (nothing ends there); the last line and an error line end it.
    assert OLLAMA.stream_texts(None, {"message": {"role": "assistant", "content": ""}, "done": False}) == []
    assert OLLAMA.stream_keepalive(None, {"message": {"role": "assistant", "content": ""}, "done": False})
    assert not OLLAMA.stream_keepalive(None, chunks[-1])
    assert not OLLAMA.stream_keepalive(None, {"error": "boom"})


def parsed(path: str, body: dict[str, Any], method: str = "POST") -> Any:
    call = Call(
        id="c", route="ollama", protocol="ollama", method=method, path=path, request_body=json.dumps(body).encode()
    )
    return OLLAMA.parse(call)


def test_requests_are_read_with_their_texts_tools_params_and_stream_default() -> None:
    chat = parsed(
        "/api/chat",
        {
            "model": "llama3.2",
            "messages": [
                {"role": "system", "content": "be brief"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"function": {"name": "f", "arguments": {"q": "x y"}}}],
                },
                {"role": "tool", "content": "result text", "tool_name": "f"},
            ],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "options": {"num_predict": 100, "temperature": 0.2},
        },
    )
    assert (chat.operation, chat.model, chat.stream, chat.tools) == ("chat", "llama3.2", True, ["f"])
    assert [(t.role, t.text) for t in chat.texts] == [
        ("system", "be brief"),
        ("tool_args", "x y"),
        ("tool", "result text"),
    ]
    assert chat.params == {"max_tokens": 100, "temperature": 0.2}
    generate = parsed("/api/generate", {"model": "m", "prompt": "why", "system": "sys", "stream": False})
    assert (generate.operation, generate.stream) == ("text_completion", False)
    assert [(t.path, t.role) for t in generate.texts] == [(("system",), "system"), (("prompt",), "user")]
    embed = parsed("/api/embed", {"model": "m", "input": ["a", "b"]})
    assert (embed.operation, [t.text for t in embed.texts]) == ("embeddings", ["a", "b"])
    assert parsed("/api/tags", {}, method="GET").operation == "http"
    for bad in ({"model": "m", "messages": "hi"}, {"model": "m", "messages": [{"content": 1}]}, {"model": 3}):
        with pytest.raises(BadRequest) as refused:
            parsed("/api/chat", bad)
        assert refused.value.status == 400
    with pytest.raises(BadRequest) as elsewhere:
        parsed("/v1/chat/completions", {"model": "m", "messages": []})
    assert (elsewhere.value.status, elsewhere.value.code) == (404, "not_found")


def test_an_unlimited_length_is_read_as_no_max_tokens_not_as_a_small_one() -> None:
    # -1 (no limit) and -2 (fill the context) must not pass `request.params.max_tokens < 4096`.
    for unlimited in (-1, -2):
        body = {"model": "m", "messages": [], "options": {"num_predict": unlimited, "seed": 1}}
        assert parsed("/api/chat", body).params == {"seed": 1}
    assert parsed("/api/generate", {"model": "m", "options": {"num_predict": 0}}).params == {"max_tokens": 0}


def test_parameters_are_set_in_options_and_an_unlimited_length_is_bounded() -> None:
    data: dict[str, Any] = {"model": "m", "options": {"num_predict": -1, "temperature": 0.1}}
    assert OLLAMA.set_param(data, "max_tokens", 256, "chat") == [("max_tokens", -1, 256)]
    assert OLLAMA.set_param(data, "max_tokens", 512, "chat") == []  # already below
    assert OLLAMA.set_param(data, "temperature", 0.5, "chat") == []
    fresh: dict[str, Any] = {"model": "m"}
    assert OLLAMA.set_param(fresh, "max_completion_tokens", 64, "chat") == [("max_tokens", None, 64)]
    assert fresh["options"] == {"num_predict": 64}
    tools = {"model": "m", "tools": [{"type": "function", "function": {"name": n}} for n in ("a", "rm")]}
    stripped = copy.deepcopy(tools)
    assert OLLAMA.strip_tools(stripped, {"rm"}) == ["rm"]
    assert [t["function"]["name"] for t in stripped["tools"]] == ["a"]


def test_usage_is_read_from_the_last_line_and_the_body() -> None:
    chunks, whole = chat_reply("abc", Script(input_tokens=5, output_tokens=9), "m")
    streamed = Call(id="s", route="ollama", protocol="ollama", method="POST", path="/api/chat", stream=True)
    from interlock.core.call import Chunk

    streamed.chunks = [Chunk(0.0, ndjson(chunks))]
    assert OLLAMA.usage(streamed) == (5, 9)
    plain = Call(id="p", route="ollama", protocol="ollama", method="POST", path="/api/chat")
    plain.response_body = go_json(whole)
    token_usage = OLLAMA.token_usage(plain)
    assert token_usage is not None and (token_usage.input, token_usage.output) == (5, 9)
    listing = Call(id="t", route="ollama", protocol="ollama", method="GET", path="/api/tags")
    listing.response_body = b'{"models":[]}'
    assert OLLAMA.token_usage(listing) is None
