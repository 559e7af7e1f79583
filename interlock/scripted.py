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

The replies (`scripted_replies.py`) follow the providers' API references and real recordings, event
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
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import brotli
import uvicorn

from interlock import scripted_azure, scripted_bedrock
from interlock.scripted_gemini import (
    GEMINI_PATH,
    frame,
    gemini_error,
    gemini_named_error,
    gemini_reply,
    gemini_stream_error,
    other_reply,
)
from interlock.scripted_gemini import last_user_text as gemini_user_text
from interlock.scripted_replies import (
    Script,
    ToolUse,
    anthropic_reply,
    assistant_prefill,
    chat_reply,
    embeddings_reply,
    error_body,
    last_user_text,
    named_error,
    offered_tool_call,
    responses_reply,
    stream_error_event,
    with_keepalives,
)
from interlock.serving import QuietServer, bind_socket


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


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float
    #: The path as sent, still percent-encoded (`path` is decoded).
    raw_path: str = ""
    #: Bedrock: why its SigV4 signature did not verify (None: it did, or it was not checked).
    signature_problem: str | None = None

    def json(self) -> Any:
        return json.loads(self.body)


#: The Accept-Encoding of the request being answered (each request is served in its own task).
_accept_encoding: contextvars.ContextVar[str] = contextvars.ContextVar("accept_encoding", default="")


