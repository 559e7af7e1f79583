"""What the scripted provider answers: the OpenAI (chat completions, Responses, embeddings) and
Anthropic (messages) wire formats, whole and as SSE events, built from a `Script`."""

from __future__ import annotations

import base64
import hashlib
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
    # Prompt-cache and reasoning counts, as each API reports them: OpenAI counts cached tokens inside
    # the input (`cached_tokens` <= input_tokens) and reasoning inside the output; Anthropic reports
    # `cache_read_input_tokens` and `cache_creation_input_tokens` beside `input_tokens`.
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    model: str | None = None
    thinking: str | None = None  # reasoning first: Anthropic `thinking` (with signature), a Responses reasoning item
    refusal: str | None = None  # a refusal instead of the text (OpenAI chat `refusal`, Responses refusal part)
    # Compress the body in this content-encoding (gzip, deflate, br, zstd) when the request's
    # Accept-Encoding lists it, as the real APIs do (streams flushed event by event). Any other name
    # is sent as the `content-encoding` label over the plain body, asked for or not: an upstream in
    # an encoding nobody can read.
    encoding: str | None = None
    # Answer like a model that uses the tools it is offered (`interlock demo`'s model): when the request
    # offers tools (and tool_choice is not "none") and does not end with a tool's result, call the first
    # offered tool, its arguments made from its JSON schema (`offered_tool_call`); else the text.
    use_tools: bool = False
    # A provider error in its exact wire shape, with `status` (400 unless set otherwise):
    # "context_length_exceeded" (OpenAI's code; Anthropic's "prompt is too long"), "content_filter".
    error: str | None = None
    # Stall a stream after this many events: the connection stays open and silent for `stall_seconds`
    # or until the client leaves (a model that hangs mid-answer).
    stall_after: int | None = None
    stall_seconds: float = 60.0
    # Send the provider's mid-stream error event after this many events, then close without the
    # terminator (Anthropic's `event: error` with `overloaded_error`; OpenAI's `data: {"error": ...}`).
    error_event_after: int | None = None
    # A request that ends with an assistant message (a prefill): "continue" it, as Anthropic and
    # prefill-capable OpenAI-compatible servers do (the answer is the script's text after the prefill,
    # when it starts with it), or "reject" it with a 400 (a model without prefill support).
    prefill: str = "continue"
    message_id: str | None = None  # the answer's id (else chatcmpl-scripted, msg_scripted, resp_scripted)


#: Provider errors a script can name (`Script.error`), as (OpenAI body, Anthropic body).
_ERRORS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "context_length_exceeded": (
        {
            "message": "This model's maximum context length is 8192 tokens. However, your messages resulted in"
            " 9000 tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        },
        {"type": "invalid_request_error", "message": "prompt is too long: 208656 tokens > 200000 maximum"},
    ),
    "content_filter": (
        {
            "message": "The response was filtered due to the prompt triggering the content management policy.",
            "type": "invalid_request_error",
            "param": "prompt",
            "code": "content_filter",
        },
        {"type": "invalid_request_error", "message": "Output blocked by content filtering policy"},
    ),
    "prefill": (
        {
            "message": "This model does not support continuing a final assistant message.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": None,
        },
        {
            "type": "invalid_request_error",
            "message": "This model does not support assistant message prefill. The conversation must end with a"
            " user message.",
        },
    ),
    "trailing_whitespace": (
        {"message": "final assistant content cannot end with trailing whitespace", "type": "invalid_request_error"},
        {
            "type": "invalid_request_error",
            "message": "messages: final assistant content cannot end with trailing whitespace",
        },
    ),
}


def stream_error_event(anthropic: bool) -> bytes:
    """The event a provider sends when it fails mid-stream (then it closes the stream)."""
    if anthropic:
        return sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "error")
    error = {"message": "The server had an error while processing your request.", "type": "server_error"}
    return sse({"error": {**error, "param": None, "code": None}})


def named_error(name: str, anthropic: bool) -> bytes:
    """A provider error (`Script.error`) as that provider's 4xx body."""
    openai_error, anthropic_error = _ERRORS[name]
    if anthropic:
        return json.dumps({"type": "error", "error": anthropic_error}).encode()
    return json.dumps({"error": {"param": None, "code": None, **openai_error}}).encode()


