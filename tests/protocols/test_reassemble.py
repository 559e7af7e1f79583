"""Reassembly is complete: a stream becomes exactly the message the non-streamed API returns, and that
message validates as the SDKs' own models.

The streams below follow real recordings and the providers' API references, event for event (the
texts, ids and signatures are made up): Anthropic's "Streaming messages" reference (extended
thinking with `signature_delta`, `redacted_thinking`, web search with `server_tool_use` /
`web_search_tool_result` and `citations_delta`), OpenAI's chat chunk reference (tool calls,
refusal, logprobs, the `include_usage` chunk) and the Responses streaming events as recorded
against the live API (pydantic-ai's cassettes `test_openai_responses_model_web_search_tool_stream`
and `..._thinking_part`: reasoning, web_search_call, message with annotations).
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import anthropic.types
import openai
import openai.types.chat
import openai.types.responses
import pydantic
import pytest

from interlock.protocols import ADAPTERS
from interlock.scripted import Script, ScriptedUpstream, ToolUse
from interlock.testing import Running, recorded_answer, wait_for


def through(body: bytes, marker: bytes) -> bytes:
    """The stream up to and including the first event that holds `marker`: a stream cut there."""
    events = body.split(b"\n\n")
    keep = next(i for i, event in enumerate(events) if marker in event)
    return b"\n\n".join(events[: keep + 1]) + b"\n\n"


def sse(*events: dict[str, Any], named: bool = True) -> bytes:
    out = b""
    for event in events:
        head = f"event: {event['type']}\n".encode() if named and "type" in event else b""
        out += head + b"data: " + json.dumps(event).encode() + b"\n\n"
    return out


# -- Anthropic -------------------------------------------------------------------------------------

SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"
CITATION = {
    "type": "web_search_result_location",
    "cited_text": "The 2026 solstice falls on 21 December.",
    "url": "https://example.org/solstice",
    "title": "Solstice dates",
    "encrypted_index": "Eo8BCioIAhgBIiQyYjQ",
}
ANTHROPIC_WHOLE: dict[str, Any] = {
    "id": "msg_01XyZ",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [
        {"type": "thinking", "thinking": "The user asks for the date. I should search.", "signature": SIGNATURE},
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"},
        {
            "type": "server_tool_use",
            "id": "srvtoolu_01",
            "name": "web_search",
            "input": {"query": "winter solstice 2026 date"},
        },
        {
            "type": "web_search_tool_result",
            "tool_use_id": "srvtoolu_01",
            "content": [
                {
                    "type": "web_search_result",
                    "url": "https://example.org/solstice",
                    "title": "Solstice dates",
                    "encrypted_content": "EqgfCioIARgBIiQ3YTAwMjY1",
                    "page_age": "2 days ago",
                }
            ],
        },
        {"type": "text", "text": "It is on ", "citations": None},
        {"type": "text", "text": "21 December.", "citations": [CITATION]},
        {"type": "tool_use", "id": "toolu_01", "name": "remind", "input": {"day": "2026-12-21", "tags": ["sky"]}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 2679,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 510,
        "server_tool_use": {"web_search_requests": 1, "web_fetch_requests": 0},
        "service_tier": "standard",
    },
}


def anthropic_stream() -> bytes:
    start = {
        **ANTHROPIC_WHOLE,
        "content": [],
        "stop_reason": None,
        "usage": {**ANTHROPIC_WHOLE["usage"], "output_tokens": 3, "server_tool_use": None},
    }
    blocks = ANTHROPIC_WHOLE["content"]

    def delta(index: int, **d: Any) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": index, "delta": d}

    return sse(
        {"type": "message_start", "message": start},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
        {"type": "ping"},
        delta(0, type="thinking_delta", thinking="The user asks for the date."),
        delta(0, type="thinking_delta", thinking=" I should search."),
        delta(0, type="signature_delta", signature=SIGNATURE),
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": blocks[1]},
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2, "content_block": {**blocks[2], "input": {}}},
        delta(2, type="input_json_delta", partial_json=""),
        delta(2, type="input_json_delta", partial_json='{"query": "winter sol'),
        delta(2, type="input_json_delta", partial_json='stice 2026 date"}'),
        {"type": "content_block_stop", "index": 2},
        {"type": "content_block_start", "index": 3, "content_block": blocks[3]},
        {"type": "content_block_stop", "index": 3},
        {"type": "content_block_start", "index": 4, "content_block": {"type": "text", "text": "", "citations": None}},
        delta(4, type="text_delta", text="It is "),
        delta(4, type="text_delta", text="on "),
        {"type": "content_block_stop", "index": 4},
        {"type": "content_block_start", "index": 5, "content_block": {"type": "text", "text": "", "citations": []}},
        delta(5, type="citations_delta", citation=CITATION),
        delta(5, type="text_delta", text="21 December."),
        {"type": "content_block_stop", "index": 5},
        {"type": "content_block_start", "index": 6, "content_block": {**blocks[6], "input": {}}},
        delta(6, type="input_json_delta", partial_json='{"day": "2026-12-21",'),
        delta(6, type="input_json_delta", partial_json=' "tags": ["sky"]}'),
        {"type": "content_block_stop", "index": 6},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {
                "input_tokens": 2679,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 510,
                "server_tool_use": {"web_search_requests": 1, "web_fetch_requests": 0},
            },
        },
        {"type": "message_stop"},
    )


def test_anthropic_keeps_thinking_signatures_citations_and_server_tools() -> None:
    message = ADAPTERS["anthropic"].reassemble_stream(anthropic_stream())
    assert message == ANTHROPIC_WHOLE
    assert message["content"][0]["signature"] == SIGNATURE
    parsed = anthropic.types.Message.model_validate(message)
    assert parsed == anthropic.types.Message.model_validate(ANTHROPIC_WHOLE)
    assert [b.type for b in parsed.content] == [
        "thinking",
        "redacted_thinking",
        "server_tool_use",
        "web_search_tool_result",
        "text",
        "text",
        "tool_use",
    ]


def test_an_anthropic_stream_cut_mid_tool_input_keeps_what_was_sent() -> None:
    message = ADAPTERS["anthropic"].reassemble_stream(through(anthropic_stream(), b'"{\\"day\\": \\"2026-12-21\\",'))
    assert message["stop_reason"] is None
    assert message["content"][-1] == {**ANTHROPIC_WHOLE["content"][-1], "input": '{"day": "2026-12-21",'}


def test_a_number_too_long_to_read_is_read_as_bad_json() -> None:
    # Past Python's int-string limit (4,300 digits) json.loads raises ValueError, not JSONDecodeError.
    huge = "1" * 5000
    start = {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t", "input": {}}}
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": huge}}
    message = ADAPTERS["anthropic"].reassemble_stream(sse(start, delta) + b'data: {"n": ' + huge.encode() + b"}\n\n")
    assert message["content"] == [{"type": "tool_use", "id": "t", "input": huge}]


# -- OpenAI chat -----------------------------------------------------------------------------------


def token(text: str, logprob: float) -> dict[str, Any]:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode()), "top_logprobs": []}


CHAT_WHOLE: dict[str, Any] = {
    "id": "chatcmpl-Bx1",
    "object": "chat.completion",
    "created": 1_760_000_000,
    "model": "gpt-4o-2024-08-06",
    "system_fingerprint": "fp_07871e2ad8",
    "service_tier": "default",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi there", "refusal": None},
            "logprobs": {"content": [token("Hi", -0.01), token(" there", -0.2)], "refusal": None},
            "finish_reason": "stop",
        },
        {
            "index": 1,
            "message": {"role": "assistant", "content": None, "refusal": "I can't help with that."},
            "logprobs": {"content": None, "refusal": [token("I can't", -0.5), token(" help with that.", -0.1)]},
            "finish_reason": "stop",
        },
        {
            "index": 2,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": '{"id": "42"}'}},
                    {"id": "call_b", "type": "function", "function": {"name": "ship", "arguments": "{}"}},
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        },
    ],
    "usage": {
        "prompt_tokens": 19,
        "completion_tokens": 30,
        "total_tokens": 49,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    },
}


def chat_stream() -> bytes:
    top = {k: CHAT_WHOLE[k] for k in ("id", "created", "model", "system_fingerprint", "service_tier")}

    def chunk(index: int, delta: dict[str, Any], logprobs: Any = None, finish: str | None = None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return {**top, "object": "chat.completion.chunk", "choices": [choice], "usage": None}

    body = sse(
        chunk(0, {"role": "assistant", "content": "", "refusal": None}, {"content": [], "refusal": None}),
        chunk(0, {"content": "Hi"}, {"content": [token("Hi", -0.01)], "refusal": None}),
        chunk(0, {"content": " there"}, {"content": [token(" there", -0.2)], "refusal": None}),
        chunk(0, {}, None, "stop"),
        chunk(1, {"role": "assistant", "content": None, "refusal": ""}),
        chunk(1, {"refusal": "I can't"}, {"content": None, "refusal": [token("I can't", -0.5)]}),
        chunk(1, {"refusal": " help with that."}, {"content": None, "refusal": [token(" help with that.", -0.1)]}),
        chunk(1, {}, None, "stop"),
        chunk(
            2,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"index": 0, "id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": ""}}
                ],
            },
        ),
        chunk(2, {"tool_calls": [{"index": 0, "function": {"arguments": '{"id": '}}]}),
        chunk(2, {"tool_calls": [{"index": 0, "function": {"arguments": '"42"}'}}]}),
        chunk(
            2,
            {
                "tool_calls": [
                    {"index": 1, "id": "call_b", "type": "function", "function": {"name": "ship", "arguments": "{}"}}
                ]
            },
        ),
        chunk(2, {}, None, "tool_calls"),
        {**top, "object": "chat.completion.chunk", "choices": [], "usage": CHAT_WHOLE["usage"]},
        named=False,
    )
    return body + b"data: [DONE]\n\n"


def test_openai_chat_keeps_tool_calls_refusals_logprobs_and_usage() -> None:
    message = ADAPTERS["openai"].reassemble_stream(chat_stream())
    assert message == CHAT_WHOLE
    parsed = openai.types.chat.ChatCompletion.model_validate(message)
    assert parsed == openai.types.chat.ChatCompletion.model_validate(CHAT_WHOLE)
    assert parsed.usage is not None and parsed.usage.total_tokens == 49


# -- OpenAI Responses ------------------------------------------------------------------------------

RESPONSE_ITEMS: list[dict[str, Any]] = [
    {
        "id": "rs_01",
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "**Looking it up**\n\nA search will tell."}],
        "encrypted_content": "gAAAAABo-enc",
    },
    {
        "id": "ws_01",
        "type": "web_search_call",
        "status": "completed",
        "action": {"type": "search", "query": "solstice 2026"},
    },
    {
        "id": "msg_01",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [
            {
                "type": "output_text",
                "text": "On 21 December ([example.org](https://example.org/solstice)).",
                "annotations": [
                    {
                        "type": "url_citation",
                        "start_index": 16,
                        "end_index": 60,
                        "title": "Solstice dates",
                        "url": "https://example.org/solstice",
                    }
                ],
                "logprobs": [],
            }
        ],
    },
    {
        "id": "fc_01",
        "type": "function_call",
        "status": "completed",
        "call_id": "call_01",
        "name": "remind",
        "arguments": '{"day": "2026-12-21"}',
    },
]
RESPONSE_WHOLE: dict[str, Any] = {
    "id": "resp_01",
    "object": "response",
    "created_at": 1_760_000_000,
    "status": "completed",
    "background": False,
    "error": None,
    "incomplete_details": None,
    "instructions": None,
    "max_output_tokens": None,
    "model": "gpt-5-2025-08-07",
    "output": RESPONSE_ITEMS,
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": "low", "summary": "detailed"},
    "store": True,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}, "verbosity": "medium"},
    "tool_choice": "auto",
    "tools": [],
    "top_p": 1.0,
    "truncation": "disabled",
    "usage": {
        "input_tokens": 312,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 148,
        "output_tokens_details": {"reasoning_tokens": 64},
        "total_tokens": 460,
    },
    "user": None,
    "metadata": {},
}


def responses_stream(*, complete: bool = True) -> bytes:
    seq = iter(range(1000))
    started = {**RESPONSE_WHOLE, "status": "in_progress", "output": [], "usage": None}
    reasoning, search, message, call = RESPONSE_ITEMS
    text = message["content"][0]["text"]

    def ev(kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "sequence_number": next(seq), **fields}

    events = [
        ev("response.created", response=started),
        ev("response.in_progress", response=started),
        ev("response.output_item.added", output_index=0, item={**reasoning, "summary": []}),
        ev(
            "response.reasoning_summary_part.added",
            item_id="rs_01",
            output_index=0,
            summary_index=0,
            part={"type": "summary_text", "text": ""},
        ),
        ev(
            "response.reasoning_summary_text.delta",
            item_id="rs_01",
            output_index=0,
            summary_index=0,
            delta="**Looking it up**",
        ),
        ev(
            "response.reasoning_summary_text.delta",
            item_id="rs_01",
            output_index=0,
            summary_index=0,
            delta="\n\nA search will tell.",
        ),
        ev(
            "response.reasoning_summary_text.done",
            item_id="rs_01",
            output_index=0,
            summary_index=0,
            text=reasoning["summary"][0]["text"],
        ),
        ev(
            "response.reasoning_summary_part.done",
            item_id="rs_01",
            output_index=0,
            summary_index=0,
            part=reasoning["summary"][0],
        ),
        ev("response.output_item.done", output_index=0, item=reasoning),
        ev(
            "response.output_item.added",
            output_index=1,
            item={"id": "ws_01", "type": "web_search_call", "status": "in_progress", "action": {"type": "search"}},
        ),
        ev("response.web_search_call.in_progress", output_index=1, item_id="ws_01"),
        ev("response.web_search_call.searching", output_index=1, item_id="ws_01"),
        ev("response.web_search_call.completed", output_index=1, item_id="ws_01"),
        ev("response.output_item.done", output_index=1, item=search),
        ev("response.output_item.added", output_index=2, item={**message, "status": "in_progress", "content": []}),
        ev(
            "response.content_part.added",
            item_id="msg_01",
            output_index=2,
            content_index=0,
            part={"type": "output_text", "annotations": [], "logprobs": [], "text": ""},
        ),
        ev(
            "response.output_text.delta",
            item_id="msg_01",
            output_index=2,
            content_index=0,
            delta=text[:16],
            logprobs=[],
        ),
        ev(
            "response.output_text.delta",
            item_id="msg_01",
            output_index=2,
            content_index=0,
            delta=text[16:],
            logprobs=[],
        ),
        ev(
            "response.output_text.annotation.added",
            item_id="msg_01",
            output_index=2,
            content_index=0,
            annotation_index=0,
            annotation=message["content"][0]["annotations"][0],
        ),
        ev("response.output_text.done", item_id="msg_01", output_index=2, content_index=0, text=text, logprobs=[]),
        ev("response.content_part.done", item_id="msg_01", output_index=2, content_index=0, part=message["content"][0]),
        ev("response.output_item.done", output_index=2, item=message),
        ev("response.output_item.added", output_index=3, item={**call, "status": "in_progress", "arguments": ""}),
        ev("response.function_call_arguments.delta", item_id="fc_01", output_index=3, delta='{"day": '),
        ev("response.function_call_arguments.delta", item_id="fc_01", output_index=3, delta='"2026-12-21"}'),
        ev("response.function_call_arguments.done", item_id="fc_01", output_index=3, arguments=call["arguments"]),
        ev("response.output_item.done", output_index=3, item=call),
    ]
    if complete:
        events.append(ev("response.completed", response=RESPONSE_WHOLE))
    return sse(*events)


def test_openai_responses_keeps_every_output_item() -> None:
    message = ADAPTERS["openai"].reassemble_stream(responses_stream())
    assert message == RESPONSE_WHOLE
    parsed = openai.types.responses.Response.model_validate(message)
    assert [item.type for item in parsed.output] == ["reasoning", "web_search_call", "message", "function_call"]


@pytest.mark.parametrize(
    "cut_after", ["response.output_text.annotation.added", "response.function_call_arguments.delta"]
)
def test_a_responses_stream_cut_short_is_rebuilt_from_its_events(cut_after: str) -> None:
    message = ADAPTERS["openai"].reassemble_stream(
        through(responses_stream(complete=False), f"event: {cut_after}".encode())
    )
    parsed = openai.types.responses.Response.model_validate(message)
    assert parsed.status == "incomplete" and parsed.id == "resp_01"
    assert message["output"][:2] == RESPONSE_ITEMS[:2]
    text = message["output"][2]["content"][0]
    if cut_after.startswith("response.output_text"):
        assert text == RESPONSE_ITEMS[2]["content"][0] and len(message["output"]) == 3
    else:
        assert message["output"][3]["arguments"] == '{"day": '


def test_the_whole_stream_without_its_final_response_is_the_same_message() -> None:
    # Every item was closed by output_item.done: the rebuilt output is the final one.
    message = ADAPTERS["openai"].reassemble_stream(responses_stream(complete=False))
    assert message["output"] == RESPONSE_ITEMS


# -- the SDKs' own stream accumulators read these streams the same way ------------------------------


def datas(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(event.split(b"data: ", 1)[1]) for event in body.split(b"\n\n") if b"data: {" in event]


def unparsed(value: Any) -> Any:
    """A dump without the openai accumulators' own additions (`parsed`, `parsed_arguments`, a tool call's `index`)."""
    if isinstance(value, dict):
        extra = ("parsed", "parsed_arguments", "index") if "function" in value else ("parsed", "parsed_arguments")
        return {k: unparsed(v) for k, v in value.items() if k not in extra}
    if isinstance(value, list):
        return [unparsed(v) for v in value]
    return value


def test_the_sdks_accumulate_these_streams_to_the_same_messages() -> None:
    """The streams above are well-formed: each SDK's own accumulator builds the expected message too."""
    from anthropic.lib.streaming._messages import accumulate_event
    from openai.lib.streaming.chat import ChatCompletionStreamState
    from openai.lib.streaming.responses._responses import ResponseStreamState

    snapshot: Any = None
    buffers: dict[int, bytes] = {}
    for event in datas(anthropic_stream()):
        if event["type"] != "ping":
            snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=buffers)  # type: ignore[arg-type]
    assert snapshot.model_dump() == anthropic.types.Message.model_validate(ANTHROPIC_WHOLE).model_dump()

    chat = ChatCompletionStreamState()
    for chunk in datas(chat_stream()):
        chat.handle_chunk(openai.types.chat.ChatCompletionChunk.model_validate(chunk))
    expected = openai.types.chat.ChatCompletion.model_validate(CHAT_WHOLE).model_dump()
    assert unparsed(chat.get_final_completion().model_dump()) == expected

    responses: Any = ResponseStreamState(input_tools=openai.omit, text_format=openai.omit)
    events: Any = pydantic.TypeAdapter(openai.types.responses.ResponseStreamEvent)
    for event in datas(responses_stream()):
        responses.handle_event(events.validate_python(event))
    expected = openai.types.responses.Response.model_validate(RESPONSE_WHOLE).model_dump()
    assert unparsed(responses._completed_response.model_dump()) == expected


