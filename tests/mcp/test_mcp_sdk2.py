"""MCP through interlock with the `mcp` SDK 2.x on both sides, in both protocol revisions."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from mcp.shared.exceptions import MCPError

from interlock.scripted import ScriptedUpstream
from interlock.testing import Running, run_interlock, settings_for_test
from tests.mcp.servers import Collector, ThreadServer, mcp2_client, until, wait_for


@pytest.fixture
def running(mcp_interlock: Any, mcp2_server: ThreadServer) -> Running:
    return mcp_interlock({"tools": mcp2_server.url})  # type: ignore[no-any-return]


def endpoint(running: Running) -> str:
    return running.url + "/tools/mcp"


async def test_2026_07_28_stateless_calls_are_relayed_and_recorded(running: Running, collector: Collector) -> None:
    async with mcp2_client(endpoint(running)) as client:
        listed = await client.list_tools()
        result = await client.call_tool("add", {"a": 2, "b": 3})
    assert {"add", "lookup", "delete_file"} <= {tool.name for tool in listed.tools}
    assert result.structured_content == {"result": 5}
    calls = collector.wait(3)
    assert [c.meta["mcp"]["method"] for c in calls] == ["server/discover", "tools/list", "tools/call"]
    call = calls[-1]
    assert (call.status, call.outcome, call.stream) == (200, "ok", False)
    mcp = call.meta["mcp"]
    assert mcp["protocol_version"] == "2026-07-28"
    assert (mcp["kind"], mcp["id"], mcp["tool"], mcp["arguments"]) == ("request", 3, "add", {"a": 2, "b": 3})
    assert mcp["is_error"] is False and mcp["result"]["structuredContent"] == {"result": 5}
    assert "session_id" not in mcp and call.session is None  # stateless: no MCP session
    # The routing headers the server checks against the body went upstream untouched.
    assert ("mcp-method", "tools/call") in call.request_headers and ("mcp-name", "add") in call.request_headers
    assert calls[1].meta["mcp"]["tools"] == [t.name for t in listed.tools]


async def test_2025_11_25_session_handshake_sse_event_stream_and_delete(running: Running, collector: Collector) -> None:
    async with mcp2_client(endpoint(running), mode="legacy") as client:
        await client.list_tools()
        result = await client.call_tool("lookup", {"name": "Alice"})
        # The GET event stream opens after the handshake; wait until interlock holds it open.
        await until(lambda: running.runtime.proxy.inflight >= 1, what="the GET event stream")
    assert result.content[0].text == "Alice can be reached at alice@example.com"  # type: ignore[union-attr]
    calls = collector.wait(6)
    by_kind = {(c.method, c.meta["mcp"].get("method", c.meta["mcp"]["kind"])): c for c in calls}
    initialize = by_kind[("POST", "initialize")]
    session_id = dict(initialize.response_headers)["mcp-session-id"]
    # Every message of the session, the handshake included, is grouped under the MCP session id.
    assert {c.session for c in calls} == {session_id}
    assert {c.meta["mcp"]["session_id"] for c in calls} == {session_id}
    assert initialize.meta["mcp"]["protocol_version"] == "2025-11-25"
    assert initialize.meta["mcp"]["server"] == {"name": "tools-2x", "version": "2.0"}
    initialized = by_kind[("POST", "notifications/initialized")]
    assert (initialized.status, initialized.meta["mcp"]["kind"], initialized.response_body) == (
        202,
        "notification",
        b"",
    )
    tool_call = by_kind[("POST", "tools/call")]
    assert tool_call.stream and tool_call.chunks and tool_call.outcome == "ok"
    assert tool_call.meta["mcp"]["result"]["content"][0]["text"].endswith("alice@example.com")
    stream = by_kind[("GET", "stream")]
    assert stream.status == 200 and stream.stream
    # Ended by the DELETE upstream, or by the agent closing it first: either way on record.
    assert stream.outcome == "ok" or (stream.outcome, stream.meta["mcp"]["closed_by"]) == ("closed", "agent")
    end = by_kind[("DELETE", "end_session")]
    assert end.status == 200 and end.outcome == "ok"


async def test_progress_notifications_stream_through_before_the_result(running: Running, collector: Collector) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with mcp2_client(endpoint(running), mode="legacy") as client:
        result = await client.call_tool("count", {"n": 3}, progress_callback=on_progress)
    assert result.content[0].text == "counted to 3"  # type: ignore[union-attr]
    assert seen == [1, 2, 3]
    call = collector.tool_call("count")
    assert call.meta["mcp"]["server_messages"] == ["notifications/progress"] * 3
    assert call.meta["mcp"]["answered"] is True


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_tool_error_is_recorded_as_is_error(running: Running, collector: Collector, mode: str) -> None:
    async with mcp2_client(endpoint(running), mode=mode) as client:
        result = await client.call_tool("fail", {})
    assert result.is_error
    call = collector.tool_call("fail")
    assert call.outcome == "ok"  # the exchange worked; the tool reported a failure
    assert call.meta["mcp"]["is_error"] is True


async def test_the_agents_session_header_wins_over_the_mcp_session(running: Running, collector: Collector) -> None:
    headers = {"X-Interlock-Session": "ticket-42", "X-Interlock-Agent": "support-bot"}
    async with mcp2_client(endpoint(running), mode="legacy", headers=headers) as client:
        await client.call_tool("add", {"a": 1, "b": 1})
    calls = collector.wait(5)
    assert {c.session for c in calls} == {"ticket-42"}
    assert {c.agent for c in calls} == {"support-bot"}
    assert len({c.meta["mcp"]["session_id"] for c in calls}) == 1  # the MCP session is still on record


@pytest.mark.parametrize("mode", ["legacy", "auto"])
@pytest.mark.parametrize("fault", ["hang_up", "reset", "empty_reply"])
async def test_a_server_that_ends_the_stream_early_is_recorded_and_the_agent_gets_an_error(
    running: Running, collector: Collector, mode: str, fault: str
) -> None:
    async with mcp2_client(endpoint(running), mode=mode) as client:
        with pytest.raises(MCPError) as raised:
            await client.call_tool(fault, {})
        # The session survives: the next call works.
        assert (await client.call_tool("add", {"a": 1, "b": 2})).structured_content == {"result": 3}
    call = collector.tool_call(fault)
    expected = {"hang_up": "stream_closed_early", "reset": "stream_broken", "empty_reply": "no_answer"}[fault]
    assert call.outcome == "upstream_error" and call.error_code == expected
    if fault != "empty_reply":
        assert call.truncated and call.meta["mcp"]["server_messages"] == ["notifications/message"]
        assert call.meta["mcp"]["answered"] is False
    assert raised.value.error.data == {"code": expected}


def test_the_host_header_sent_upstream_is_the_upstreams_own_and_replies_come_plain(
    running: Running, mcp2_server: ThreadServer
) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {}}
    headers = {"accept": "application/json, text/event-stream", "host": "agent.example:4141"}
    direct = httpx.post(mcp2_server.url + "/mcp", json=body, headers=headers)
    assert direct.status_code == 421  # the SDK's DNS-rebinding guard rejects a foreign Host
    # To the proxy, a Host it answers (a foreign name is refused there: docs/security.md) but not the upstream's.
    agent_side = {**headers, "host": f"localhost:{running.settings.listen.port}", "accept-encoding": "gzip"}
    proxied = httpx.post(endpoint(running), json=body, headers=agent_side)
    assert proxied.status_code != 421
    assert "jsonrpc" in proxied.json()
    seen = mcp2_server.app.headers[-1]
    assert seen["host"] == f"127.0.0.1:{mcp2_server.port}"
    # Plain replies, so that policy and guardrails can read every one of them.
    assert seen["accept-encoding"] == "identity"


async def test_the_get_event_stream_outlives_the_total_timeout_and_carries_server_messages(
    mcp_interlock: Any, mcp2_server: ThreadServer, collector: Collector
) -> None:
    running: Running = mcp_interlock({"tools": mcp2_server.url}, timeouts={"total": 1.0})
    received: list[str] = []

    async def on_message(message: Any) -> None:
        root = getattr(message, "root", message)
        if hasattr(root, "method"):
            received.append(root.method)

    async with mcp2_client(running.url + "/tools/mcp", mode="legacy", message_handler=on_message) as client:
        await until(lambda: running.runtime.proxy.inflight >= 1, what="the GET event stream")
        opened = time.monotonic()
        # A model call would be cut at 1 s; the session's event stream is open-ended.
        await until(lambda: time.monotonic() - opened > 1.3, what="the stream to outlive the total timeout")
        assert (await client.call_tool("announce", {})).content[0].text == "announced"  # type: ignore[union-attr]
        await until(lambda: "notifications/tools/list_changed" in received, what="the notification")
    wait_for(lambda: any(c.method == "GET" for c in collector.calls), what="the GET stream's record")
    [stream] = [c for c in collector.calls if c.method == "GET"]
    assert stream.error_code is None and stream.status == 200
    assert stream.meta["mcp"]["server_messages"] == ["notifications/tools/list_changed"]


async def test_a_server_request_and_the_clients_answer_relay_through(running: Running, collector: Collector) -> None:
    asked: list[str] = []

    async def on_elicit(context: Any, params: Any) -> Any:
        from mcp_types import ElicitResult

        asked.append(params.message)
        return ElicitResult(action="accept", content={"ok": True})

    async with mcp2_client(endpoint(running), mode="legacy", elicitation_callback=on_elicit) as client:
        result = await client.call_tool("confirm", {"action": "deploy"})
    assert asked == ["Really deploy?"]
    assert result.content[0].text == "deploy: accept ok=True"  # type: ignore[union-attr]
    call = collector.tool_call("confirm")
    assert call.meta["mcp"]["server_messages"] == ["elicitation/create"]
    wait_for(lambda: any(c.meta["mcp"]["kind"] == "response" for c in collector.calls), what="the answer's record")
    [answer] = [c for c in collector.calls if c.meta["mcp"]["kind"] == "response"]
    assert answer.status == 202 and answer.session == call.session
    assert json.loads(answer.request_body)["result"]["content"] == {"ok": True}


def test_the_get_event_streams_head_is_relayed_before_any_event(running: Running) -> None:
    url = endpoint(running)
    headers = {"accept": "application/json, text/event-stream", "mcp-protocol-version": "2025-11-25"}
    hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
    with httpx.Client(headers=headers, timeout=5) as http:
        init = http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello})
        session = {"mcp-session-id": init.headers["mcp-session-id"]}
        http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
        # The server sends nothing on this stream for 15 s (its first keep-alive): a head held back
        # until the first byte would time out here.
        with http.stream("GET", url, headers={**session, "accept": "text/event-stream"}) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
        assert http.delete(url, headers=session).status_code == 200


async def test_tool_calls_and_model_calls_share_the_agents_session_in_the_store(
    tmp_path: Path, upstream: ScriptedUpstream, mcp2_server: ThreadServer
) -> None:
    routes = {
        "openai": {"protocol": "openai", "upstream": upstream.url + "/v1", "api_key": "sk-real"},
        "tools": {"protocol": "mcp", "upstream": mcp2_server.url},
    }
    headers = {"X-Interlock-Session": "ticket-9", "X-Interlock-Agent": "helper"}
    with run_interlock(settings_for_test({"routes": routes, "shutdown_grace": 1}, tmp_path)) as running:
        model = openai.AsyncOpenAI(base_url=running.url + "/openai", api_key="x", default_headers=headers)
        await model.chat.completions.create(model="m", messages=[{"role": "user", "content": "add 2 and 3"}])
        async with mcp2_client(endpoint(running), headers=headers) as client:
            await client.call_tool("add", {"a": 2, "b": 3})
        await model.close()
        store = running.runtime.store

        def tool_calls() -> list[Any]:
            calls = [store.get_call(c["id"]) for c in store.session("ticket-9")["calls"]]  # type: ignore[index]
            return [c for c in calls if c is not None and c.meta.get("mcp", {}).get("tool")]

        await until(lambda: store.session("ticket-9") is not None and tool_calls(), what="the tool call stored")
        # The model call, then the MCP probe and the tool call (the SDK may list tools in between).
        calls = store.session("ticket-9")["calls"]  # type: ignore[index]
        assert [c["route"] for c in calls][:2] == ["openai", "tools"] and {c["agent"] for c in calls} == {"helper"}
        [stored] = tool_calls()
    assert stored.meta["mcp"]["tool"] == "add" and stored.meta["mcp"]["result"]["structuredContent"] == {"result": 5}


async def test_a_subscriptions_listen_stream_outlives_the_total_timeout(
    mcp_interlock: Any, mcp2_server: ThreadServer, collector: Collector
) -> None:
    running: Running = mcp_interlock({"tools": mcp2_server.url}, timeouts={"total": 1.0})
    async with mcp2_client(endpoint(running)) as client:
        async with client.listen(tools_list_changed=True) as subscription:
            opened = time.monotonic()
            await until(lambda: time.monotonic() - opened > 1.3, what="the stream to outlive the total timeout")
            assert (await client.call_tool("announce", {})).content[0].text == "announced"  # type: ignore[union-attr]
            event = await asyncio.wait_for(subscription.__anext__(), 10)
    assert "ToolsListChanged" in type(event).__name__
    [listen] = collector.matching(lambda c: c.meta["mcp"].get("method") == "subscriptions/listen")
    assert listen.stream and listen.error_code is None and listen.status == 200
    assert listen.outcome == "ok" or (listen.outcome, listen.meta["mcp"]["closed_by"]) == ("closed", "agent")
