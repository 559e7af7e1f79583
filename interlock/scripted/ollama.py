"""What the scripted provider answers on Ollama's native API: `/api/chat` and `/api/generate` (NDJSON
streams unless the body says `"stream": false`), `/api/embed`, `/api/embeddings`, `/api/tags` and
`/api/pull`'s progress stream, and errors as `{"error": "..."}` with a status.

From the API reference (ollama/ollama `docs/api.md`: the chunks, the last one's `done`,
`done_reason` and counts; tool calls whole in one chunk, their arguments an object) and the server
(`server/routes.go`): a stream is `application/x-ndjson`, each object `json.Marshal`ed and ended by a
newline; a failure mid-stream is an `{"error": ...}` line, then the end. Go's encoder writes compact
JSON and escapes `<`, `>` and `&` as `\\u003c`, `\\u003e`, `\\u0026` (so a redaction placeholder
arrives escaped, as from the real server): `go_json` does the same.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

from interlock.scripted.replies import Script, last_user_text, offered_tool_call, pieces
from interlock.scripted.wire import Exchange, ScriptedFormat, extra_headers, opening, register, send_json, send_stream

_STREAMED = ("/api/chat", "/api/generate")
_MESSAGES = {
    429: "too many requests",
    500: "llama runner process has terminated: exit status 2",
    503: "server busy, please try again.  maximum pending requests exceeded",
}
_NAMED = {
    "context_length_exceeded": "the input length exceeds the context length",
    "content_filter": "the request was refused",
    "prefill": "this model does not support continuing a final assistant message",
    "trailing_whitespace": "this model does not support continuing a final assistant message",
}
#: The durations (nanoseconds) every answer reports: made up, but of the real shape.
_METRICS = {"total_duration": 4_883_583_458, "load_duration": 1_334_875}
_CREATED = "2026-12-06T09:00:00.{:06d}Z"


def go_json(data: Any) -> bytes:
    """JSON as Go's `json.Marshal` writes it: compact, UTF-8, `<`, `>` and `&` escaped."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def ollama_error(status: int, message: str | None = None) -> bytes:
    return go_json({"error": message or _MESSAGES.get(status, f"scripted error {status}")})


def _counts(script: Script) -> dict[str, Any]:
    return {
        **_METRICS,
        "prompt_eval_count": script.input_tokens,
        "prompt_eval_duration": 342_546_000,
        "eval_count": script.output_tokens,
        "eval_duration": 4_535_599_000,
    }


