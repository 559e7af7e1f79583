"""A minimal, fast fake model provider for load runs: canned OpenAI chat completions, JSON and SSE.

interlock/scripted/ (uvicorn + h11, scripted per request) is the right fake for tests, but under
load it is slower than interlock itself, so "direct" would measure the fake, not the proxy. This
server is a raw asyncio protocol on uvloop that parses just enough HTTP/1.1 (keep-alive,
Content-Length bodies) to answer:

- a JSON chat completion (with usage) to any POST whose body does not ask for a stream;
- an SSE stream (chunked) when the body has `"stream": true`: the first event at once, then
  `--chunks` events `--chunk-interval-ms` apart (of about `--event-bytes` each, if given), then
  `data: [DONE]`;
- `--sink`: 200 with an empty body to everything, an OTLP/HTTP collector that keeps nothing;
- faults, when asked: `--fail-503 P` answers a fraction P with 503, `--reset P` resets the connection
  (RST) before answering a fraction P. Seeded, so runs are comparable.

Run: python -m bench.fake_upstream --port 9000 [--chunks 10 --chunk-interval-ms 5 --fail-503 0.05 --reset 0.02]
It prints "ready <port>" once it listens. Measured alone (direct) it is the baseline for every run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import socket
import struct
import sys
from typing import Any

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "The answer is 42.", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    },
    separators=(",", ":"),
).encode()

ERROR_503 = b'{"error":{"message":"fake overload","type":"server_error","param":null,"code":null}}'


def _event(delta: dict[str, Any] | None, finish: str | None = None, usage: bool = False) -> bytes:
    data: dict[str, Any] = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if delta is not None
        else [],
    }
    if usage:  # `stream_options.include_usage`: null in every chunk, the counts in a last one without choices
        data["usage"] = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18} if delta is None else None
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def stream_events(count: int, event_bytes: int = 0, usage: bool = False) -> list[bytes]:
    """The SSE events of one stream, already framed as HTTP chunks (the last is the terminator);
    `event_bytes` pads each content event's text to about that size (a large stream); `usage`: as
    OpenAI answers a request with `stream_options.include_usage` (interlock asks it for every chat
    stream whose agent did not)."""
    events = [_event({"role": "assistant", "content": ""}, usage=usage)]
    pad = "x" * max(0, event_bytes - 150)
    events += [_event({"content": f"tok{i} {pad}"}, usage=usage) for i in range(count)]
    events.append(_event({}, "stop", usage=usage))
    if usage:
        events.append(_event(None, usage=True))
    events.append(b"data: [DONE]\n\n")
    return [_chunked(e) for e in events] + [b"0\r\n\r\n"]


JSON_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(COMPLETION)
) + COMPLETION
STREAM_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
#: `--sink`: an OTLP/HTTP receiver that accepts everything (an empty ExportServiceResponse).
SINK_REPLY = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
FAIL_REPLY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(ERROR_503)
) + ERROR_503


class Options:
    def __init__(self, args: argparse.Namespace) -> None:
        self.events = stream_events(args.chunks, args.event_bytes)
        self.usage_events = stream_events(args.chunks, args.event_bytes, usage=True)
        self.interval = args.chunk_interval_ms / 1000.0
        self.fail_503 = args.fail_503
        self.reset = args.reset
        self.random = random.Random(args.seed)
        self.sink = args.sink
        self.served = 0


class FakeProvider(asyncio.Protocol):
    def __init__(self, options: Options) -> None:
        self.options = options
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.streaming = False
        self.events = options.events  # the stream being sent (with usage when asked)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while not self.streaming:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            length = 0
            at = head.find(b"content-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at)
                length = int(head[at + 15 : stop if stop >= 0 else len(head)].strip())
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            self.answer(body)

    def answer(self, body: bytes) -> None:
        options, transport = self.options, self.transport
        assert transport is not None
        options.served += 1
        if options.sink:
            transport.write(SINK_REPLY)
            return
        if options.reset or options.fail_503:
            roll = options.random.random()
            if roll < options.reset:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
                return
            if roll < options.reset + options.fail_503:
                transport.write(FAIL_REPLY)
                return
        if b'"stream":true' in body or b'"stream": true' in body:
            self.streaming = True
            asked = b'"include_usage":true' in body or b'"include_usage": true' in body
            self.events = events = options.usage_events if asked else options.events
            transport.write(STREAM_HEAD + events[0])
            if options.interval:
                asyncio.get_running_loop().call_later(options.interval, self.send_event, 1)
            else:
                transport.write(b"".join(events[1:]))
                self.streaming = False
            return
        transport.write(JSON_HEAD)

    def send_event(self, index: int) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        events = self.events
        transport.write(events[index])
        if index + 1 < len(events):
            asyncio.get_running_loop().call_later(self.options.interval, self.send_event, index + 1)
        else:
            self.streaming = False
            if self.buffer:
                self.data_received(b"")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def main(args: argparse.Namespace) -> None:
    options = Options(args)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FakeProvider(options), args.host, args.port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    port = server.sockets[0].getsockname()[1]
    print(f"ready {port}", flush=True)
    await stop.wait()
    server.close()
    print(f"served {options.served}", flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.fake_upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=10, help="content events per stream")
    parser.add_argument("--chunk-interval-ms", type=float, default=5.0)
    parser.add_argument("--event-bytes", type=int, default=0, help="pad each content event to about this size")
    parser.add_argument("--fail-503", type=float, default=0.0)
    parser.add_argument("--reset", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sink", action="store_true", help="answer every request 200 with an empty body (OTLP)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:  # plain asyncio still works, a little slower
        asyncio.run(main(parse_args(sys.argv[1:])))
    else:
        uvloop.run(main(parse_args(sys.argv[1:])))