# -- through interlock, compressed or not ----------------------------------------------------------


def recorded_message(running: Running, count: int) -> list[Any]:
    """The reassembled (or whole) response of each recorded call, oldest first."""
    store = running.runtime.store

    def listed() -> Any:
        found = store.list_calls(limit=100)
        return found if len(found) >= count else None

    rows = wait_for(listed, what=f"{count} calls recorded")
    return [recorded_answer(store, row["id"]).message for row in reversed(rows)]


@pytest.mark.parametrize("encoding", [None, "gzip", "br"])
@pytest.mark.parametrize("api", ["anthropic", "responses"])
def test_a_stream_through_interlock_is_stored_as_the_non_streamed_answer(
    interlock: Running, upstream: ScriptedUpstream, encoding: str | None, api: str
) -> None:
    thinking = "The order tool will know; call it."
    script = Script(tool_calls=[ToolUse("lookup_order", {"order_id": "42"})], thinking=thinking, encoding=encoding)
    upstream.script(script, script)
    if api == "anthropic":
        with anthropic.Anthropic(base_url=interlock.url + "/anthropic", api_key="sk-x", max_retries=0) as client:
            asked: dict[str, Any] = {
                "model": "claude-sonnet-4-5",
                "max_tokens": 1024,
                "messages": [{"role": "user", "content": "where is 42?"}],
            }
            whole = client.messages.create(**asked)
            with client.messages.stream(**asked) as stream:
                streamed = stream.get_final_message()
        assert streamed.model_dump() == whole.model_dump()
        plain, reassembled = recorded_message(interlock, 2)
        assert anthropic.types.Message.model_validate(reassembled) == whole
        assert reassembled["content"][0]["signature"] == whole.content[0].signature != ""  # type: ignore[union-attr]
    else:
        with openai.OpenAI(base_url=interlock.url + "/openai", api_key="sk-x", max_retries=0) as oclient:
            request: dict[str, Any] = {"model": "gpt-5", "input": "where is 42?"}
            response = oclient.responses.create(**request)
            with oclient.responses.stream(**request) as rstream:
                rstream.get_final_response()
        plain, reassembled = recorded_message(interlock, 2)
        assert openai.types.responses.Response.model_validate(reassembled) == response
        assert [item["type"] for item in reassembled["output"]] == ["reasoning", "function_call"]
    assert reassembled == plain
    if encoding:  # the upstream did compress both answers (the client's Accept-Encoding went through)
        assert all(encoding in r.headers.get("accept-encoding", "") for r in upstream.requests)


def test_a_code_interpreter_call_cut_mid_code_keeps_the_code_sent() -> None:
    # Event names from the Responses streaming reference (response.code_interpreter_call_code.delta).
    item = {"id": "ci_01", "type": "code_interpreter_call", "status": "in_progress", "code": "", "container_id": "c1"}
    body = sse(
        {"type": "response.created", "sequence_number": 0, "response": {**RESPONSE_WHOLE, "status": "in_progress", "output": [], "usage": None}},
        {"type": "response.output_item.added", "sequence_number": 1, "output_index": 0, "item": item},
        {"type": "response.code_interpreter_call_code.delta", "sequence_number": 2, "output_index": 0,
         "item_id": "ci_01", "delta": "print(6 "},
        {"type": "response.code_interpreter_call_code.delta", "sequence_number": 3, "output_index": 0,
         "item_id": "ci_01", "delta": "* 7)"},
    )  # fmt: skip
    message = ADAPTERS["openai"].reassemble_stream(body)
    assert message["status"] == "incomplete" and message["output"] == [{**item, "code": "print(6 * 7)"}]
