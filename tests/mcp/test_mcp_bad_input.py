"""Bad input on an MCP route: JSON-RPC errors in the shape MCP clients read, never a 500."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from interlock.testing import Running, free_port
from tests.mcp.servers import Collector, ThreadServer, mcp2_client, wait_for

HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
}


@pytest.fixture
def running(mcp_interlock: Any, mcp2_server: ThreadServer) -> Running:
    return mcp_interlock({"tools": mcp2_server.url}, max_body_bytes=4096)  # type: ignore[no-any-return]


def post(running: Running, body: bytes | str, headers: dict[str, str] | None = None) -> httpx.Response:
    content = body.encode() if isinstance(body, str) else body
    return httpx.post(running.url + "/tools/mcp", content=content, headers={**HEADERS, **(headers or {})})


@pytest.mark.parametrize(
    ("body", "status", "rpc_id", "rpc_code", "code"),
    [
        ("{not json", 400, None, -32700, "invalid_json"),
        ("", 400, None, -32700, "invalid_json"),
        ('[{"jsonrpc":"2.0","id":1,"method":"ping"}]', 400, None, -32600, "batch_not_supported"),
        ('"just a string"', 400, None, -32600, "invalid_request"),
        ('{"jsonrpc":"1.0","id":7,"method":"ping"}', 200, 7, -32600, "invalid_request"),
        ('{"jsonrpc":"2.0","id":"a-1","method":"tools/list","params":[1]}', 200, "a-1", -32600, "invalid_request"),
        ('{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{}}', 200, 8, -32602, "invalid_params"),
        (
            '{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"add","arguments":[1]}}',
            200,
            9,
            -32602,
            "invalid_params",
        ),
        ('{"jsonrpc":"2.0","id":true,"method":"ping"}', 400, None, -32600, "invalid_request"),
        ('{"jsonrpc":"2.0","id":10}', 200, 10, -32600, "invalid_request"),
        ('{"jsonrpc":"2.0","method":""}', 400, None, -32600, "invalid_request"),
    ],
)
def test_malformed_messages_get_json_rpc_errors_and_never_reach_the_server(
    running: Running, collector: Collector, body: str, status: int, rpc_id: Any, rpc_code: int, code: str
) -> None:
    response = post(running, body)
    assert response.status_code == status
    # A request (it has an id) is answered 200 with a JSON-RPC error for that id; anything else
    # keeps the HTTP status, as the spec asks for rejected messages without an id.
    assert response.headers["content-type"] == "application/json"
    reply = response.json()
    assert (reply["jsonrpc"], reply["id"], reply["error"]["code"]) == ("2.0", rpc_id, rpc_code)
    assert reply["error"]["data"] == {"code": code}
    [call] = collector.wait(1)
    assert (call.outcome, call.error_code, call.attempts) == ("bad_request", code, [])
    assert call.meta["mcp"]["kind"] in ("invalid", "batch") and call.meta["mcp"].get("id") == rpc_id


def test_an_unknown_method_gets_the_servers_json_rpc_error(running: Running, collector: Collector) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "no/such", "params": {"_meta": MODERN_META}})
    response = post(running, body, {"mcp-protocol-version": "2026-07-28", "mcp-method": "no/such"})
    assert response.status_code == 404  # the 2026-07-28 spelling of "method not found", relayed as is
    assert response.json()["error"]["code"] == -32601 and response.json()["id"] == 1
    [call] = collector.wait(1)
    assert call.outcome == "upstream_error" and call.meta["mcp"] == {
        "kind": "request",
        "method": "no/such",
        "id": 1,
        "protocol_version": "2026-07-28",
        "answered": True,
        "error": {"code": -32601, "message": "Method not found", "data": "no/such"},
    }


async def test_an_oversized_message_is_a_json_rpc_error_the_sdk_shows(running: Running, collector: Collector) -> None:
    arguments = {"text": "x" * 5000}
    body = json.dumps(
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "echo", "arguments": arguments}}
    )
    response = post(running, body)
    assert response.status_code == 413  # the body was not read, so its id is unknown: HTTP says it
    assert response.json()["error"] == {
        "code": -32600,
        "message": "request body over the limit of 4096 bytes",
        "data": {"code": "body_too_large"},
    }
    async with mcp2_client(running.url + "/tools/mcp") as client:
        with pytest.raises(MCPError) as refused:
            await client.call_tool("echo", {"text": "x" * 5000})
        assert refused.value.error.data == {"code": "body_too_large"}
        assert (await client.call_tool("echo", {"text": "short"})).content[0].text == "short"  # type: ignore[union-attr]
    wait_for(lambda: len([c for c in collector.calls if c.error_code == "body_too_large"]) == 2)


def test_an_unreachable_server_answers_the_request_id(mcp_interlock: Any, collector: Collector) -> None:
    running: Running = mcp_interlock({"tools": f"http://127.0.0.1:{free_port()}"})
    response = post(running, '{"jsonrpc":"2.0","id":"x9","method":"tools/list"}')
    assert response.status_code == 200
    reply = response.json()
    assert reply["id"] == "x9" and reply["error"]["data"] == {"code": "upstream_unreachable"}
    # No id to answer (the GET event stream): the HTTP status says it.
    stream = httpx.get(running.url + "/tools/mcp", headers={"accept": "text/event-stream"})
    assert stream.status_code == 502 and stream.json()["id"] is None
