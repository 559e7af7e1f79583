"""What the scripted provider answers on the Gemini API: generateContent, streamGenerateContent (SSE
with `alt=sse`, the JSON array without), countTokens, embedContent and batchEmbedContents, and errors
in Google's shape. From the API reference (ai.google.dev/api) and google-genai's stream reader
(`_api_client.py`: `data: ` lines, events ended by a blank line; Google ends them with `\\r\\n\\r\\n`)."""

from __future__ import annotations

import asyncio
import json
import re
from functools import partial
from typing import Any

from interlock.scripted.replies import Script, pieces
from interlock.scripted.wire import Exchange, ScriptedFormat, extra_headers, opening, register, send_json, send_stream

#: `/v1beta/models/gemini-2.0-flash:generateContent`: the model and the method.
GEMINI_PATH = re.compile(r"/(?:tuned)?[mM]odels/([^/:]+):([A-Za-z]+)$")

_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}
_STATUS.update({429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"})
_MESSAGES = {
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
}
_NAMED = {
    "context_length_exceeded": "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
    "content_filter": "The request was blocked by safety settings.",
    "prefill": "Please ensure that the conversation ends with a user turn.",
    "trailing_whitespace": "Please ensure that the conversation ends with a user turn.",
}


def gemini_error(status: int, message: str | None = None) -> bytes:
    """A Google API error body: {"error": {"code", "message", "status"}}."""
    text = message or _MESSAGES.get(status, f"scripted error {status}")
    return json.dumps({"error": {"code": status, "message": text, "status": _STATUS.get(status, "UNKNOWN")}}).encode()


def gemini_named_error(name: str) -> bytes:
    return gemini_error(400, _NAMED.get(name, name))


def gemini_stream_error(sse: bool = True, first: bool = False) -> bytes:
    """What Gemini sends when it fails mid-stream (then it closes the stream): an event holding the
    error object, or in the JSON array its last element, then the array's end."""
    if sse:
        return b"data: " + gemini_error(503) + b"\r\n\r\n"
    return (b"[" if first else b"\n,\r\n") + gemini_error(503) + b"\n]"


def last_user_text(data: dict[str, Any]) -> str:
    for content in reversed(data.get("contents") or []):
        if isinstance(content, dict) and content.get("role", "user") == "user":
            texts = [
                p["text"] for p in content.get("parts") or [] if isinstance(p, dict) and isinstance(p.get("text"), str)
            ]
            if texts:
                return "\n".join(texts)
    return ""


def _usage(script: Script, output: int | None = None) -> dict[str, Any]:
    out = script.output_tokens if output is None else output
    usage: dict[str, Any] = {
        "promptTokenCount": script.input_tokens,
        "candidatesTokenCount": out,
        "totalTokenCount": script.input_tokens + out + script.reasoning_tokens,
    }
    if script.cached_tokens:
        usage["cachedContentTokenCount"] = script.cached_tokens
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": script.input_tokens}]
    if script.reasoning_tokens:
        usage["thoughtsTokenCount"] = script.reasoning_tokens
    return usage


def _response(parts: list[dict[str, Any]], model: str, rid: str, usage: dict[str, Any], finish: bool) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
    if finish:
        candidate["finishReason"] = "STOP"
    candidate["index"] = 0
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model, "responseId": rid}


def gemini_reply(text: str, script: Script, model: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A generateContent answer: the stream's responses (text in `chunk_size` pieces, function calls
    whole, the finish reason and full usage on the last) and the non-streamed response."""
    rid = script.message_id or "scripted-gemini-response"
    calls = [{"functionCall": {"name": t.name, "args": t.arguments}} for t in script.tool_calls]
    thought = [{"text": script.thinking, "thought": True}] if script.thinking is not None else []
    answer = [{"text": text}] if text and not calls else []
    whole = _response([*thought, *answer, *calls], model, rid, _usage(script), True)
    chunks: list[list[dict[str, Any]]] = [[part] for part in thought]
    chunks += [[{"text": piece}] for piece in (pieces(text, script.chunk_size) if answer else [])]
    if calls:
        chunks.append(calls)
    # Each chunk carries the usage so far; the last one the finish reason and the whole usage.
    running = {"promptTokenCount": script.input_tokens, "totalTokenCount": script.input_tokens}
    events = [
        _response(parts, model, rid, _usage(script) if i == len(chunks) - 1 else running, i == len(chunks) - 1)
        for i, parts in enumerate(chunks)
    ]
    return events, whole


def frame(events: list[dict[str, Any]], sse: bool) -> list[bytes]:
    """The stream's bytes, one item an event: `data: ...\\r\\n\\r\\n`, or the JSON array's elements
    (pretty-printed and separated as Google writes them)."""
    if sse:
        return [b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events]
    out = [(b"[" if i == 0 else b"\n,\r\n") + json.dumps(e, indent=2).encode() for i, e in enumerate(events)]
    return [*out, b"\n]"]


def other_reply(method: str, data: dict[str, Any], script: Script) -> dict[str, Any]:
    """countTokens, embedContent and batchEmbedContents answers."""
    if method == "countTokens":
        return {
            "totalTokens": script.input_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": script.input_tokens}],
        }
    vector = {"values": [0.0125, -0.0311, 0.0207, 0.0042]}
    if method == "batchEmbedContents":
        return {"embeddings": [vector for _ in data.get("requests") or []]}
    return {"embedding": vector}


async def answer(exchange: Exchange) -> None:
    """The Gemini API: the model and the method are the URL's; a stream is asked for by the method
    (`alt=sse` for SSE, else a JSON array sent in pieces)."""
    found = GEMINI_PATH.search(exchange.received.path)
    assert found is not None  # `matches` chose this format
    model, method = found.group(1), found.group(2)
    data, send = exchange.data, exchange.send
    script = exchange.upstream.next_script(model)
    script = await opening(script, data.get("stream") is True)
    if script.status >= 400 or script.body is not None:
        if script.body is not None:
            body = script.body
        else:
            body = gemini_named_error(script.error) if script.error else gemini_error(script.status)
        await send_json(send, script.status, body, extra_headers(script))
        return
    model = script.model or model
    if method not in ("generateContent", "streamGenerateContent"):
        await send_json(send, 200, json.dumps(other_reply(method, data, script)).encode(), extra_headers(script))
        return
    text = script.text if script.text is not None else f"echo: {last_user_text(data)}"
    events, whole = gemini_reply(text, script, model)
    if method == "generateContent":
        await send_json(send, 200, json.dumps(whole).encode(), extra_headers(script))
        return
    sse = "alt=sse" in exchange.received.query
    async with exchange.upstream.watching(exchange.receive) as gone:
        content_type = b"text/event-stream" if sse else b"application/json; charset=UTF-8"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]})
        if script.first_byte_delay:
            await asyncio.sleep(script.first_byte_delay)
        # The error goes out in place of chunk `error_event_after`: the array's first element at 0.
        error = partial(gemini_stream_error, sse, script.error_event_after == 0)
        await send_stream(send, script, frame(events, sse), gone, error)


register(ScriptedFormat("gemini", lambda path: GEMINI_PATH.search(path) is not None, answer))