def chat_reply(text: str, script: Script, model: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`/api/chat`'s answer: the stream's chunks (thinking, then text in `chunk_size` pieces, tool calls
    whole in one chunk, the last chunk `done` with the counts) and the non-streamed object."""
    calls = [{"function": {"name": t.name, "arguments": t.arguments}} for t in script.tool_calls]
    message: dict[str, Any] = {"role": "assistant", "content": "" if calls else text}
    if script.thinking is not None:
        message["thinking"] = script.thinking
    if calls:
        message["tool_calls"] = calls
    parts: list[dict[str, Any]] = []
    if script.thinking is not None:
        parts += [
            {"role": "assistant", "content": "", "thinking": p} for p in pieces(script.thinking, script.chunk_size)
        ]
    if not calls:
        parts += [{"role": "assistant", "content": p} for p in pieces(text, script.chunk_size)]
    else:
        parts.append({"role": "assistant", "content": "", "tool_calls": calls})
    chunks = [
        {"model": model, "created_at": _CREATED.format(i), "message": part, "done": False}
        for i, part in enumerate(parts)
    ]
    last = {"model": model, "created_at": _CREATED.format(len(parts))}
    end = {"done_reason": "stop", "done": True, **_counts(script)}
    chunks.append({**last, "message": {"role": "assistant", "content": ""}, **end})
    return chunks, {**last, "message": message, **end}


def generate_reply(text: str, script: Script, model: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`/api/generate`'s answer: `response` pieces, the last chunk `done` with the counts and `context`."""
    chunks: list[dict[str, Any]] = []
    if script.thinking is not None:
        chunks += [{"response": "", "thinking": p} for p in pieces(script.thinking, script.chunk_size)]
    chunks += [{"response": p} for p in pieces(text, script.chunk_size)]
    stamped = [
        {"model": model, "created_at": _CREATED.format(i), **chunk, "done": False} for i, chunk in enumerate(chunks)
    ]
    last = {"model": model, "created_at": _CREATED.format(len(chunks))}
    end = {"done": True, "done_reason": "stop", "context": [1, 2, 3], **_counts(script)}
    whole: dict[str, Any] = {**last, "response": text}
    if script.thinking is not None:
        whole["thinking"] = script.thinking
    stamped.append({**last, "response": "", **end})
    return stamped, {**whole, **end}


def other_reply(path: str, data: dict[str, Any], script: Script, model: str) -> dict[str, Any] | None:
    """The answers that are not generations (None: a path this format does not know)."""
    vector = [0.010071029, -0.0017594862, 0.05007221, 0.04692972]
    if path == "/api/embed":
        inputs = data.get("input")
        count = len(inputs) if isinstance(inputs, list) else 1
        return {"model": model, "embeddings": [vector] * count, **_METRICS, "prompt_eval_count": script.input_tokens}
    if path == "/api/embeddings":
        return {"embedding": vector}
    if path == "/api/tags":
        details = {"format": "gguf", "family": "llama", "parameter_size": "3.2B", "quantization_level": "Q4_K_M"}
        entry = {"modified_at": "2026-11-04T14:56:49.277302595-07:00", "size": 2019393189, "details": details}
        return {"models": [{"name": "llama3.2:latest", "model": "llama3.2:latest", **entry}]}
    return None


async def answer(exchange: Exchange) -> None:
    """Ollama's API: the model in the body; a generation streams unless `"stream": false`."""
    path, data, send = exchange.received.path, exchange.data, exchange.send
    script = exchange.upstream.next_script(data.get("model"))
    streamed = path in _STREAMED and data.get("stream") is not False
    script = await opening(script, streamed)
    if script.status >= 400 or script.body is not None:
        if script.body is not None:
            body = script.body
        else:
            body = ollama_error(script.status, _NAMED.get(script.error or "", script.error))
        await send_json(send, script.status, body, extra_headers(script))
        return
    model = script.model or str(data.get("model") or "llama3.2")
    if path == "/api/pull":
        progress = [{"status": "pulling manifest"}, {"status": "verifying sha256 digest"}, {"status": "success"}]
        await _stream(exchange, script, [go_json(p) + b"\n" for p in progress])
        return
    if path not in _STREAMED:
        reply = other_reply(path, data, script, model)
        if reply is None:
            await send_json(send, 404, b"404 page not found", extra_headers(script))
        else:
            await send_json(send, 200, go_json(reply), extra_headers(script))
        return
    empty = not data.get("messages") if path == "/api/chat" else not data.get("prompt")
    if empty:  # the server loads the model (unloads it with `keep_alive: 0`): one JSON object, streamed or not
        reason = "unload" if data.get("keep_alive") in (0, "0") else "load"
        loaded: dict[str, Any] = {"model": model, "created_at": _CREATED.format(0)}
        if path == "/api/chat":
            loaded["message"] = {"role": "assistant", "content": ""}
        else:
            loaded["response"] = ""
        await send_json(send, 200, go_json({**loaded, "done_reason": reason, "done": True}), extra_headers(script))
        return
    if script.use_tools and not script.tool_calls and script.text is None:
        call = offered_tool_call(data)
        if call is not None:
            script = dataclasses.replace(script, tool_calls=[call])
    if path == "/api/chat":
        text = script.text if script.text is not None else f"echo: {last_user_text(data)}"
        chunks, whole = chat_reply(text, script, model)
    else:
        prompt = data.get("prompt")
        text = script.text if script.text is not None else f"echo: {prompt if isinstance(prompt, str) else ''}"
        chunks, whole = generate_reply(text, script, model)
    if not streamed:
        await send_json(send, 200, go_json(whole), extra_headers(script))
        return
    await _stream(exchange, script, [go_json(chunk) + b"\n" for chunk in chunks])


async def _stream(exchange: Exchange, script: Script, lines: list[bytes]) -> None:
    async with exchange.upstream.watching(exchange.receive) as gone:
        head = [(b"content-type", b"application/x-ndjson"), *extra_headers(script)]
        await exchange.send({"type": "http.response.start", "status": 200, "headers": head})
        if script.first_byte_delay:
            await asyncio.sleep(script.first_byte_delay)
        failure = go_json({"error": "an error was encountered while running the model: unexpected EOF"}) + b"\n"
        await send_stream(exchange.send, script, lines, gone, lambda: failure)


register(ScriptedFormat("ollama", lambda path: path.startswith("/api/"), answer))
