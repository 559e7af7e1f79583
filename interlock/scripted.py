"""A scripted model provider that speaks the real OpenAI and Anthropic wire formats, SSE included.

Used by the test suite, `bench/` and `interlock demo` in place of a real provider (there is none
offline). Replies are scripted per request, with fault modes: error statuses, `Retry-After`, slow
heads and first bytes, and connections reset before or in the middle of a stream.

    upstream = ScriptedUpstream().start()          # serves on 127.0.0.1:<free port> in a thread
    upstream.script(Script(status=429, retry_after="1"), Script(text="hello"))
    ... point interlock's route at upstream.url + "/v1" ...
    upstream.requests[-1].json()                   # what the provider received
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn


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
    reset_after: int | None = None  # reset after this many body chunks (0: before any; a stream sends its head first)
    input_tokens: int = 11
    output_tokens: int = 7
    model: str | None = None


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


class _Reset(Exception):
    pass


def _last_user_text(data: dict[str, Any]) -> str:
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


class ScriptedUpstream:
    """The fake provider. Thread-safe: script from the test thread, serve from its own loop."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        # Bound now, served later: the port cannot be taken by anyone else in between.
        self._socket = socket.socket()
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.port = int(self._socket.getsockname()[1])
        self.requests: list[Received] = []
        self._scripts: deque[Script] = deque()
        self._default = Script()
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.disconnects = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- scripting ----------------------------------------------------------------------------

    def script(self, *scripts: Script) -> ScriptedUpstream:
        """Answer the next requests with these scripts, in order; then the default."""
        with self._lock:
            self._scripts.extend(scripts)
        return self

    def set_default(self, script: Script) -> None:
        with self._lock:
            self._default = script

    def reset(self) -> None:
        with self._lock:
            self._scripts.clear()
            self._default = Script()
            self.requests.clear()
            self.disconnects = 0

    def _next(self) -> Script:
        with self._lock:
            return self._scripts.popleft() if self._scripts else self._default

    # -- serving ------------------------------------------------------------------------------

    def start(self) -> ScriptedUpstream:
        config = uvicorn.Config(
            self,
            host=self.host,
            port=self.port,
            log_level="error",
            lifespan="off",
            access_log=False,
            loop="asyncio",
            http="h11",
            timeout_keep_alive=30,
        )
        self._server = _QuietServer(config)
        self._thread = threading.Thread(target=self._run, name="scripted-upstream", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the scripted upstream did not start")
            time.sleep(0.005)
        return self

    def _run(self) -> None:
        assert self._server is not None
        asyncio.run(self._server.serve(sockets=[self._socket]))

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> ScriptedUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def serve_forever(self) -> None:
        """Serve on the current event loop (for `interlock demo` and bench)."""
        config = uvicorn.Config(
            self,
            host=self.host,
            port=self.port,
            log_level="error",
            lifespan="off",
            access_log=False,
            timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(config)
        await self._server.serve(sockets=[self._socket])

    # -- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        received = Received(scope["method"], scope["path"], scope["query_string"].decode(), headers, body, time.time())
        with self._lock:
            self.requests.append(received)
        script = self._next()
        if script.delay:
            await asyncio.sleep(script.delay)
        try:
            data = json.loads(body) if body else {}
        except json.JSONDecodeError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        if script.reset_after == 0 and script.status == 200 and data.get("stream") is not True:
            raise _Reset("scripted reset before the response")
        watcher = asyncio.create_task(self._watch_disconnect(receive))
        try:
            await self._respond(scope["path"], data, script, send)
        finally:
            watcher.cancel()

    async def _watch_disconnect(self, receive: Any) -> None:
        # Counts clients that left before their response was complete (e.g. interlock cancelling).
        message = await receive()
        if message["type"] == "http.disconnect":
            with self._lock:
                self.disconnects += 1

    async def _respond(self, path: str, data: dict[str, Any], script: Script, send: Any) -> None:
        extra = [(k.lower().encode(), v.encode()) for k, v in script.headers.items()]
        if script.retry_after is not None:
            extra.append((b"retry-after", script.retry_after.encode()))
        anthropic = path.endswith("/messages")
        if script.status >= 400 or script.body is not None:
            body = script.body if script.body is not None else _error_body(script.status, anthropic)
            await send(
                {
                    "type": "http.response.start",
                    "status": script.status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        *extra,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        model = script.model or str(data.get("model") or "scripted-model")
        text = script.text if script.text is not None else f"echo: {_last_user_text(data)}"
        if path.endswith("/embeddings"):
            events: list[bytes] = []
            whole = _embeddings(data, model)
        elif anthropic:
            events, whole = _anthropic(text, script, model)
        elif path.endswith("/responses"):
            events, whole = _responses(text, script, model)
        else:
            events, whole = _chat(text, script, model, data)
        if data.get("stream") is True and events:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"),
                        *extra,
                    ],
                }
            )
            if script.first_byte_delay:
                await asyncio.sleep(script.first_byte_delay)
            for i, event in enumerate(events):
                if script.reset_after is not None and i >= script.reset_after:
                    raise _Reset("scripted reset mid-stream")
                if i and script.chunk_delay:
                    await asyncio.sleep(script.chunk_delay)
                await send({"type": "http.response.body", "body": event, "more_body": True})
            if script.end_delay:
                await asyncio.sleep(script.end_delay)
            await send({"type": "http.response.body", "body": b""})
            return
        body = json.dumps(whole).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *extra,
                ],
            }
        )
        if script.first_byte_delay:
            await asyncio.sleep(script.first_byte_delay)
        if script.reset_after is not None:
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
            raise _Reset("scripted reset mid-body")
        await send({"type": "http.response.body", "body": body})