def assistant_prefill(data: dict[str, Any]) -> str | None:
    """The text a request prefills the answer with (it ends with an assistant message), or None."""
    messages = data.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    if not isinstance(last, dict) or last.get("role") != "assistant":
        return None
    content = last.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def offered_tool_call(data: dict[str, Any]) -> ToolUse | None:
    """The call a tool-using model would make for this request (OpenAI chat, Responses or Anthropic
    tools): the first offered tool, each string argument its schema lists set to the user's last text.
    None when no tool is offered, tool_choice is "none", or the request ends with a tool's result."""
    tools = data.get("tools")
    if not isinstance(tools, list) or not tools or data.get("tool_choice") == "none" or _ends_with_tool_result(data):
        return None
    first: dict[str, Any] = tools[0] if isinstance(tools[0], dict) else {}
    nested = first.get("function")
    function: dict[str, Any] = nested if isinstance(nested, dict) else first  # chat; Responses and Anthropic
    name = function.get("name")
    if not isinstance(name, str) or not name:
        return None
    schema = function.get("parameters") or function.get("input_schema") or {}
    properties = schema.get("properties") if isinstance(schema, dict) else None
    text = last_user_text(data)
    samples: dict[str, Any] = {"string": text, "integer": 1, "number": 1, "boolean": True, "array": [], "object": {}}
    arguments: dict[str, Any] = {}
    for key, spec in properties.items() if isinstance(properties, dict) else ():
        kind = spec.get("type") if isinstance(spec, dict) else None
        arguments[str(key)] = samples.get(kind, text) if isinstance(kind, str) else text
    return ToolUse(name, arguments, id=f"call_{len(_messages(data))}")


def _messages(data: dict[str, Any]) -> list[Any]:
    items = data.get("input") if isinstance(data.get("input"), list) else data.get("messages")
    return items if isinstance(items, list) else []


def _ends_with_tool_result(data: dict[str, Any]) -> bool:
    messages = _messages(data)
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    content = last.get("content")
    return (
        last.get("role") == "tool"
        or last.get("type") == "function_call_output"
        or (isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "tool_result" for p in content))
    )


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


def _signature(text: str) -> str:
    """A stand-in for the provider's opaque signature / encrypted content: stable for the same text."""
    return base64.b64encode(hashlib.sha256(text.encode()).digest() * 2).decode()


def _token(text: str) -> dict[str, Any]:
    return {"token": text, "logprob": -0.125, "bytes": list(text.encode()), "top_logprobs": []}


