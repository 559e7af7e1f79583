"""What every scripted answer is made of: the `Script` (how to answer one request), what a request
asks for (its last user text, an assistant prefill, the tool a tool-using model would call), the
providers' error bodies and events, and the SSE framing. The OpenAI and Anthropic answers built
from them: `openai_replies.py` and `anthropic_replies.py`; the other formats' in their own modules."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
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
    #: OpenAI and Anthropic formats: no answer until the test sets this (or the client leaves, then
    #: none at all): a call held upstream for as long as a test needs, whatever the machine's load.
    hold: threading.Event | None = None
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


def signature(text: str) -> str:
    """A stand-in for the provider's opaque signature / encrypted content: stable for the same text."""
    return base64.b64encode(hashlib.sha256(text.encode()).digest() * 2).decode()
