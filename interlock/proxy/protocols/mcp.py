"""MCP over Streamable HTTP: JSON-RPC 2.0 messages, JSON or SSE replies."""

from __future__ import annotations

import json
from typing import Any

from interlock.proxy.protocols.base import Adapter, BadRequest, RequestView, TextSlot, _json_headers, parse_json_body
from interlock.tracing.call import Call, Reply

#: JSON-RPC error code interlock uses for its own refusals (implementation-defined server error range).
SERVER_ERROR = -32001


class McpAdapter(Adapter):
    name = "mcp"
    json_body = True

    def parse(self, call: Call) -> RequestView:
        if call.method != "POST":
            return RequestView(operation="mcp")
        data = parse_json_body(call)
        if isinstance(data, list):
            raise BadRequest("JSON-RPC batches are not supported by MCP Streamable HTTP", "invalid_request")
        if not isinstance(data, dict) or data.get("jsonrpc") != "2.0":
            raise BadRequest("not a JSON-RPC 2.0 message", "invalid_request")
        call.request_json = data
        method = data.get("method")
        view = RequestView(operation=str(method) if method else "response")
        params: dict[str, Any] = data["params"] if isinstance(data.get("params"), dict) else {}
        if method == "tools/call":
            view.tool_name = params.get("name") if isinstance(params.get("name"), str) else None
            view.tool_arguments = params.get("arguments")
            if view.tool_name:
                view.tools = [view.tool_name]
            view.texts = _strings(view.tool_arguments, ("params", "arguments"))
        return view

    def error_reply(self, status: int, code: str, message: str, *, retryable: bool = True) -> Reply:
        return Reply(200 if status < 500 else status, json_rpc_error(None, code, message), _json_headers(retryable))


def json_rpc_error(request_id: Any, code: str, message: str, rpc_code: int = SERVER_ERROR) -> bytes:
    if code == "invalid_json":
        rpc_code = -32700
    elif code == "invalid_request":
        rpc_code = -32600
    error = {"code": rpc_code, "message": message, "data": {"code": code}}
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode()


def _strings(value: Any, path: tuple[str | int, ...]) -> list[TextSlot]:
    if isinstance(value, str):
        return [TextSlot(path, value, "tool_args")]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(v, (*path, k))]
    if isinstance(value, list):
        return [s for i, v in enumerate(value) for s in _strings(v, (*path, i))]
    return []