# OpenAI chat completions. The chunks follow the API reference ("The chat completion chunk object")
# and real recordings: the first delta carries the role with `content: ""` (`content: null` and the
# first tool call's id and name when the model calls tools), then content / refusal / argument
# pieces, a last choice chunk with an empty delta and the finish reason, and with
# `stream_options.include_usage` a usage chunk with `choices: []` (every earlier chunk has
# `usage: null`), then `data: [DONE]`.
def chat_reply(text: str, script: Script, model: str, data: dict[str, Any]) -> tuple[list[bytes], dict[str, Any]]:
    created = 1_700_000_000
    rid = script.message_id or "chatcmpl-scripted"
    usage = {
        "prompt_tokens": script.input_tokens,
        "completion_tokens": script.output_tokens,
        "total_tokens": script.input_tokens + script.output_tokens,
        "prompt_tokens_details": {"cached_tokens": script.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": script.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    tool_calls: list[dict[str, Any]] = [
        {"id": t.id, "type": "function", "function": {"name": t.name, "arguments": json.dumps(t.arguments)}}
        for t in script.tool_calls
    ]
    refusal = script.refusal if not tool_calls else None
    answer = None if tool_calls or refusal is not None else text
    finish = "tool_calls" if tool_calls else "stop"
    message: dict[str, Any] = {"role": "assistant", "content": answer, "refusal": refusal}
    if tool_calls:
        message["tool_calls"] = tool_calls
    want_logprobs = data.get("logprobs") is True
    text_pieces = pieces(answer or "", script.chunk_size) if answer is not None else []
    refusal_pieces = pieces(refusal, script.chunk_size) if refusal is not None else []
    logprobs = None
    if want_logprobs and not tool_calls:
        logprobs = {
            "content": [_token(p) for p in text_pieces] if answer is not None else None,
            "refusal": [_token(p) for p in refusal_pieces] if refusal is not None else None,
        }
    top = {
        "id": rid,
        "created": created,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_scripted",
    }
    whole = {
        **top,
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish}],
        "usage": usage,
    }
    with_usage = (data.get("stream_options") or {}).get("include_usage") is True

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, lp: Any = None) -> bytes:
        body: dict[str, Any] = {
            **top,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish_reason}],
        }
        if with_usage:
            body["usage"] = None
        return sse(body)

    events: list[bytes] = []
    if tool_calls:
        for i, call in enumerate(tool_calls):
            head = {"index": i, "id": call["id"], "type": "function"}
            head["function"] = {"name": call["function"]["name"], "arguments": ""}
            first: dict[str, Any] = {"tool_calls": [head]}
            if i == 0:
                first = {"role": "assistant", "content": None, "refusal": None, **first}
            events.append(chunk(first))
            for piece in pieces(call["function"]["arguments"], 8):
                events.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
    elif refusal is not None:
        events.append(chunk({"role": "assistant", "content": None, "refusal": ""}))
        for piece in refusal_pieces:
            lp = {"content": None, "refusal": [_token(piece)]} if want_logprobs else None
            events.append(chunk({"refusal": piece}, lp=lp))
    else:
        first_lp: dict[str, Any] | None = {"content": [], "refusal": None} if want_logprobs else None
        events.append(chunk({"role": "assistant", "content": "", "refusal": None}, lp=first_lp))
        for piece in text_pieces:
            lp = {"content": [_token(piece)], "refusal": None} if want_logprobs else None
            events.append(chunk({"content": piece}, lp=lp))
    events.append(chunk({}, finish))
    if with_usage:
        events.append(sse({**top, "object": "chat.completion.chunk", "choices": [], "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    return events, whole


def _echo_tools(tools: Any) -> list[dict[str, Any]]:
    """The request's function tools as the Responses API echoes them in the response."""
    echoed = []
    for tool in tools if isinstance(tools, list) else []:
        if isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("name"), str):
            echoed.append(
                {
                    "type": "function",
                    "name": tool["name"],
                    "description": tool.get("description"),
                    "parameters": tool.get("parameters") or {},
                    "strict": tool.get("strict", True),
                }
            )
    return echoed


class _Events:
    """Responses stream events, each with its `event:` line and the next `sequence_number`."""

    def __init__(self) -> None:
        self.out: list[bytes] = []

    def __call__(self, kind: str, **fields: Any) -> None:
        self.out.append(sse({"type": kind, "sequence_number": len(self.out), **fields}, kind))


# OpenAI Responses. The events follow the API reference ("Streaming events") and real recordings
# (e.g. pydantic-ai's cassettes of the live API, test_openai_responses_model_web_search_tool_stream
# and ..._thinking_part): response.created, response.in_progress, then per output item
# response.output_item.added, its content (message: response.content_part.added,
# response.output_text.delta..., response.output_text.done, response.content_part.done; refusal:
# response.refusal.delta/.done; function_call: response.function_call_arguments.delta/.done;
# reasoning: response.reasoning_summary_part.added, response.reasoning_summary_text.delta/.done,
# response.reasoning_summary_part.done), response.output_item.done, and response.completed with the
# whole response. Every event has a sequence_number; a structured-output request's `text.format`
# (json_schema) is echoed in the response's `text`, the answer being the script's (JSON) text.
def responses_reply(
    text: str, script: Script, model: str, data: dict[str, Any] | None = None
) -> tuple[list[bytes], dict[str, Any]]:
    data = data or {}
    rid = script.message_id or "resp_scripted"
    usage = {
        "input_tokens": script.input_tokens,
        "input_tokens_details": {
            "cached_tokens": script.cached_tokens,
            "cache_write_tokens": script.cache_write_tokens,
        },
        "output_tokens": script.output_tokens,
        "output_tokens_details": {"reasoning_tokens": script.reasoning_tokens},
        "total_tokens": script.input_tokens + script.output_tokens,
    }
    output: list[dict[str, Any]] = []
    if script.thinking is not None:
        reasoning: dict[str, Any] = {
            "id": "rs_scripted",
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": script.thinking}],
        }
        if "reasoning.encrypted_content" in (data.get("include") or []):
            reasoning["encrypted_content"] = _signature(script.thinking)
        output.append(reasoning)
    if script.tool_calls:
        output += [
            {
                "id": f"fc_{t.id}",
                "type": "function_call",
                "status": "completed",
                "arguments": json.dumps(t.arguments),
                "call_id": t.id,
                "name": t.name,
            }
            for t in script.tool_calls
        ]
    else:
        part = (
            {"type": "refusal", "refusal": script.refusal}
            if script.refusal is not None
            else {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
        )
        output.append(
            {"id": "msg_scripted", "type": "message", "status": "completed", "content": [part], "role": "assistant"}
        )
    base = {
        "id": rid,
        "object": "response",
        "created_at": 1_700_000_000,
        "status": "completed",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": data.get("instructions"),
        "max_output_tokens": data.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": data.get("parallel_tool_calls", True),
        "previous_response_id": data.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": data.get("store", True),
        "temperature": 1.0,
        "text": data.get("text") or {"format": {"type": "text"}},
        "tool_choice": data.get("tool_choice") or "auto",
        "tools": _echo_tools(data.get("tools")),
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }
    in_progress = {**base, "status": "in_progress", "output": [], "usage": None}
    ev = _Events()
    ev("response.created", response=in_progress)
    ev("response.in_progress", response=in_progress)
    for index, item in enumerate(output):
        at = {"item_id": item["id"], "output_index": index}
        if item["type"] == "reasoning":
            ev("response.output_item.added", output_index=index, item={**item, "summary": []})
            summary = item["summary"][0]
            ev("response.reasoning_summary_part.added", **at, summary_index=0, part={**summary, "text": ""})
            for piece in pieces(summary["text"], script.chunk_size):
                ev("response.reasoning_summary_text.delta", **at, summary_index=0, delta=piece)
            ev("response.reasoning_summary_text.done", **at, summary_index=0, text=summary["text"])
            ev("response.reasoning_summary_part.done", **at, summary_index=0, part=summary)
        elif item["type"] == "function_call":
            ev(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "arguments": ""},
            )
            for piece in pieces(item["arguments"], 8):
                ev("response.function_call_arguments.delta", **at, delta=piece)
            ev("response.function_call_arguments.done", **at, name=item["name"], arguments=item["arguments"])
        else:
            ev("response.output_item.added", output_index=index, item={**item, "status": "in_progress", "content": []})
            part = item["content"][0]
            at = {**at, "content_index": 0}
            if part["type"] == "refusal":
                ev("response.content_part.added", **at, part={**part, "refusal": ""})
                for piece in pieces(part["refusal"], script.chunk_size):
                    ev("response.refusal.delta", **at, delta=piece)
                ev("response.refusal.done", **at, refusal=part["refusal"])
            else:
                ev("response.content_part.added", **at, part={**part, "text": ""})
                for piece in pieces(part["text"], script.chunk_size):
                    ev("response.output_text.delta", **at, delta=piece, logprobs=[])
                ev("response.output_text.done", **at, text=part["text"], logprobs=[])
            ev("response.content_part.done", **at, part=part)
        ev("response.output_item.done", output_index=index, item=item)
    ev("response.completed", response=base)
    return ev.out, base


# Anthropic messages. The events follow the API reference ("Streaming messages", including
# "Streaming request with extended thinking" and "Streaming request with tool use") and real
# recordings: message_start (the message without content, usage so far), per block
# content_block_start (empty: `thinking` with `signature: ""`, `text`, `tool_use` with `input: {}`),
# its deltas (thinking_delta... then one signature_delta; text_delta; input_json_delta, the first
# one empty), content_block_stop; message_delta (stop_reason, final output_tokens), message_stop.
def anthropic_reply(text: str, script: Script, model: str) -> tuple[list[bytes], dict[str, Any]]:
    mid = script.message_id or "msg_scripted"
    content: list[dict[str, Any]] = []
    if script.thinking is not None:
        content.append({"type": "thinking", "thinking": script.thinking, "signature": _signature(script.thinking)})
    if script.tool_calls:
        content += [
            {"type": "tool_use", "id": f"toolu_{t.id}", "name": t.name, "input": t.arguments} for t in script.tool_calls
        ]
    else:
        content.append({"type": "text", "text": text})
    stop = "tool_use" if script.tool_calls else "end_turn"
    usage = {
        "input_tokens": script.input_tokens,
        "cache_creation_input_tokens": script.cache_write_tokens,
        "cache_read_input_tokens": script.cached_tokens,
        "output_tokens": script.output_tokens,
        "service_tier": "standard",
    }
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
    start = {**whole, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events = [sse({"type": "message_start", "message": start}, "message_start")]

    def event(kind: str, **fields: Any) -> None:
        events.append(sse({"type": kind, **fields}, kind))

    for i, block in enumerate(content):
        if block["type"] == "thinking":
            event("content_block_start", index=i, content_block={"type": "thinking", "thinking": "", "signature": ""})
            for piece in pieces(block["thinking"], script.chunk_size):
                event("content_block_delta", index=i, delta={"type": "thinking_delta", "thinking": piece})
            event("content_block_delta", index=i, delta={"type": "signature_delta", "signature": block["signature"]})
        elif block["type"] == "text":
            event("content_block_start", index=i, content_block={"type": "text", "text": ""})
            for piece in pieces(block["text"], script.chunk_size):
                event("content_block_delta", index=i, delta={"type": "text_delta", "text": piece})
        else:
            event("content_block_start", index=i, content_block={**block, "input": {}})
            for piece in ["", *pieces(json.dumps(block["input"]), 8)]:
                event("content_block_delta", index=i, delta={"type": "input_json_delta", "partial_json": piece})
        event("content_block_stop", index=i)
    event(
        "message_delta",
        delta={"stop_reason": stop, "stop_sequence": None},
        usage={"output_tokens": script.output_tokens},
    )
    event("message_stop")
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
