"""Agent-side bounds (issue 17, items 11 and 13): a request head must arrive within
`server.header_timeout` and fit `server.max_header_bytes`, a body within `server.body_timeout`; a
Content-Length over `max_body_bytes` gets its 413 before any body is read; idle keep-alive
connections close; malformed HTTP gets a JSON 400; every such reject is counted and logged."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import httpx

from interlock.testing import Running
from tests.proxy.routing_support import collect_calls, finished

FAST = {"header_timeout": 0.5, "body_timeout": 0.5, "keep_alive": 1, "max_header_bytes": 4096}
CHAT = json.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}).encode()


def connect(running: Running) -> socket.socket:
    # The timeout bounds a connection the server never answers or closes (a failure, not a pace).
    sock = socket.create_connection((running.settings.listen.host, running.settings.listen.port), timeout=30)
    return sock


def response_of(sock: socket.socket) -> tuple[int, dict[str, Any] | None]:
    """Status and JSON body of the one response on `sock` (the server then closes it)."""
    data = b""
    while True:
        part = sock.recv(65536)
        if not part:
            break
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body.startswith(b"{") else None


def rejected(running: Running) -> dict[str, int]:
    return httpx.get(running.admin_url + "/api/stats").json()["server"]["rejected"]["proxy"]  # type: ignore[no-any-return]


def post_head(length: int) -> bytes:
    return (
        b"POST /openai/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % length
    )


def test_slow_heads_are_cut_and_counted(make_interlock: Any) -> None:
    running = make_interlock(server=FAST)
    socks = [connect(running) for _ in range(30)]
    for sock in socks:
        sock.sendall(b"POST /openai/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n")  # and never the rest
    for sock in socks:  # each cut by the server's header_timeout (never answered: the socket errs)
        status, body = response_of(sock)
        assert status == 408 and body is not None and body["error"]["code"] == "header_timeout"
        sock.close()
    assert rejected(running)["header_timeout"] == 30


def test_a_connection_that_sends_nothing_is_closed(make_interlock: Any) -> None:
    running = make_interlock(server=FAST)
    with connect(running) as sock:
        status, _ = response_of(sock)
        assert status == 408


def test_a_trickled_body_is_cut_at_the_body_deadline(make_interlock: Any) -> None:
    running = make_interlock(server=FAST)
    calls = collect_calls(running)
    with connect(running) as sock:
        sock.sendall(post_head(len(CHAT)))
        for byte in CHAT[:20]:  # 1 byte every 50 ms: 1 s for 20 bytes, past the 0.5 s deadline
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.05)
        status, body = response_of(sock)
    assert status == 408 and body is not None and body["error"]["code"] == "body_timeout"
    (call,) = finished(calls)
    assert call.outcome == "bad_request" and call.error_code == "body_timeout"


def test_a_content_length_longer_than_the_body_does_not_hold_the_connection(make_interlock: Any) -> None:
    running = make_interlock(server=FAST)
    with connect(running) as sock:
        sock.sendall(post_head(len(CHAT) + 100) + CHAT)
        status, body = response_of(sock)
    assert status == 408 and body is not None and body["error"]["code"] == "body_timeout"


def test_a_content_length_over_max_body_bytes_gets_413_before_any_body(make_interlock: Any) -> None:
    running = make_interlock(server=FAST, max_body_bytes=1000)
    calls = collect_calls(running)
    with connect(running) as sock:
        sock.sendall(post_head(10_000_000))  # the head only: the 413 must not wait for the body
        status, body = response_of(sock)
    assert status == 413 and body is not None and body["error"]["code"] == "body_too_large"
    (call,) = finished(calls)
    assert call.error_code == "body_too_large"


def test_a_huge_head_gets_431(make_interlock: Any) -> None:
    running = make_interlock(server=FAST)
    with connect(running) as sock:
        sock.sendall(b"GET /openai/models HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: " + b"a" * 8192 + b"\r\n\r\n")
        status, body = response_of(sock)
    assert status == 431 and body is not None and body["error"]["code"] == "header_too_large"
    assert rejected(running)["header_too_large"] == 1


def test_malformed_http_is_a_json_400_counted_and_logged(make_interlock: Any, caplog: Any) -> None:
    running = make_interlock(server=FAST)
    with connect(running) as sock:
        sock.sendall(
            b"POST /openai/chat HTTP/1.1\r\nhost: 127.0.0.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nnot hex\r\n"
        )
        status, body = response_of(sock)
    assert status == 400 and body is not None and body["error"]["code"] == "bad_http"
    assert rejected(running)["malformed"] == 1
    assert any("refused a request" in r.getMessage() and "malformed" in r.getMessage() for r in caplog.records)


def test_an_idle_keep_alive_connection_is_closed(make_interlock: Any) -> None:
    running = make_interlock(server=FAST)
    with connect(running) as sock:
        sock.sendall(b"GET /nowhere/x HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            data += sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 404")
        sock.settimeout(30)  # a bound for a connection never closed, not a pace
        assert sock.recv(65536) == b""  # closed by the server after keep_alive (1 s)
