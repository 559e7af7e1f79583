"""Every byte bounded (issue 17, items 7 and 13): a non-streamed body past `max_response_bytes`, a
stream past `max_stream_bytes`, a stream that ends without its terminator; memory stays bounded
for a 1 GB stream and a 1 GB body (RSS of a real `interlock serve`, from /proc)."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from interlock.tracing.store import Store
from tests.proxy.raw_upstream import RawUpstream, chunks, fixed
from tests.proxy.routing_support import CHAT, collect_calls, finished, route
from tests.proxy.served import serve_process

MB = 1024 * 1024
SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"


def chat_events(total: int, *, done: bool = True) -> Iterator[bytes]:
    """About `total` bytes of OpenAI chat chunks in 64 KB blocks, then `[DONE]` (unless not `done`)."""
    event = (
        b"data: "
        + json.dumps(
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "model": "m",
                "choices": [{"index": 0, "delta": {"content": "lorem ipsum " * 8}}],
            }
        ).encode()
        + b"\n\n"
    )
    block = event * (64 * 1024 // len(event))
    sent = 0
    while sent < total:
        yield block
        sent += len(block)
    if done:
        yield b"data: [DONE]\n\n"


def only(upstream_url: str, protocol: str = "openai") -> dict[str, Any]:
    return {
        protocol: route(
            protocol, [{"name": "raw", "url": upstream_url + ("/v1" if protocol == "openai" else ""), "api_key": "k"}]
        )
    }


# -- max_response_bytes ----------------------------------------------------------------------------


def test_a_body_past_max_response_bytes_is_an_error_and_its_head_is_recorded(make_interlock: Any) -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4194304\r\n\r\n"
    with RawUpstream(chunks(head, lambda: iter([b"{" + b" " * (4 * MB - 2) + b"}"]))) as raw:
        running = make_interlock(routes=only(raw.url), max_response_bytes=MB)
        calls = collect_calls(running)
        response = httpx.post(running.url + "/openai/chat/completions", json=CHAT, timeout=30)
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "response_too_large"
        (call,) = finished(calls)
        assert call.outcome == "upstream_error" and call.error_code == "response_too_large"
        assert call.truncated
        assert call.response_body is not None and 0 < len(call.response_body) <= MB
        assert raw.requests == 1  # not retried: the same upstream would send the same body
        running.runtime.recorder.flush()
        stored = running.runtime.store.get_call(call.id)
        assert stored.truncated and stored.error_code == "response_too_large"
        assert stored.response_body == call.response_body[: len(stored.response_body)]


# -- max_stream_bytes and the terminator -----------------------------------------------------------


def test_a_stream_past_max_stream_bytes_ends_with_the_protocols_error_event(make_interlock: Any) -> None:
    with RawUpstream(chunks(SSE_HEAD, lambda: chat_events(8 * MB))) as raw:
        running = make_interlock(routes=only(raw.url), max_stream_bytes=2 * MB)
        calls = collect_calls(running)
        client = openai.OpenAI(base_url=running.url + "/openai", api_key="k", max_retries=0)
        with pytest.raises(openai.APIError):
            for _ in client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            ):
                pass
        (call,) = finished(calls)
        assert call.outcome == "upstream_error" and call.error_code == "stream_too_large" and call.truncated
        assert sum(len(c.data) for c in call.chunks) <= 2 * MB


def test_a_stream_without_its_terminator_is_truncated_not_ok(make_interlock: Any) -> None:
    with RawUpstream(chunks(SSE_HEAD, lambda: chat_events(100_000, done=False))) as raw:
        running = make_interlock(routes=only(raw.url))
        calls = collect_calls(running)
        client = openai.OpenAI(base_url=running.url + "/openai", api_key="k", max_retries=0)
        with pytest.raises(openai.APIError):
            for _ in client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            ):
                pass
        (call,) = finished(calls)
        assert call.outcome == "upstream_error" and call.error_code == "stream_truncated" and call.truncated


def test_an_anthropic_stream_without_message_stop_is_truncated(make_interlock: Any) -> None:
    events = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "m1",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude",
                    "content": [],
                    "stop_reason": None,
                    "usage": {"input_tokens": 1, "output_tokens": 0},
                },
            },
        ),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "cut"}},
        ),
    ]
    body = b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events)
    with RawUpstream(fixed(SSE_HEAD + body)) as raw:
        running = make_interlock(routes=only(raw.url, "anthropic"))
        calls = collect_calls(running)
        client = anthropic.Anthropic(base_url=running.url + "/anthropic", api_key="k", max_retries=0)
        with pytest.raises(anthropic.APIStatusError):
            with client.messages.stream(
                model="claude", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            ) as stream:
                for _ in stream:
                    pass
        (call,) = finished(calls)
        assert call.outcome == "upstream_error" and call.error_code == "stream_truncated" and call.truncated


def test_a_whole_stream_is_still_ok(make_interlock: Any) -> None:
    with RawUpstream(chunks(SSE_HEAD, lambda: chat_events(100_000))) as raw:
        running = make_interlock(routes=only(raw.url))
        calls = collect_calls(running)
        client = openai.OpenAI(base_url=running.url + "/openai", api_key="k", max_retries=0)
        pieces = list(
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
        )
        assert pieces
        (call,) = finished(calls)
        assert call.outcome == "ok" and not call.truncated


def test_a_long_stream_keeps_its_head_and_tail_for_the_record(make_interlock: Any) -> None:
    with RawUpstream(chunks(SSE_HEAD, lambda: chat_events(4 * MB))) as raw:
        running = make_interlock(routes=only(raw.url), store={"record_max_bytes": MB})
        calls = collect_calls(running)
        with httpx.stream("POST", running.url + "/openai/chat/completions", json={**CHAT, "stream": True}) as response:
            received = sum(len(part) for part in response.iter_raw())
        (call,) = finished(calls)
        assert call.outcome == "ok" and received > 4 * MB
        kept = sum(len(c.data) for c in call.chunks)
        assert MB < kept <= MB + 256 * 1024
        assert call.chunks[-1].data.endswith(b"data: [DONE]\n\n")  # the tail: usage, finish, terminator
        cut = call.meta["record_cut"]["upstream"]
        assert cut["dropped_bytes"] + kept == received


# -- memory for a 1 GB stream and a 1 GB body --------------------------------------------------------


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def test_a_1_gb_stream_and_a_1_gb_body_keep_rss_under_300_mb(tmp_path: Path, processes: Any) -> None:
    gb = 1024 * MB
    body_head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % gb

    def body() -> Iterator[bytes]:
        block = b" " * (64 * 1024)
        for _ in range(gb // len(block)):
            yield block

    with (
        RawUpstream(chunks(SSE_HEAD, lambda: chat_events(gb))) as streamed,
        RawUpstream(chunks(body_head, body)) as whole,
    ):
        routes = {
            "stream": {"protocol": "openai", "upstream": streamed.url + "/v1"},
            "body": {"protocol": "openai", "upstream": whole.url + "/v1"},
        }
        served = serve_process(tmp_path, processes, routes=routes, max_stream_bytes=2 * gb)
        with httpx.stream(
            "POST", served.url + "/stream/chat/completions", json={**CHAT, "stream": True}, timeout=120
        ) as response:
            received = sum(len(part) for part in response.iter_raw())
        assert received > gb
        response = httpx.post(served.url + "/body/chat/completions", json=CHAT, timeout=120)
        assert response.status_code == 502 and response.json()["error"]["code"] == "response_too_large"
        done = threading.Event()
        with Store(served.db, readonly=True) as store:
            for _ in range(600):
                if store.count_calls() == 2:
                    done.set()
                    break
                done.wait(0.1)
            assert done.is_set(), "both calls recorded"
            calls = {c["route"]: c for c in store.list_calls()}
            assert calls["stream"]["outcome"] == "ok" and calls["body"]["truncated"]
        peak = served.rss_peak_mb()
        print(f"interlock serve peak RSS {peak:.0f} MB after a 1 GB stream and a 1 GB body")
        assert peak < 300, f"peak RSS {peak:.0f} MB"
