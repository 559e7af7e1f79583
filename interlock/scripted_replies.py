"""What the scripted provider answers: the OpenAI (chat completions, Responses, embeddings) and
Anthropic (messages) wire formats, whole and as SSE events, built from a `Script`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ToolUse:
    name: str
    arguments: dict[str, Any]
    id: str = "call_1"


@dataclass
class Script:
    """How the provider answers one request. Defaults: a 200 echoing the last user text."""

    text: str | None = None
    tool_calls: list[ToolUse] = field(default_factory=list)
    status: int = 200
    body: bytes | None = None  # raw body, replaces the generated one
    headers: dict[str, str] = field(default_factory=dict)
    retry_after: str | None = None
    delay: float = 0.0  # before the response head
    first_byte_delay: float = 0.0  # between the head and the first body byte
    chunk_delay: float = 0.0  # between stream chunks
    end_delay: float = 0.0  # after the last stream event, before the stream is closed
    chunk_size: int = 4  # characters of text per streamed delta
    keepalive_every: int = 0  # a keep-alive after every N stream events (an SSE comment, then a ping / empty delta)
    reset_after: int | None = None  # reset after this many body chunks (0: before any; a stream sends its head first)
    input_tokens: int = 11
    output_tokens: int = 7
    model: str | None = None


def last_user_text(data: dict[str, Any]) -> str:
    messages = data.get("messages") or []
    if isinstance(data.get("input"), str):
        return str(data["input"])
    if isinstance(data.get("input"), list):
        messages = data["input"]
    for message in reversed(messages):
        if not isinstance(message, dict):
            continue
        if message.get("type") == "function_call_output":
            return f"tool said: {message.get('output')}"
        if message.get("role") == "tool":
            return f"tool said: {message.get('content')}"
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict):
                    if part.get("type") == "tool_result":
                        inner = part.get("content")
                        return f"tool said: {inner if isinstance(inner, str) else json.dumps(inner)}"
                    if isinstance(part.get("text"), str):
                        return str(part["text"])
    return "hello"


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(data).encode() + b"\n\n"


def with_keepalives(events: list[bytes], every: int, kind: str) -> list[bytes]:
    """`events` with a keep-alive after every `every` of them (not after the last): alternately an SSE
    comment and what the provider sends: Anthropic's `ping`, an OpenAI chat chunk with an empty delta."""
    extra = {
        "anthropic": sse({"type": "ping"}, "ping"),
        "chat": sse(
            {
                "id": "chatcmpl-scripted",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": "scripted-model",
                "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": None}],
            }
        ),
    }.get(kind, b": keep-alive\n\n")
    out: list[bytes] = []
    for i, event in enumerate(events):
        out.append(event)
        if (i + 1) % every == 0 and i + 1 < len(events):
            out.append(b": keep-alive\n\n" if (i + 1) // every % 2 else extra)
    return out


def error_body(status: int, anthropic: bool) -> bytes:
    message = f"scripted error {status}"
    if anthropic:
        kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
        return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()
    return json.dumps({"error": {"message": message, "type": "server_error", "param": None, "code": None}}).encode()


def chat_reply(text: str, script: Script, model: str, data: dict[str, Any]) -> tuple[list[bytes], dict[str, Any]]:
    created = 1_700_000_000
    rid = "chatcmpl-scripted"
    usage = {
        "prompt_tokens": script.input_tokens,
        "completion_tokens": script.output_tokens,
        "total_tokens": script.input_tokens + script.output_tokens,
    }
    tool_calls: list[dict[str, Any]] = [
        {"id": t.id, "type": "function", "function": {"name": t.name, "arguments": json.dumps(t.arguments)}}
        for t in script.tool_calls
    ]
    finish = "tool_calls" if tool_calls else "stop"
    message: dict[str, Any] = {"role": "assistant", "content": None if tool_calls else text, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    whole = {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return sse(
            {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
        )

    events = [chunk({"role": "assistant", "content": ""})]
    if tool_calls:
        for i, call in enumerate(tool_calls):
            events.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": i,
                                "id": call["id"],
                                "type": "function",
                                "function": {"name": call["function"]["name"], "arguments": ""},
                            }
                        ]
                    }
                )
            )
            for piece in pieces(call["function"]["arguments"], 8):
                events.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
    else:
        events += [chunk({"content": piece}) for piece in pieces(text, script.chunk_size)]
    events.append(chunk({}, finish))
    if (data.get("stream_options") or {}).get("include_usage"):
        events.append(
            sse(
                {
                    "id": rid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
            )
        )
    events.append(b"data: [DONE]\n\n")
    return events, whole


def responses_reply(text: str, script: Script, model: str) -> tuple[list[bytes], dict[str, Any]]:
    rid = "resp_scripted"
    usage = {
        "input_tokens": script.input_tokens,
        "output_tokens": script.output_tokens,
        "total_tokens": script.input_tokens + script.output_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }
    output: list[dict[str, Any]] = []
    if script.tool_calls:
        output = [
            {
                "type": "function_call",
                "id": f"fc_{t.id}",
                "call_id": t.id,
                "name": t.name,
                "arguments": json.dumps(t.arguments),
                "status": "completed",
            }
            for t in script.tool_calls
        ]
    else:
        output = [
            {
                "type": "message",
                "id": "msg_scripted",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ]
    base = {
        "id": rid,
        "object": "response",
        "created_at": 1_700_000_000,
        "model": model,
        "status": "completed",
        "output": output,
        "usage": usage,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
    in_progress = {**base, "status": "in_progress", "output": [], "usage": None}
    events = [sse({"type": "response.created", "sequence_number": 0, "response": in_progress}, "response.created")]
    seq = 1
    if not script.tool_calls:
        item = {**output[0], "status": "in_progress", "content": []}
        events.append(
            sse(
                {"type": "response.output_item.added", "sequence_number": seq, "output_index": 0, "item": item},
                "response.output_item.added",
            )
        )
        seq += 1
        part = {"type": "output_text", "text": "", "annotations": []}
        events.append(
            sse(
                {
                    "type": "response.content_part.added",
                    "sequence_number": seq,
                    "item_id": "msg_scripted",
                    "output_index": 0,
                    "content_index": 0,
                    "part": part,
                },
                "response.content_part.added",
            )
        )
        seq += 1
        for piece in pieces(text, script.chunk_size):
            events.append(
                sse(
                    {
                        "type": "response.output_text.delta",
                        "sequence_number": seq,
                        "item_id": "msg_scripted",
                        "output_index": 0,
                        "content_index": 0,
                        "delta": piece,
                        "logprobs": [],
                    },
                    "response.output_text.delta",
                )
            )
            seq += 1
        events.append(
            sse(
                {
                    "type": "response.output_text.done",
                    "sequence_number": seq,
                    "item_id": "msg_scripted",
                    "output_index": 0,
                    "content_index": 0,
                    "text": text,
                    "logprobs": [],
                },
                "response.output_text.done",
            )
        )
        seq += 1
        events.append(
            sse(
                {"type": "response.output_item.done", "sequence_number": seq, "output_index": 0, "item": output[0]},
                "response.output_item.done",
            )
        )
        seq += 1
    events.append(sse({"type": "response.completed", "sequence_number": seq, "response": base}, "response.completed"))
    return events, base


def anthropic_reply(text: str, script: Script, model: str) -> tuple[list[bytes], dict[str, Any]]:
    mid = "msg_scripted"
    content: list[dict[str, Any]] = []
    if script.tool_calls:
        content = [
            {"type": "tool_use", "id": f"toolu_{t.id}", "name": t.name, "input": t.arguments} for t in script.tool_calls
        ]
    else:
        content = [{"type": "text", "text": text}]
    stop = "tool_use" if script.tool_calls else "end_turn"
    usage = {"input_tokens": script.input_tokens, "output_tokens": script.output_tokens}
    whole = {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }
    start = {
        **whole,
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": script.input_tokens, "output_tokens": 1},
    }
    events = [sse({"type": "message_start", "message": start}, "message_start")]
    for i, block in enumerate(content):
        if block["type"] == "text":
            events.append(
                sse(
                    {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}},
                    "content_block_start",
                )
            )
            for piece in pieces(block["text"], script.chunk_size):
                events.append(
                    sse(
                        {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": piece}},
                        "content_block_delta",
                    )
                )
        else:
            events.append(
                sse(
                    {"type": "content_block_start", "index": i, "content_block": {**block, "input": {}}},
                    "content_block_start",
                )
            )
            for piece in pieces(json.dumps(block["input"]), 8):
                events.append(
                    sse(
                        {
                            "type": "content_block_delta",
                            "index": i,
                            "delta": {"type": "input_json_delta", "partial_json": piece},
                        },
                        "content_block_delta",
                    )
                )
        events.append(sse({"type": "content_block_stop", "index": i}, "content_block_stop"))
    events.append(
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": script.output_tokens},
            },
            "message_delta",
        )
    )
    events.append(sse({"type": "message_stop"}, "message_stop"))
    return events, whole


def embeddings_reply(data: dict[str, Any], model: str) -> dict[str, Any]:
    items = data.get("input")
    count = len(items) if isinstance(items, list) else 1
    return {
        "object": "list",
        "model": model,
        "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(count)],
        "usage": {"prompt_tokens": 3 * count, "total_tokens": 3 * count},
    }
