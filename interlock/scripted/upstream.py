"""A scripted model provider that speaks the real OpenAI and Anthropic wire formats, SSE included.

Used by the test suite, `bench/` and `interlock demo` in place of a real provider (there is none
offline). Replies are scripted per request, with fault modes (issue 21's list): error statuses
(a 429 with `Retry-After` then success, a 500 once: a queue of scripts), a model's outage on one
upstream (`set_model`), named provider errors (`error="context_length_exceeded"`), slow heads and
first bytes, connections reset before or in the middle of a stream (`reset_after`), a stream that
stalls (`stall_after`), a provider's mid-stream error event (`error_event_after`), and a model that rejects an assistant prefill (`prefill="reject"`; by
default a prefill is continued, as Anthropic does).

    upstream = ScriptedUpstream().start()          # serves on 127.0.0.1:<free port> in a thread
    upstream.script(Script(status=429, retry_after="1"), Script(text="hello"))
    ... point interlock's route at upstream.url + "/v1" ...
    upstream.requests[-1].json()                   # what the provider received

The replies (`openai_replies.py`, `anthropic_replies.py`) follow the providers' API references and real recordings, event
for event, streamed and not: chat completions (tool calls, refusal, logprobs, the usage chunk),
Responses (every event with its sequence_number: message, function_call, reasoning items,
structured output's `text.format` echoed) and Anthropic messages (thinking with its signature,
tool use). The SDKs' own stream accumulators turn each stream into exactly the non-streamed answer
(tests/proxy/test_scripted.py). `Script(encoding="gzip" | "br" | ...)` compresses the answer when
the request's Accept-Encoding lists the coding, as the real APIs do.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import json
import threading
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import brotli
import uvicorn

from interlock.scripted.anthropic_replies import anthropic_reply
from interlock.scripted.openai_replies import chat_reply, embeddings_reply, responses_reply
from interlock.scripted.replies import (
    Script,
    ToolUse,
    assistant_prefill,
    error_body,
    last_user_text,
    named_error,
    offered_tool_call,
    stream_error_event,
    with_keepalives,
)
from interlock.scripted.wire import (
    Exchange,
    OpenAIDialect,
    Received,
    Reset,
    extra_headers,
    format_for,
    send_json,
    send_stream,
)
from interlock.serving import QuietServer, bind_socket

if TYPE_CHECKING:
    from interlock.scripted.bedrock import AwsCredentials


class Encoder:
    """Compresses a body in one content-encoding, event by event: each chunk is flushed, so a
    client can decode every SSE event as it arrives (as the real APIs' gzip streams do)."""

    KNOWN = ("gzip", "deflate", "br", "zstd")

    def __init__(self, name: str) -> None:
        self.name = name
        self._compress: Any = None
        self._flush: Any = None
        self._end: Any = None
        if name in ("gzip", "deflate"):
            z = zlib.compressobj(wbits=31 if name == "gzip" else 15)
            self._compress, self._flush, self._end = z.compress, lambda: z.flush(zlib.Z_SYNC_FLUSH), z.flush
        elif name == "br":
            b = brotli.Compressor()
            self._compress, self._flush, self._end = b.process, b.flush, b.finish
        elif name == "zstd":
            # Imported on the first zstd body: ~11 ms of every start otherwise (measured, shared load).
            import zstandard

            zc = zstandard.ZstdCompressor().compressobj()
            self._compress = zc.compress
            self._flush = lambda: zc.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
            self._end = zc.flush

    @classmethod
    def negotiate(cls, wanted: str | None, accept: str) -> Encoder | None:
        """The encoder for a script's `encoding`: a known one only when the client accepts it; an
        unknown name always (a label over the plain body)."""
        if not wanted:
            return None
        if wanted not in cls.KNOWN:
            return cls(wanted)
        accepted = {token.split(";")[0].strip().lower() for token in accept.split(",")}
        return cls(wanted) if wanted in accepted else None

    def chunk(self, data: bytes) -> bytes:
        if self._compress is None:
            return data
        return bytes(self._compress(data) + self._flush())

    def end(self) -> bytes:
        return b"" if self._end is None else bytes(self._end())


#: The Accept-Encoding of the request being answered (each request is served in its own task).
_accept_encoding: contextvars.ContextVar[str] = contextvars.ContextVar("accept_encoding", default="")


class ScriptedUpstream:
    """The fake provider. Thread-safe: script from the test thread, serve from its own loop."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        # Bound now, served later: the port cannot be taken by anyone else in between.
        self._socket = bind_socket(host, port)
        self.port = int(self._socket.getsockname()[1])
        self.requests: list[Received] = []
        self._scripts: deque[Script] = deque()
        self._default = Script()
        #: Per requested model: answer every request for it with this script (a model's outage).
        self._models: dict[str, Script] = {}
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.disconnects = 0
        #: Bedrock requests must carry a SigV4 signature made with these (None: not checked).
        self.aws_credentials: AwsCredentials | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- scripting ----------------------------------------------------------------------------

    def script(self, *scripts: Script) -> ScriptedUpstream:
        """Answer the next requests with these scripts, in order; then the default."""
        with self._lock:
            self._scripts.extend(scripts)
        return self

    def drop_queued(self) -> int:
        """Forget the scripts not yet answered; how many there were."""
        with self._lock:
            left = len(self._scripts)
            self._scripts.clear()
            return left

    def set_default(self, script: Script) -> None:
        with self._lock:
            self._default = script

    def set_model(self, model: str, script: Script | None) -> None:
        """Answer every request for `model` with `script` (None: back to the queue and default), ahead
        of the scripted queue: one model of this upstream down while its others answer (issue 21)."""
        with self._lock:
            if script is None:
                self._models.pop(model, None)
            else:
                self._models[model] = script

    def reset(self) -> None:
        with self._lock:
            self._scripts.clear()
            self._models.clear()
            self._default = Script()
            self.requests.clear()
            self.disconnects = 0
            self.aws_credentials = None

    def next_script(self, model: Any = None) -> Script:
        """The script that answers a request for `model`: its outage (`set_model`), else the queue's next."""
        with self._lock:
            if isinstance(model, str) and model in self._models:
                return self._models[model]
            return self._scripts.popleft() if self._scripts else self._default

    # -- serving ------------------------------------------------------------------------------

    def _config(self, **options: Any) -> uvicorn.Config:
        return uvicorn.Config(
            self,
            host=self.host,
            port=self.port,
            log_level="error",
            lifespan="off",
            access_log=False,
            timeout_keep_alive=30,
            **options,
        )

    def start(self) -> ScriptedUpstream:
        """Serve in a thread of its own (tests), on plain asyncio and h11."""
        self._server = QuietServer(self._config(loop="asyncio", http="h11"))
        self._thread = threading.Thread(target=self._run, name="scripted-upstream", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 60  # a bound for a loaded machine, not a pace
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
        self._server = uvicorn.Server(self._config())
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
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        received = Received(
            scope["method"], scope["path"], scope["query_string"].decode(), headers, body, time.time(), raw_path
        )
        with self._lock:
            self.requests.append(received)
        try:
            data = json.loads(body) if body else {}
        except json.JSONDecodeError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        exchange = Exchange(self, received, data, receive, send)
        scripted_format = format_for(received.path)
        if scripted_format is not None:
            await scripted_format.answer(exchange)
        else:
            await self.answer_openai(exchange)

    async def answer_openai(self, exchange: Exchange, dialect: OpenAIDialect | None = None) -> None:
        """The OpenAI and Anthropic formats (the default): chat completions, Responses, embeddings,
        Anthropic messages and their token count; `dialect`: an OpenAI-compatible provider's differences (Azure)."""
        data = exchange.data
        script = self.next_script(data.get("model"))
        if script.delay:
            await asyncio.sleep(script.delay)
        if script.hold is not None and not await self._held(script.hold, exchange.receive):
            return  # the client left while held: nobody to answer
        if script.reset_after == 0 and script.status == 200 and data.get("stream") is not True:
            raise Reset("scripted reset before the response")
        async with self.watching(exchange.receive) as gone:
            _accept_encoding.set(exchange.received.headers.get("accept-encoding", ""))
            await self._respond(exchange.received.path, data, script, exchange.send, gone, dialect)

    async def _held(self, hold: threading.Event, receive: Any) -> bool:
        """Wait until the test sets `hold` (True) or the client leaves (False). The event is set from
        the test's thread, so it is polled here rather than awaited across threads."""
        async with self.watching(receive) as gone:
            while not hold.is_set():
                if gone.is_set():
                    return False
                await asyncio.sleep(0.01)
        return True

    @contextlib.asynccontextmanager
    async def watching(self, receive: Any) -> AsyncIterator[asyncio.Event]:
        """An event set when the client leaves before the answer is complete (counted in `disconnects`)."""
        gone = asyncio.Event()
        watcher = asyncio.create_task(self._watch_disconnect(receive, gone))
        try:
            yield gone
        finally:
            watcher.cancel()

    async def _watch_disconnect(self, receive: Any, gone: asyncio.Event) -> None:
        # Counts clients that left before their response was complete (e.g. interlock cancelling).
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            with self._lock:
                self.disconnects += 1

    async def _respond(
        self,
        path: str,
        data: dict[str, Any],
        script: Script,
        send: Any,
        gone: asyncio.Event,
        dialect: OpenAIDialect | None,
    ) -> None:
        extra = extra_headers(script)
        counting = path.endswith("/messages/count_tokens")  # Anthropic's token count: `{"input_tokens": N}`
        anthropic = counting or path.endswith("/messages")
        prefill = assistant_prefill(data)
        if prefill is not None and script.status < 400 and script.body is None:
            if script.prefill == "reject":
                script = dataclasses.replace(script, status=400, error="prefill")
            elif anthropic and prefill != prefill.rstrip():
                script = dataclasses.replace(script, status=400, error="trailing_whitespace")
        if script.error is not None and script.status < 400:
            script = dataclasses.replace(script, status=400)
        if script.status >= 400 or script.body is not None:
            dialect_error = dialect.error(script) if dialect is not None and script.body is None else None
            if script.body is not None:
                body = script.body
            elif dialect_error is not None:
                body = dialect_error
            elif script.error is not None:
                body = named_error(script.error, anthropic)
            else:
                body = error_body(script.status, anthropic)
            await send_json(send, script.status, body, extra)
            return
        model = script.model or str(data.get("model") or "scripted-model")
        if script.use_tools and not script.tool_calls and script.text is None:
            call = offered_tool_call(data)
            if call is not None:
                script = dataclasses.replace(script, tool_calls=[call])
        text = script.text if script.text is not None else f"echo: {last_user_text(data)}"
        if prefill and text.startswith(prefill):
            text = text[len(prefill) :]  # a model continuing its own answer from the prefill
        if path.endswith("/embeddings") or counting:
            events: list[bytes] = []
            whole = {"input_tokens": script.input_tokens} if counting else embeddings_reply(data, model)
        elif anthropic:
            events, whole = anthropic_reply(text, script, model)
        elif path.endswith("/responses"):
            events, whole = responses_reply(text, script, model, data)
        else:
            events, whole = chat_reply(text, script, model, data)
            if dialect is not None:
                events, whole = dialect.chat(events, whole)
        if script.keepalive_every:
            kind = "anthropic" if anthropic else "responses" if path.endswith("/responses") else "chat"
            events = with_keepalives(events, script.keepalive_every, kind)
        encoder = Encoder.negotiate(script.encoding, _accept_encoding.get())
        if encoder is not None:
            extra.append((b"content-encoding", encoder.name.encode()))
        if data.get("stream") is True and events:
            if encoder is not None:
                events = [encoder.chunk(e) for e in events]
                events[-1] += encoder.end()
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
            # (An error event is sent plain: not for a script with an `encoding`.)
            await send_stream(send, script, events, gone, lambda: stream_error_event(anthropic))
            return
        body = json.dumps(whole).encode()
        if encoder is not None:
            body = encoder.chunk(body) + encoder.end()
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
            raise Reset("scripted reset mid-body")
        await send({"type": "http.response.body", "body": body})


__all__ = ["ScriptedUpstream", "Script", "ToolUse", "Received", "Encoder"]
