"""The upstream client's lean path: the upstream gets the agent's headers, and no cookie jar carries one
agent's cookies into another agent's call."""

from __future__ import annotations

from typing import Any

import httpx

from interlock.config import Settings
from interlock.proxy.upstream import UpstreamClient, make_client
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
