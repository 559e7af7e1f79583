"""An agent that leaves before its response is recorded `aborted`, never `internal_error` (issue 17, item 13)."""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

import pytest

from interlock.scripted import Script, ScriptedUpstream
from tests.proxy.routing_support import collect_calls, finished

CHAT = json.dumps({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}).encode()
STREAM = json.dumps({"model": "gpt-test", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()


def head(length: int) -> bytes:
    return (
        b"POST /openai/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % length
    )


def leave(sock: socket.socket, *, reset: bool) -> None:
    if reset:  # an RST, as a killed process's kernel sends
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
@pytest.mark.parametrize(
    "sent", ["head only", "half the body", "whole request, slow upstream", "whole stream request, slow upstream"]
)
def test_a_client_gone_before_the_response_is_aborted(
    make_interlock: Any, upstream: ScriptedUpstream, sent: str, reset: bool
) -> None:
    running = make_interlock()
    calls = collect_calls(running)
    upstream.set_default(Script(delay=0.5, first_byte_delay=0.2))
    sock = socket.create_connection((running.settings.listen.host, running.settings.listen.port))
    body = STREAM if "stream" in sent else CHAT
    if sent == "head only":
        sock.sendall(head(len(body)))
    elif sent == "half the body":
        sock.sendall(head(len(body)) + body[: len(body) // 2])
    else:
        sock.sendall(head(len(body)) + body)
    leave(sock, reset=reset)
    (call,) = finished(calls)
    assert call.outcome == "aborted", (call.outcome, call.error)
    assert call.error_code != "internal_error"
