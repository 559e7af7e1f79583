"""The Gemini adapter without a network: both stream framings split at any chunk boundary, a stream
reassembled into the non-streamed answer, the model rewritten in the path, tools stripped, params set."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from interlock.protocols import ADAPTERS
from interlock.scripted import Script, ToolUse
from interlock.scripted.gemini import frame, gemini_reply

GEMINI = ADAPTERS["gemini"]


def stream(sse: bool, **script: Any) -> tuple[bytes, dict[str, Any]]:
    events, whole = gemini_reply('hello {wor]ld" \\ done', Script(chunk_size=2, **script), "gemini-2.0-flash")
    return b"".join(frame(events, sse)), whole


@pytest.mark.parametrize("sse", [True, False])
def test_every_chunking_gives_the_same_events(sse: bool) -> None:
    body, _ = stream(sse)
    expected = [(e.event, e.data) for e in GEMINI.iter_events(body)]
    assert len([e for e in expected if e[1].startswith("{")]) == 11  # 21 characters, 2 a chunk
    for size in (1, 2, 3, 7, 64):
        splitter = GEMINI.event_splitter()
        events = []
        for start in range(0, len(body), size):
            events += list(splitter.feed(body[start : start + size]))
        events += list(splitter.close())
        assert b"".join(e.raw for e in events) == body
        assert [(e.event, e.data) for e in events] == expected


@pytest.mark.parametrize("sse", [True, False])
def test_a_stream_reassembles_into_the_non_streamed_answer(sse: bool) -> None:
    body, whole = stream(sse, reasoning_tokens=3, thinking="let me think", tool_calls=[ToolUse("f", {"q": 1})])
    assert GEMINI.reassemble_stream(body) == whole


def test_the_splitter_holds_back_an_unfinished_element() -> None:
    body, _ = stream(False)
    first_end = body.index(b"\n,")

    def whole(data: bytes) -> bytes:
        return b"".join(e.raw for e in GEMINI.event_splitter().feed(data))

    assert whole(body[: first_end + 5]) == body[:first_end]
    assert whole(body) == body
    assert whole(b'data: {"a": 1}\r\n\r\ndata: {"b"') == b'data: {"a": 1}\r\n\r\n'


def test_a_rewritten_element_and_a_copy_keep_the_array_valid() -> None:
    assert GEMINI.stream_event("[", {"a": 1}) == b'[{"a": 1}'
    assert GEMINI.stream_event(",", {"a": 1}) == b'\n,\r\n{"a": 1}'
    assert GEMINI.stream_copy_event("[", {"a": 1}) == b'\n,\r\n{"a": 1}'
    assert GEMINI.stream_copy_event(None, {"a": 1}) == b'data: {"a": 1}\r\n\r\n'


def test_the_model_is_rewritten_in_the_path_and_in_batch_items() -> None:
    data = {"requests": [{"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}}]}
    rewritten = GEMINI.rewrite_model(
        data, "/v1beta/models/text-embedding-004:batchEmbedContents", "gemini-embedding-001"
    )
    assert rewritten is not None
    new, path = rewritten
    assert path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert new["requests"][0]["model"] == "models/gemini-embedding-001"
    assert data["requests"][0]["model"] == "models/text-embedding-004"  # never in place
    assert GEMINI.rewrite_model({}, "/v1beta/models/m:generateContent", "m") is None


def test_strip_tools_and_set_param() -> None:
    data: dict[str, Any] = {
        "tools": [
            {"functionDeclarations": [{"name": "rm"}, {"name": "ls"}]},
            {"function_declarations": [{"name": "rm"}]},
        ],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["rm", "ls"]}},
        "generationConfig": {"maxOutputTokens": 4000},
    }
    assert GEMINI.strip_tools(data, {"rm"}) == ["rm", "rm"]
    assert data["tools"] == [{"functionDeclarations": [{"name": "ls"}]}]
    assert data["toolConfig"]["functionCallingConfig"]["allowedFunctionNames"] == ["ls"]
    assert GEMINI.strip_tools(copy.deepcopy(data), {"ls"}) == ["ls"]
    assert GEMINI.set_param(data, "max_tokens", 1000, "chat") == [("max_tokens", 4000, 1000)]
    assert data["generationConfig"]["maxOutputTokens"] == 1000
    assert GEMINI.set_param(data, "max_tokens", 2000, "chat") == []  # a clamp only lowers
    assert GEMINI.set_param(data, "temperature", 0.2, "chat") == [("temperature", None, 0.2)]


def test_otel_names_the_provider_gcp_gemini() -> None:
    from interlock.otel.attributes import provider_name
    from interlock.policies.cases import CaseRequest, build_call

    call = build_call(CaseRequest.model_validate({"route": "g", "protocol": "gemini", "model": "gemini-2.5-pro"}))
    assert (call.model, call.path) == ("gemini-2.5-pro", "/v1beta/models/gemini-2.5-pro:generateContent")
    assert provider_name(call, "127.0.0.1") == "gcp.gemini"
