"""`Adapter.stored_view`: an offline reader's one way to read a recorded answer from stored columns
(the audit trail, the UI's timeline and call page). A stream reads like the message the proxy
stored for it (`bodies.response_message`) or, without one, like its chunks reassembled; a plain
answer like its body. The chunks follow OpenAI's chat chunk reference (a tool call streamed in
pieces, then the finish chunk)."""

from __future__ import annotations

import json
from typing import Any

from interlock.protocols import ADAPTERS

OPENAI = ADAPTERS["openai"]

CHUNKS: list[dict[str, Any]] = [
    {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1765000000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "delta": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        }
                    ],
                },
                "finish_reason": None,
            }
        ],
    },
    {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1765000000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Oslo"}'}}]},
                "finish_reason": None,
            }
        ],
    },
    {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1765000000,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
    },
]
STREAM = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in CHUNKS) + b"data: [DONE]\n\n"
HEADERS = [("content-type", "text/event-stream")]


def tools(view: Any) -> list[tuple[str, str]]:
    return [(t.name, t.arguments) for t in view.tool_calls]


def test_a_stream_reads_from_its_chunks_and_from_its_stored_message_alike() -> None:
    from_chunks = OPENAI.stored_view(stream=True, body=None, headers=HEADERS, chunks=STREAM)
    assert tools(from_chunks) == [("get_weather", '{"city": "Oslo"}')]
    stored = json.dumps(from_chunks.message)  # what the writer keeps in bodies.response_message
    from_message = OPENAI.stored_view(stream=True, body=None, headers=HEADERS, message=stored, chunks=b"junk")
    assert from_message.message == from_chunks.message  # the stored message wins: the chunks are not read
    assert tools(from_message) == tools(from_chunks)


def test_a_plain_answer_reads_from_its_body() -> None:
    whole = OPENAI.stored_view(stream=True, body=None, headers=HEADERS, chunks=STREAM).message
    body = json.dumps(whole).encode()
    view = OPENAI.stored_view(stream=False, body=body, headers=[("content-type", "application/json")])
    assert view.message == whole
    assert tools(view) == [("get_weather", '{"city": "Oslo"}')]


def test_a_stream_without_chunks_or_message_reads_its_body() -> None:
    # A stream the proxy relayed as one body (or answered with a JSON error) is read from that body.
    error = {"error": {"message": "no", "type": "invalid_request_error", "code": None}}
    view = OPENAI.stored_view(stream=True, body=json.dumps(error).encode(), headers=[])
    assert view.message == error
    assert view.tool_calls == []


def test_unreadable_records_read_as_no_answer() -> None:
    damaged = OPENAI.stored_view(stream=True, body=None, headers=HEADERS, message="{not json")
    assert damaged.message is None and damaged.tool_calls == [] and damaged.texts == []
    not_json = OPENAI.stored_view(stream=False, body=b"<html>bad gateway</html>", headers=[])
    assert not_json.message is None and not_json.tool_calls == []
    nothing = OPENAI.stored_view(stream=False, body=None, headers=[])
    assert nothing.message is None
