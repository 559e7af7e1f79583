"""The MCP adapter and session stage alone, with made-up calls."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from interlock.core.call import Call, Chunk, new_id
from interlock.protocols import ADAPTERS, BadRequest
from interlock.protocols.mcp import McpAdapter, McpView, rewrite_event
from interlock.protocols.sse import iter_events
from interlock.proxy.mcp import McpRecord, McpSession

adapter = ADAPTERS["mcp"]
assert isinstance(adapter, McpAdapter)


def make_call(message: Any = None, method: str = "POST", headers: list[tuple[str, str]] | None = None) -> Call:
    body = b"" if message is None else (message if isinstance(message, bytes) else json.dumps(message).encode())
    return Call(
        id=new_id(),
        route="tools",
        protocol="mcp",
        method=method,
        path="/mcp",
        request_body=body,
        request_headers=headers or [],
    )


def parsed(message: Any, method: str = "POST", headers: list[tuple[str, str]] | None = None) -> Call:
    call = make_call(message, method, headers)
    call.view = adapter.parse(call)
    return call


def test_messages_are_told_apart_by_kind() -> None:
    request = parsed({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).view
    notification = parsed({"jsonrpc": "2.0", "method": "notifications/initialized"}).view
    response = parsed({"jsonrpc": "2.0", "id": "s-1", "result": {}}).view
    stream = parsed(None, "GET").view
    end = parsed(None, "DELETE").view
    assert [(v.kind, v.operation, v.rpc_id) for v in (request, notification, response, stream, end)] == [
        ("request", "tools/list", 1),
        ("notification", "notifications/initialized", None),
        ("response", "response", "s-1"),
        ("stream", "mcp", None),
        ("end_session", "mcp", None),
    ]
    assert request.expects_reply and not notification.expects_reply and not response.expects_reply


def test_a_tool_call_names_its_tool_and_the_texts_in_its_arguments() -> None:
    call = parsed(
        {
            "jsonrpc": "2.0",
            "id": 4,
            "method": "tools/call",
            "params": {"name": "send_email", "arguments": {"to": "a@b.com", "cc": ["c@d.com"], "n": 3}},
        }
    )
    view = call.view
    assert (view.tool_name, view.tool_arguments, view.tools) == (
        "send_email",
        {"to": "a@b.com", "cc": ["c@d.com"], "n": 3},
        ["send_email"],
    )
    assert [(s.path, s.text, s.role) for s in view.texts] == [
        (("params", "arguments", "to"), "a@b.com", "tool_args"),
        (("params", "arguments", "cc", 0), "c@d.com", "tool_args"),
    ]
    assert call.request_json["params"]["name"] == "send_email"


async def test_errors_carry_the_id_of_the_request_being_answered() -> None:
    async def answer(message: Any) -> tuple[int, Any]:
        try:
            parsed(message)
            await asyncio.sleep(0)  # let the other calls parse theirs in between
        except BadRequest as exc:
            reply = adapter.error_reply(exc.status, exc.code, exc.message)
        else:
            reply = adapter.error_reply(403, "policy_denied", "denied by policy rule 'x'")
        return reply.status, json.loads(reply.body)["id"]

    # One call per task, as the proxy runs them: each error names its own request.
    results = await asyncio.gather(
        answer({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "rm"}}),
        answer({"jsonrpc": "2.0", "id": "b", "method": "tools/call", "params": {}}),
        answer({"jsonrpc": "2.0", "method": "notifications/cancelled"}),
        answer(b"{broken"),
    )
    assert results == [(200, 7), (200, "b"), (403, None), (400, None)]


async def test_a_broken_stream_ends_with_an_error_for_the_request_or_a_comment() -> None:
    async def event(message: Any, method: str = "POST") -> bytes:
        parsed(message, method)
        await asyncio.sleep(0)
        return adapter.stream_error_event("stream_broken", "cut")

    request, stream = await asyncio.gather(
        event({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "x"}}), event(None, "GET")
    )
    assert request.startswith(b"event: message\ndata: ")
    assert json.loads(request.split(b"data: ", 1)[1]) == {
        "jsonrpc": "2.0",
        "id": 3,
        "error": {"code": -32001, "message": "cut", "data": {"code": "stream_broken"}},
    }
    assert stream == b": interlock stream_broken: cut\n\n"


def test_result_texts_are_what_a_model_reads_and_nothing_else() -> None:
    message = {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {
            "content": [
                {"type": "text", "text": "hello"},
                {"type": "image", "data": "aGVsbG8=", "mimeType": "image/png"},
                {"type": "resource", "resource": {"uri": "file:///a", "text": "inside"}},
            ],
            "structuredContent": {"greeting": "hi", "count": 2},
            "isError": False,
        },
    }
    assert [(s.path, s.text) for s in adapter.response_texts(message)] == [
        (("result", "content", 0, "text"), "hello"),
        (("result", "content", 2, "resource", "text"), "inside"),
        (("result", "structuredContent", "greeting"), "hi"),
    ]
    read = {
        "jsonrpc": "2.0",
        "id": 2,
        "result": {"contents": [{"uri": "u", "text": "doc"}, {"uri": "v", "blob": "AA"}]},
    }
    assert [s.path for s in adapter.response_texts(read)] == [("result", "contents", 0, "text")]
    [streamed] = adapter.stream_texts(
        "message", {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": '{"a": 1}'}]}}
    )
    assert (streamed.key, streamed.delta, streamed.json_text) == ("result.content.0.text", False, True)


def test_listed_tools_are_removed_not_renamed() -> None:
    message = {"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": "add"}, {"name": "rm"}, {"name": "ls"}]}}
    assert adapter.tools_in_list(message) == ["add", "rm", "ls"]
    assert adapter.remove_tools(message, {"rm", "nope"}) == ["rm"]
    assert message["result"]["tools"] == [{"name": "add"}, {"name": "ls"}]


def test_a_rewritten_event_keeps_its_id_for_resumption() -> None:
    raw = b'event: message\r\nid: 42\r\ndata: {"jsonrpc":"2.0","id":1,"result":{}}\r\n\r\n'
    assert rewrite_event(raw, {"jsonrpc": "2.0", "id": 1, "result": {"tools": []}}) == (
        b'event: message\nid: 42\ndata: {"jsonrpc": "2.0", "id": 1, "result": {"tools": []}}\n\n'
    )


def test_the_response_is_found_after_notifications_in_chunks_split_anywhere() -> None:
    call = parsed({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "count"}})
    call.stream = True
    wire = (
        b'event: message\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}\n\n'
        b'event: message\ndata: {"jsonrpc":"2.0","id":9,"result":{"content":[],"isError":true}}\n\n'
    )
    call.chunks = [Chunk(0, wire[:50]), Chunk(1, wire[50:130]), Chunk(2, wire[130:])]
    assert adapter.response_message(call) == {"jsonrpc": "2.0", "id": 9, "result": {"content": [], "isError": True}}
    assert [m.get("method") for m in adapter.response_messages(call)] == ["notifications/progress", None]


@pytest.mark.parametrize(
    ("headers", "trace_session", "expected"),
    [
        ([("mcp-session-id", "m-1")], False, "m-1"),
        ([("mcp-session-id", "m-1"), ("x-interlock-session", "mine")], False, "mine"),
        ([("mcp-session-id", "m-1")], True, "m-1"),  # a session derived from traceparent gives way
    ],
)
async def test_the_mcp_session_is_the_calls_session_unless_the_agent_named_one(
    headers: list[tuple[str, str]], trace_session: bool, expected: str
) -> None:
    call = parsed({"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=headers)
    call.session = dict(headers).get("x-interlock-session")
    if trace_session:
        call.trace_id = call.session = "0af7651916cd43dd8448eb211c80319c"
    await McpSession().request(call)
    assert call.session == expected
    assert call.meta["mcp"]["session_id"] == "m-1"


async def test_the_initialize_reply_names_the_session() -> None:
    call = parsed({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}})
    stage = McpSession()
    await stage.request(call)
    call.response_headers = [("content-type", "text/event-stream"), ("mcp-session-id", "new-1")]
    await stage.response_head(call)
    assert call.session == "new-1" and call.meta["mcp"]["session_id"] == "new-1"
    assert call.meta["mcp"]["protocol_version"] == "2025-11-25"


async def test_a_stream_that_ends_unanswered_gets_an_error_event_and_is_recorded_as_such() -> None:
    call = parsed({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "slow"}})
    stage = McpSession()
    await stage.request(call)
    call.stream, call.status = True, 200
    call.chunks = [
        Chunk(1, b'event: message\ndata: {"jsonrpc":"2.0","method":"notifications/message","params":{}}\n\n')
    ]
    tail = b"".join(e.raw for e in await stage.chunk(call, [], True))
    assert json.loads(tail.split(b"data: ")[1])["id"] == 5
    assert (call.outcome, call.error_code, call.truncated) == ("upstream_error", "stream_closed_early", True)
    await McpRecord().seal(call)
    assert call.meta["mcp"]["answered"] is False
    assert call.meta["mcp"]["server_messages"] == ["notifications/message"]
    # An answered stream passes untouched.
    answered = parsed({"jsonrpc": "2.0", "id": 6, "method": "ping"})
    answered.stream = True
    answered.chunks = [Chunk(1, b'data: {"jsonrpc":"2.0","id":6,"result":{}}\n\n')]
    assert await stage.chunk(answered, [], True) == [] and answered.outcome == "ok"


async def test_an_unanswered_stream_ends_with_the_adapters_own_error_event(monkeypatch: pytest.MonkeyPatch) -> None:
    call = parsed({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "slow"}})
    stage = McpSession()
    made: list[tuple[str, str]] = []

    def stream_error_event(code: str, message: str) -> bytes:
        made.append((code, message))
        return b"event: message\ndata: {}\n\n"

    monkeypatch.setattr(stage.adapter, "stream_error_event", stream_error_event)
    call.stream, call.status = True, 200
    ping = list(iter_events(b": ping\n\n"))
    out = await stage.chunk(call, ping, True)
    assert b"".join(e.raw for e in out) == b": ping\n\nevent: message\ndata: {}\n\n"
    assert made == [("stream_closed_early", call.error)]


async def test_the_record_reads_the_reply_once(monkeypatch: pytest.MonkeyPatch) -> None:
    call = parsed({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "echo", "arguments": {}}})
    call.stream, call.status = True, 200
    call.chunks = [
        Chunk(1, b'event: message\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{}}\n\n'),
        Chunk(2, b'event: message\ndata: {"jsonrpc":"2.0","id":8,"result":{"content":[],"isError":true}}\n\n'),
    ]
    record = McpRecord()
    reads: list[Call] = []
    read = record.adapter.response_messages

    def response_messages(call: Call, *, agent: bool = False) -> list[dict[str, Any]]:
        reads.append(call)
        return read(call, agent=agent)

    monkeypatch.setattr(record.adapter, "response_messages", response_messages)
    await record.seal(call)
    assert len(reads) == 1
    meta = call.meta["mcp"]
    assert meta["server_messages"] == ["notifications/progress"]
    assert meta["answered"] is True and meta["is_error"] is True


def test_views_are_mcp_views() -> None:
    assert isinstance(parsed({"jsonrpc": "2.0", "id": 1, "method": "ping"}).view, McpView)


async def test_a_closed_event_stream_and_a_declined_probe_are_not_failures() -> None:
    # A healthy MCP session used to show as failing: the agent closing its GET event stream was
    # recorded `aborted`, and the 2.x client's server/discover probe answered 400 by a server of the
    # handshake era `upstream_error`. Both are how the protocol goes: `closed` and `unsupported`.
    stage = McpSession()
    listen = parsed(None, method="GET")
    await stage.request(listen)
    listen.stream, listen.status = True, 200
    listen.outcome, listen.error, listen.truncated = "aborted", "client disconnected", True
    await stage.seal(listen)
    assert (listen.outcome, listen.error, listen.truncated) == ("closed", None, False)
    assert listen.meta["mcp"]["closed_by"] == "agent"

    probe = parsed({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {}})
    await stage.request(probe)
    probe.status, probe.outcome, probe.error_code = 400, "upstream_error", "http_400"
    await stage.seal(probe)
    assert (probe.status, probe.outcome, probe.error_code) == (400, "unsupported", None)

    # The same answer to anything else, or a 5xx to the probe, is still the upstream's failure.
    for method, status in (("tools/list", 400), ("server/discover", 503)):
        failed = parsed({"jsonrpc": "2.0", "id": 2, "method": method})
        await stage.request(failed)
        failed.status, failed.outcome, failed.error_code = status, "upstream_error", f"http_{status}"
        await stage.seal(failed)
        assert failed.outcome == "upstream_error"