class _Reset(Exception):
    pass


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
        self.aws_credentials: scripted_bedrock.AwsCredentials | None = None

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

    def _next(self, model: Any = None) -> Script:
        with self._lock:
            if isinstance(model, str) and model in self._models:
                return self._models[model]
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
        self._server = QuietServer(config)
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
        azure = scripted_azure.is_azure(scope["path"])
        if azure:
            refused = scripted_azure.refusal(scope["path"], received.query, headers)
            if refused is not None:
                await _send_json(send, refused[0], refused[1], [])
                return
            # The deployment API names the model in the path (`set_model` takes the deployment).
            data.setdefault("model", scripted_azure.deployment(scope["path"]))
        if scope["path"].startswith("/model/"):  # AWS Bedrock Runtime: the model is in the path
            await self._bedrock(scope, received, data, receive, send)
            return
        gemini = GEMINI_PATH.search(scope["path"])
        script = self._next(gemini.group(1) if gemini else data.get("model"))
        if script.delay:
            await asyncio.sleep(script.delay)
        if script.reset_after == 0 and script.status == 200 and data.get("stream") is not True:
            raise _Reset("scripted reset before the response")
        gone = asyncio.Event()
        watcher = asyncio.create_task(self._watch_disconnect(receive, gone))
        try:
            _accept_encoding.set(headers.get("accept-encoding", ""))
            if gemini:
                sse = "alt=sse" in received.query
                await self._respond_gemini(gemini.group(1), gemini.group(2), sse, data, script, send, gone)
            else:
                await self._respond(scope["path"], data, script, send, gone)
        finally:
            watcher.cancel()

    async def _bedrock(
        self, scope: dict[str, Any], received: Received, data: dict[str, Any], receive: Any, send: Any
    ) -> None:
        """A Bedrock Runtime request: its SigV4 signature checked against `aws_credentials` (a 403
        `InvalidSignatureException` when it does not verify, as AWS answers), then the script."""
        script = self._next(unquote(scope["path"][len("/model/") :].partition("/")[0]))
        if self.aws_credentials is not None:
            problem = scripted_bedrock.signature_problem(
                received.method,
                received.raw_path,
                received.query,
                received.headers,
                received.body,
                self.aws_credentials,
            )
            received.signature_problem = problem
            if problem is not None:
                status, body, head = scripted_bedrock.error(403, problem, "InvalidSignatureException")
                await _send_json(send, status, body, head)
                return
        if script.delay:
            await asyncio.sleep(script.delay)
        if script.status >= 400 or script.error is not None or script.body is not None:
            if script.body is not None:
                status, body, head = script.status, script.body, []
            else:
                status, body, head = scripted_bedrock.error_for(script)
            extra = [(k.lower().encode(), v.encode()) for k, v in script.headers.items()]
            await _send_json(send, status, body, head + extra)
            return
        events, whole, streamed = scripted_bedrock.reply(scope["path"], data, script)
        if not streamed:
            if script.reset_after == 0:
                raise _Reset("scripted reset before the response")
            await _send_json(send, 200, json.dumps(whole).encode(), [])
            return
        gone = asyncio.Event()
        watcher = asyncio.create_task(self._watch_disconnect(receive, gone))
        try:
            head = [(b"content-type", b"application/vnd.amazon.eventstream"), (b"x-amzn-requestid", b"scripted")]
            await send({"type": "http.response.start", "status": 200, "headers": head})
            for i, event in enumerate(events):
                if script.reset_after is not None and i >= script.reset_after:
                    raise _Reset("scripted reset mid-stream")
                if script.stall_after is not None and i >= script.stall_after:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(gone.wait(), script.stall_seconds)
                    raise _Reset("scripted stall ended")
                if script.error_event_after is not None and i >= script.error_event_after:
                    event = scripted_bedrock.stream_exception()
                    await send({"type": "http.response.body", "body": event, "more_body": True})
                    break
                if i and script.chunk_delay:
                    await asyncio.sleep(script.chunk_delay)
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            watcher.cancel()

    async def _watch_disconnect(self, receive: Any, gone: asyncio.Event) -> None:
        # Counts clients that left before their response was complete (e.g. interlock cancelling).
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            with self._lock:
                self.disconnects += 1

    async def _respond(self, path: str, data: dict[str, Any], script: Script, send: Any, gone: asyncio.Event) -> None:
        extra = _extra_headers(script)
        anthropic = path.endswith("/messages")
        prefill = assistant_prefill(data)
        if prefill is not None and script.status < 400 and script.body is None:
            if script.prefill == "reject":
                script = dataclasses.replace(script, status=400, error="prefill")
            elif anthropic and prefill != prefill.rstrip():
                script = dataclasses.replace(script, status=400, error="trailing_whitespace")
        if script.error is not None and script.status < 400:
            script = dataclasses.replace(script, status=400)
        if script.status >= 400 or script.body is not None:
            azure = scripted_azure.is_azure(path)
            if script.body is not None:
                body = script.body
            elif azure and script.error == "content_filter":
                body = scripted_azure.content_filter_error()
            elif azure and script.error is None:
                body = scripted_azure.error(script.status, f"scripted error {script.status}")
            elif script.error is not None:
                body = named_error(script.error, anthropic)
            else:
                body = error_body(script.status, anthropic)
            await _send_json(send, script.status, body, extra)
            return
        model = script.model or str(data.get("model") or "scripted-model")
        if script.use_tools and not script.tool_calls and script.text is None:
            call = offered_tool_call(data)
            if call is not None:
                script = dataclasses.replace(script, tool_calls=[call])
        text = script.text if script.text is not None else f"echo: {last_user_text(data)}"
        if prefill and text.startswith(prefill):
            text = text[len(prefill) :]  # a model continuing its own answer from the prefill
        if path.endswith("/embeddings"):
            events: list[bytes] = []
            whole = embeddings_reply(data, model)
        elif anthropic:
            events, whole = anthropic_reply(text, script, model)
        elif path.endswith("/responses"):
            events, whole = responses_reply(text, script, model, data)
        else:
            events, whole = chat_reply(text, script, model, data)
            if scripted_azure.is_azure(path):
                events, whole = scripted_azure.chat(events, whole)
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
            for i, event in enumerate(events):
                if script.reset_after is not None and i >= script.reset_after:
                    raise _Reset("scripted reset mid-stream")
                if script.stall_after is not None and i >= script.stall_after:
                    # Silent, connection open, until the client leaves (or the bound passes).
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(gone.wait(), script.stall_seconds)
                    raise _Reset("scripted stall ended")
                if script.error_event_after is not None and i >= script.error_event_after:
                    # (Sent plain: not for a script with an `encoding`.)
                    await send({"type": "http.response.body", "body": stream_error_event(anthropic), "more_body": True})
                    break
                if i and script.chunk_delay:
                    await asyncio.sleep(script.chunk_delay)
                await send({"type": "http.response.body", "body": event, "more_body": True})
            if script.end_delay:
                await asyncio.sleep(script.end_delay)
            await send({"type": "http.response.body", "body": b""})
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
            raise _Reset("scripted reset mid-body")
        await send({"type": "http.response.body", "body": body})

    async def _respond_gemini(
        self, model: str, method: str, sse: bool, data: dict[str, Any], script: Script, send: Any, gone: asyncio.Event
    ) -> None:
        """The Gemini API (`scripted_gemini.py`): the model is the URL's, a stream is asked for by the method."""
        if script.error is not None and script.status < 400:
            script = dataclasses.replace(script, status=400)
        if script.status >= 400 or script.body is not None:
            if script.body is not None:
                body = script.body
            else:
                body = gemini_named_error(script.error) if script.error else gemini_error(script.status)
            await _send_json(send, script.status, body, _extra_headers(script))
            return
        model = script.model or model
        if method not in ("generateContent", "streamGenerateContent"):
            await _send_json(send, 200, json.dumps(other_reply(method, data, script)).encode(), _extra_headers(script))
            return
        text = script.text if script.text is not None else f"echo: {gemini_user_text(data)}"
        events, whole = gemini_reply(text, script, model)
        if method == "generateContent":
            await _send_json(send, 200, json.dumps(whole).encode(), _extra_headers(script))
            return
        content_type = b"text/event-stream" if sse else b"application/json; charset=UTF-8"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]})
        if script.first_byte_delay:
            await asyncio.sleep(script.first_byte_delay)
        for i, chunk in enumerate(frame(events, sse)):
            if script.reset_after is not None and i >= script.reset_after:
                raise _Reset("scripted reset mid-stream")
            if script.stall_after is not None and i >= script.stall_after:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gone.wait(), script.stall_seconds)
                raise _Reset("scripted stall ended")
            if script.error_event_after is not None and i >= script.error_event_after:
                await send({"type": "http.response.body", "body": gemini_stream_error(), "more_body": True})
                break
            if i and script.chunk_delay:
                await asyncio.sleep(script.chunk_delay)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


async def _send_json(send: Any, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _extra_headers(script: Script) -> list[tuple[bytes, bytes]]:
    extra = [(k.lower().encode(), v.encode()) for k, v in script.headers.items()]
    if script.retry_after is not None:
        extra.append((b"retry-after", script.retry_after.encode()))
    return extra


__all__ = ["ScriptedUpstream", "Script", "ToolUse", "Received", "Encoder"]
