"""What a response said, as export reads it: a stream reads exactly like the message it reassembles to."""

from __future__ import annotations

import json
from typing import Any

import pytest

from interlock.core.call import Call
from interlock.protocols import ADAPTERS
from interlock.protocols.summary import output_texts, response_message
from interlock.scripted.anthropic_replies import anthropic_reply
from interlock.scripted.openai_replies import chat_reply, responses_reply
from interlock.scripted.replies import Script, ToolUse


def call(protocol: str, *, stream: bool) -> Call:
    made = Call(id="c1", route=protocol, protocol=protocol, method="POST", path="/x")
    made.stream = stream
    return made


def texts(protocol: str, body: bytes, *, stream: bool) -> list[Any]:
    return output_texts(protocol, response_message(call(protocol, stream=stream), body))


def both(protocol: str, events: list[bytes], whole: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    return texts(protocol, b"".join(events), stream=True), texts(protocol, json.dumps(whole).encode(), stream=False)


TOOL = ToolUse("get_weather", {"city": "Paris", "days": 3, "units": {"temp": "C"}})


@pytest.mark.parametrize(
    "protocol, reply",
    [
        ("openai", lambda s: chat_reply("hello there", s, "gpt-4o-mini", {})),
        ("openai", lambda s: responses_reply("hello there", s, "gpt-4o-mini")),
        ("anthropic", lambda s: anthropic_reply("hello there", s, "claude")),
    ],
    ids=["chat", "responses", "anthropic"],
)
@pytest.mark.parametrize("tools", [False, True], ids=["text", "tool_call"])
def test_a_stream_reads_like_the_same_answer_not_streamed(protocol: str, reply: Any, tools: bool) -> None:
    events, whole = reply(Script(text="hello there", tool_calls=[TOOL] if tools else [], chunk_size=3))
    streamed, answered = both(protocol, events, whole)
    assert streamed == answered
    assert streamed  # something was said


def test_a_streamed_anthropic_tool_call_is_read_as_its_argument_values() -> None:
    events, whole = anthropic_reply("", Script(tool_calls=[TOOL]), "claude")
    streamed, _ = both("anthropic", events, whole)
    assert [(s.path, s.text, s.role) for s in streamed] == [
        (("content", 0, "input", "city"), "Paris", "tool_args"),
        (("content", 0, "input", "units", "temp"), "C", "tool_args"),
    ]


def test_a_responses_stream_cut_short_reads_what_the_agent_saw() -> None:
    events = [
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"hel"}\n\n',
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"lo"}\n\n',
    ]
    (slot,) = texts("openai", b"".join(events), stream=True)
    assert (slot.text, slot.role) == ("hello", "assistant")


def test_an_empty_or_unreadable_body_reads_as_nothing() -> None:
    assert texts("openai", b"data: [DONE]\n\n", stream=True) == []
    assert texts("anthropic", b"not json", stream=False) == []


def test_a_legacy_completion_s_text_is_read_streamed_and_not() -> None:
    # `/completions` answers `choices[].text`, and streams its pieces there too (no `delta`): the
    # guardrails scan and restore them as any other answer's texts.
    openai = ADAPTERS["openai"]
    whole = {"object": "text_completion", "choices": [{"index": 0, "text": "mail jane@example.com", "logprobs": None}]}
    assert [(s.path, s.text, s.role) for s in openai.response_texts(whole)] == [
        (("choices", 0, "text"), "mail jane@example.com", "assistant")
    ]
    chunk = {"object": "text_completion", "choices": [{"index": 0, "text": "mail jane@", "finish_reason": None}]}
    assert [(t.key, t.path, t.text) for t in openai.stream_texts(None, chunk)] == [
        ("choices.0.text", ("choices", 0, "text"), "mail jane@")
    ]