class _QuietServer(uvicorn.Server):
    # Runs in a thread: leave signals to the main thread.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(data).encode() + b"\n\n"


def _error_body(status: int, anthropic: bool) -> bytes:
    message = f"scripted error {status}"
    if anthropic:
        kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
        return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()
    return json.dumps({"error": {"message": message, "type": "server_error", "param": None, "code": None}}).encode()


def _chat(text: str, script: Script, model: str, data: dict[str, Any]) -> tuple[list[bytes], dict[str, Any]]:
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
        return _sse(
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
            for piece in _pieces(call["function"]["arguments"], 8):
                events.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
    else:
        events += [chunk({"content": piece}) for piece in _pieces(text, script.chunk_size)]
    events.append(chunk({}, finish))
    if (data.get("stream_options") or {}).get("include_usage"):
        events.append(
            _sse(
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


def _responses(text: str, script: Script, model: str) -> tuple[list[bytes], dict[str, Any]]:
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
    events = [_sse({"type": "response.created", "sequence_number": 0, "response": in_progress}, "response.created")]
    seq = 1
    if not script.tool_calls:
        item = {**output[0], "status": "in_progress", "content": []}
        events.append(
            _sse(
                {"type": "response.output_item.added", "sequence_number": seq, "output_index": 0, "item": item},
                "response.output_item.added",
            )
        )
        seq += 1
        part = {"type": "output_text", "text": "", "annotations": []}
        events.append(
            _sse(
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
        for piece in _pieces(text, script.chunk_size):
            events.append(
                _sse(
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
            _sse(
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
            _sse(
                {"type": "response.output_item.done", "sequence_number": seq, "output_index": 0, "item": output[0]},
                "response.output_item.done",
            )
        )
        seq += 1
    events.append(_sse({"type": "response.completed", "sequence_number": seq, "response": base}, "response.completed"))
    return events, base


def _anthropic(text: str, script: Script, model: str) -> tuple[list[bytes], dict[str, Any]]:
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
    events = [_sse({"type": "message_start", "message": start}, "message_start")]
    for i, block in enumerate(content):
        if block["type"] == "text":
            events.append(
                _sse(
                    {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}},
                    "content_block_start",
                )
            )
            for piece in _pieces(block["text"], script.chunk_size):
                events.append(
                    _sse(
                        {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": piece}},
                        "content_block_delta",
                    )
                )
        else:
            events.append(
                _sse(
                    {"type": "content_block_start", "index": i, "content_block": {**block, "input": {}}},
                    "content_block_start",
                )
            )
            for piece in _pieces(json.dumps(block["input"]), 8):
                events.append(
                    _sse(
                        {
                            "type": "content_block_delta",
                            "index": i,
                            "delta": {"type": "input_json_delta", "partial_json": piece},
                        },
                        "content_block_delta",
                    )
                )
        events.append(_sse({"type": "content_block_stop", "index": i}, "content_block_stop"))
    events.append(
        _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": script.output_tokens},
            },
            "message_delta",
        )
    )
    events.append(_sse({"type": "message_stop"}, "message_stop"))
    return events, whole


def _embeddings(data: dict[str, Any], model: str) -> dict[str, Any]:
    items = data.get("input")
    count = len(items) if isinstance(items, list) else 1
    return {
        "object": "list",
        "model": model,
        "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(count)],
        "usage": {"prompt_tokens": 3 * count, "total_tokens": 3 * count},
    }


__all__ = ["ScriptedUpstream", "Script", "ToolUse", "Received"]
