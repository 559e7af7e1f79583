"""The upstream client's lean path: the upstream gets the agent's headers, and no cookie jar carries one
agent's cookies into another agent's call."""

from __future__ import annotations

import asyncio
import re
import socket
from typing import Any

import httpx
import pytest
from httpx_aiohttp import AiohttpTransport

from interlock.config import Settings
from interlock.proxy.upstream import LeanAiohttpTransport, UpstreamClient, make_client
from interlock.scripted import Script, ScriptedUpstream

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def test_an_upstream_cookie_is_not_sent_with_the_next_call(upstream: ScriptedUpstream, interlock: Any) -> None:
    upstream.script(Script(headers={"set-cookie": "session=agent-a-secret; Path=/"}), Script())
    url = interlock.url + "/openai/chat/completions"
    # Two agents, each with its own client (an httpx.Client would itself resend a cookie it got).
    first = httpx.post(url, json=CHAT, headers={"x-interlock-agent": "a"})
    second = httpx.post(url, json=CHAT, headers={"x-interlock-agent": "b"})
    assert first.headers["set-cookie"] == "session=agent-a-secret; Path=/"  # relayed to the agent as sent
    assert second.status_code == 200
    assert "cookie" not in upstream.requests[-1].headers


def test_the_upstream_gets_no_headers_the_agent_did_not_send(upstream: ScriptedUpstream, interlock: Any) -> None:
    raw = httpx.Request("POST", interlock.url + "/openai/chat/completions", json=CHAT)
    for name in ("user-agent", "accept", "accept-encoding"):
        raw.headers.pop(name, None)
    with httpx.Client() as client:
        assert client.send(raw).status_code == 200
    received = upstream.requests[-1].headers
    assert "user-agent" not in received
    assert "accept" not in received
    assert received["accept-encoding"] == "identity"


async def test_the_lean_path_streams_through_the_transport_and_other_calls_use_plain_httpx() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"set-cookie": "a=b"}, stream=httpx.ByteStream(b"ok"))

    client = make_client(Settings(), httpx.MockTransport(handler))
    assert isinstance(client, UpstreamClient)
    url = "http://upstream.test/v1/chat/completions"
    request = client.build_request("POST", url, headers=[("x-one", "1")], content=b"{}")
    assert request.extensions["timeout"] == client.timeout.as_dict()
    response = await client.send(request, stream=True)
    assert response.request is request
    assert b"".join([part async for part in response.aiter_raw()]) == b"ok"
    await response.aclose()
    assert not client.cookies  # the lean path keeps no cookies
    await client.post(url, content=b"{}", timeout=3.0)  # plain httpx path (the escalation webhook's)
    assert seen[-1].extensions["timeout"]["read"] == 3.0
    await client.aclose()


async def _capture_server(heads: list[bytes]) -> asyncio.Server:
    """A loopback upstream that keeps each request's bytes as they arrived and answers 200."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        found = re.search(rb"(?im)^content-length: *(\d+)", head)
        body = await reader.readexactly(int(found.group(1))) if found else b""
        heads.append(head + body)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-up: 1\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
        )
        await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


@pytest.mark.parametrize(
    "headers",
    [
        [("content-type", "application/json"), ("x-dup", "a"), ("authorization", "Bearer k"), ("x-dup", "b")],
        [("content-type", "application/json"), ("host", "upstream.example")],  # a route's own Host
    ],
)
async def test_the_lean_transport_sends_what_httpx_would_have_sent(headers: list[tuple[str, str]]) -> None:
    heads: list[bytes] = []
    server = await _capture_server(heads)
    port = server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1/chat/completions?x=1"
    body = b'{"model":"m"}'
    lean = make_client(Settings())
    assert isinstance(lean._transport, LeanAiohttpTransport)
    # The same transport without its lean path: the request goes through an httpx.Request.
    plain = make_client(Settings(), AiohttpTransport(trust_env=False, client=lean._transport.get_client))
    responses = []
    try:
        for client in (lean, plain):
            response = await client.open("POST", url, [*headers, ("content-length", str(len(body)))], body)
            responses.append((response.status_code, response.headers.raw, await response.aread()))
            await response.aclose()
    finally:
        await lean.aclose()
        await plain.aclose()
        server.close()
        await server.wait_closed()
    assert heads[0] == heads[1]
    assert responses[0] == responses[1]


async def test_the_lean_transport_fails_as_httpx_would() -> None:
    lean = make_client(Settings())
    plain = make_client(Settings(), AiohttpTransport(trust_env=False, client=lean._transport.get_client))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there
    raised = []
    try:
        for client in (lean, plain):
            with pytest.raises(httpx.TransportError) as info:
                await client.open("POST", f"http://127.0.0.1:{port}/v1", [("content-length", "2")], b"{}")
            raised.append(type(info.value))
    finally:
        await lean.aclose()
        await plain.aclose()
    assert raised[0] is raised[1]


@pytest.mark.parametrize("path", ["lean", "plain"])
async def test_bytes_that_arrived_before_the_upstream_hung_up_are_read_before_the_error(path: str) -> None:
    # The last event of a stream and the upstream's hang-up, both received while the relay was busy
    # elsewhere (here: before it reads at all). aiohttp stores the error and raised it ahead of the
    # buffered event, which was lost (a tool call the stream rescue then never saw: issue 18's flake).
    event = b'data: {"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}\n\n'

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        writer.write(head + b"%x\r\n%s\r\n" % (len(event), event))  # no last chunk: the body is cut short
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    client = make_client(Settings())
    try:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"
        if path == "lean":
            response = await client.open("POST", url, [("content-length", "2")], b"{}")
        else:  # plain httpx (the escalation webhook's path)
            response = await client.send(httpx.Request("POST", url, content=b"{}"), stream=True)
        content = response.stream._aiohttp_response.content  # type: ignore[attr-defined]
        for _ in range(2000):  # the condition, not a duration: the event buffered and the error stored
            if content.exception() is not None:
                break
            await asyncio.sleep(0.005)
        assert content.exception() is not None
        received = b""
        with pytest.raises(httpx.TransportError):
            async for part in response.aiter_raw():
                received += part
        assert received == event
        await response.aclose()
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
