"""MCP over Streamable HTTP: JSON-RPC 2.0 messages, answered with JSON or SSE.

Both revisions in use travel the same way, one JSON-RPC message per POST to one endpoint:

- 2025-11-25 (the `mcp` SDK 1.x, and 2.x in legacy mode): `initialize` first; the server names the
  session in an `Mcp-Session-Id` response header that the client sends on every later request; replies
  come as JSON or as an SSE stream (progress notifications, then the response); a GET opens a
  long-lived event stream for server-initiated messages; a DELETE ends the session.
- 2026-07-28 (the `mcp` SDK 2.x): stateless. `server/discover` instead of the handshake, every
  request carries its own protocol version in `_meta` and in `Mcp-Method` / `Mcp-Name` headers, and
  replies are mostly JSON (SSE only when a handler streams notifications).

Every interlock error on an MCP route is a JSON-RPC error carrying the request's id, so the SDK
resolves the pending call with it instead of hanging or tearing the session down.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from interlock.core.call import Call, Reply
from interlock.core.views import Event, RequestView, TextSlot, ToolCall
from interlock.protocols.base import (
    Adapter,
    BadRequest,
    StreamText,
    _json_headers,
    decoded_body,
    dump_body,
    json_strings,
    parse_json_body,
)
from interlock.protocols.sse import iter_events

# JSON-RPC 2.0 error codes (https://www.jsonrpc.org/specification#error_object).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
#: interlock's own refusals (policy, guardrails, limits, upstream failures): the implementation-defined
#: server-error range. The interlock code (`policy_denied`, `pii_blocked`...) is in `error.data.code`.
SERVER_ERROR = -32001

#: The 2026-07-28 request whose reply is a long-lived stream of server events.
LISTEN = "subscriptions/listen"
#: The 2.x clients' era probe (2026-07-28); a server of the handshake era answers it 4xx.
DISCOVER = "server/discover"

_RPC_CODES = {
    "invalid_json": PARSE_ERROR,
    "invalid_request": INVALID_REQUEST,
    "batch_not_supported": INVALID_REQUEST,
    "body_too_large": INVALID_REQUEST,
    "method_not_found": METHOD_NOT_FOUND,
    "invalid_params": INVALID_PARAMS,
    "internal_error": INTERNAL_ERROR,
}


@dataclass(slots=True)
class McpView(RequestView):
    """One JSON-RPC message: a request (method and id), a notification (method), or the client's
    response to a server request (id only). `operation` is the method, "response", or "mcp" for the
    GET event stream and the DELETE that ends a session (`kind` "stream" / "end_session")."""

    kind: str = "request"  # "request", "notification", "response", "stream", "end_session"
    rpc_id: Any = None
    method: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def expects_reply(self) -> bool:
        """A request: the server owes exactly one JSON-RPC response with the same id."""
        return self.kind == "request"


#: The message being handled by the current task (one proxied call per asyncio task). error_reply()
#: and stream_error_event() have no call argument in the adapter contract, yet a JSON-RPC error must
#: carry the request's id or the client cannot match it to the pending call; parse() sets this.
_CURRENT: ContextVar[McpView | None] = ContextVar("interlock_mcp_message", default=None)


class McpAdapter(Adapter):
    name = "mcp"
    title = "MCP"
    json_body = True
    is_jsonrpc = True
    tool_server = True
    opaque = False
    default_path = "/mcp"
    #: The JSON-RPC `id` is a counter on the client: replayed requests match without it, and the
    #: recorded response is given the incoming id.
    volatile_fields = frozenset({"id"})

    def rpc_id(self, data: Any) -> Any:
        return data.get("id") if isinstance(data, dict) else None

    def reply_with_id(self, body: bytes, rpc_id: Any) -> bytes:
        return _with_id(body, rpc_id)

    def event_with_id(self, event: Event, rpc_id: Any) -> Event:
        raw = event.raw
        if b'"id"' not in raw:
            return event
        # Each data line that holds a response gets the id; every other byte is kept as it came.
        lines = raw.split(b"\n")
        for i, line in enumerate(lines):
            if line.startswith(b"data:"):
                payload = line[5:].strip()
                rewritten = _with_id(payload, rpc_id)
                if rewritten is not payload:
                    lines[i] = b"data: " + rewritten
        new = b"\n".join(lines)
        return event if new == raw else next(iter_events(new), event)

    def may_resend(self, method: str, operation: str | None) -> bool:
        return operation != "tools/call"  # a tool may act on the world

    def reassemble(self, events: list[dict[str, Any]]) -> Any:
        return events  # the JSON-RPC messages of the stream, in order

    def sample_body(
        self, path: str, text: str, model: str | None, tools: Sequence[str], tool: tuple[str, Any] | None = None
    ) -> dict[str, Any] | None:
        # `tools/call` of the case's tool (name, arguments), else `tools/list`.
        if tool is None:
            return {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        return {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool[0], "arguments": tool[1]}}

    def parse(self, call: Call) -> RequestView:
        if call.method == "GET":
            view = McpView(operation="mcp", kind="stream", stream=True)
        elif call.method == "DELETE":
            view = McpView(operation="mcp", kind="end_session")
        elif call.method != "POST":
            view = McpView(operation="mcp", kind="http")
        else:
            view = _parse_message(call)
        _CURRENT.set(view)
        return view

    def open_ended(self, call: Call) -> bool:
        # Streams of server events last as long as the agent keeps them: the GET event stream
        # (2025-11-25) and a `subscriptions/listen` request's reply (2026-07-28). No total timeout;
        # idle gaps still time out.
        view = call.view
        return call.method == "GET" or (isinstance(view, McpView) and view.method == LISTEN)

    def response_message(self, call: Call, *, agent: bool = False) -> dict[str, Any] | None:
        """The JSON-RPC response (result or error) answering this call's request, from a JSON body
        or from the SSE events; None if there is none (a notification, or a stream cut short).
        `agent`: as the agent received it, rather than as the upstream sent it."""
        view = call.view
        if not isinstance(view, McpView) or not view.expects_reply:
            return None
        return answer_in(self.response_messages(call, agent=agent), view.rpc_id)

    def response_messages(self, call: Call, *, agent: bool = False) -> list[dict[str, Any]]:
        """Every JSON-RPC message of the reply, in order (notifications and server requests
        included), as the upstream sent them (or, with `agent`, as the agent received them)."""
        if call.stream:
            chunks = call.agent_chunks if agent and call.agent_chunks is not None else call.chunks
            body = b"".join(c.data for c in chunks)
            return [m for e in iter_events(body) if (m := _load(e.data)) is not None]
        raw = call.agent_response_body if agent and call.agent_response_body is not None else call.response_body
        message = _load(decoded_body(raw, call.response_headers))
        return [message] if message is not None else []

    def response_texts(self, data: Any) -> list[TextSlot]:
        """Texts a model will read in a JSON-RPC response message; paths start at the message."""
        if not isinstance(data, dict) or not isinstance(data.get("result"), dict):
            return []
        return result_texts(data["result"], ("result",))

    def stream_texts(self, event: str | None, data: Any) -> list[StreamText]:
        """An SSE event of an MCP reply carries whole JSON-RPC messages: a result's texts are whole."""
        return [
            StreamText(
                ".".join(str(p) for p in slot.path), slot.path, slot.text, delta=False, json_text=_is_json(slot.text)
            )
            for slot in self.response_texts(data)
        ]

    def tools_in_list(self, data: Any) -> list[str]:
        """Tool names in a `tools/list` response message."""
        tools = data.get("result", {}).get("tools") if isinstance(data, dict) else None
        return [t["name"] for t in tools or [] if isinstance(t, dict) and isinstance(t.get("name"), str)]

    def remove_tools(self, data: Any, names: set[str] | frozenset[str]) -> list[str]:
        """Remove these tools from a `tools/list` response message in place; returns those removed."""
        tools = data.get("result", {}).get("tools") if isinstance(data, dict) else None
        if not isinstance(tools, list):
            return []
        removed = [t["name"] for t in tools if isinstance(t, dict) and t.get("name") in names]
        if removed:
            data["result"]["tools"] = [t for t in tools if not (isinstance(t, dict) and t.get("name") in names)]
        return removed

    def response_tool_calls(self, data: Any) -> list[ToolCall]:
        return []

    def error_reply(self, status: int, code: str, message: str, *, retryable: bool = True) -> Reply:
        current = _CURRENT.get()
        rpc_id = current.rpc_id if current is not None else None
        # A request gets its answer as HTTP 200 + a JSON-RPC error: the `mcp` SDK 1.x client calls
        # raise_for_status() on any other status, which tears down the whole session rather than
        # failing the one call. Anything without an id to answer keeps the HTTP status (the spec's
        # rule for rejected notifications and responses).
        if current is not None and current.expects_reply:
            status = 200
        body = json_rpc_error(rpc_id, code, message)
        return Reply(status, body, _json_headers(retryable))

    def stream_error_event(self, code: str, message: str) -> bytes:
        current = _CURRENT.get()
        if current is None or not current.expects_reply:
            # The GET event stream: no request to answer; a comment ends it without confusing the client.
            line = f": interlock {code}: {' '.join(message.split())}\n\n"
            return line.encode("utf-8", "replace")
        return sse_message(json.loads(json_rpc_error(current.rpc_id, code, message)))


def is_mcp(protocol: str) -> bool:
    """Whether a route or call of this protocol speaks MCP (the MCP stages apply to it)."""
    return protocol == McpAdapter.name


def answer_in(messages: list[dict[str, Any]], rpc_id: Any) -> dict[str, Any] | None:
    """The JSON-RPC response (result or error) to request `rpc_id` among a reply's messages, or None."""
    for message in messages:
        if "method" not in message and ("result" in message or "error" in message):
            if message.get("id") == rpc_id or message.get("id") is None:
                return message
    return None


def json_rpc_error(request_id: Any, code: str, message: str, rpc_code: int | None = None) -> bytes:
    """A JSON-RPC error response; interlock's own `code` is kept in `error.data.code`."""
    error = {"code": rpc_code or _RPC_CODES.get(code, SERVER_ERROR), "message": message, "data": {"code": code}}
    return dump_body({"jsonrpc": "2.0", "id": request_id, "error": error}, separators=None)


def _with_id(body: bytes, rpc_id: Any) -> bytes:
    """A JSON-RPC response carrying `rpc_id`; `body` itself when it is not a response."""
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return body
    if not isinstance(message, dict) or ("result" not in message and "error" not in message):
        return body
    message["id"] = rpc_id
    return dump_body(message)


def sse_message(message: dict[str, Any]) -> bytes:
    """One JSON-RPC message as an SSE `message` event, as MCP servers send them."""
    return b"event: message\ndata: " + dump_body(message, separators=None) + b"\n\n"


def rewrite_event(raw: bytes, message: dict[str, Any]) -> bytes:
    """The SSE event `raw` carrying `message` instead; its other fields (event, id, retry) are kept,
    so a client resuming with Last-Event-ID still can."""
    lines = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    kept = [line for line in lines if line and not line.startswith(b"data:")]
    data = dump_body(message, separators=None)
    return b"\n".join([*kept, b"data: " + data]) + b"\n\n"


def result_texts(result: dict[str, Any], path: tuple[str | int, ...]) -> list[TextSlot]:
    """Text in a tools/call, resources/read or prompts/get result: text content, embedded resource
    text, structured content's strings. Never ids, URIs, mime types or base64 blobs."""
    slots: list[TextSlot] = []
    for i, item in enumerate(result.get("content") or []):
        slots += _content_texts(item, (*path, "content", i))
    if "structuredContent" in result:
        slots += json_strings(result["structuredContent"], (*path, "structuredContent"), "tool_result")
    for i, item in enumerate(result.get("contents") or []):  # resources/read
        if isinstance(item, dict) and isinstance(item.get("text"), str):
            slots.append(TextSlot((*path, "contents", i, "text"), item["text"], "tool_result"))
    for i, item in enumerate(result.get("messages") or []):  # prompts/get
        if isinstance(item, dict):
            slots += _content_texts(item.get("content"), (*path, "messages", i, "content"))
    return slots


def _content_texts(item: Any, path: tuple[str | int, ...]) -> list[TextSlot]:
    if not isinstance(item, dict):
        return []
    if item.get("type") == "text" and isinstance(item.get("text"), str):
        return [TextSlot((*path, "text"), item["text"], "tool_result")]
    resource = item.get("resource")
    if item.get("type") == "resource" and isinstance(resource, dict) and isinstance(resource.get("text"), str):
        return [TextSlot((*path, "resource", "text"), resource["text"], "tool_result")]
    return []


def _parse_message(call: Call) -> McpView:
    view = McpView(operation="invalid", kind="invalid")
    _CURRENT.set(view)
    data = parse_json_body(call)
    if isinstance(data, list):
        # Streamable HTTP has carried one message per POST since 2025-06-18 (batching was removed).
        raise BadRequest("JSON-RPC batches are not supported: send one message per POST", "batch_not_supported")
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON-RPC 2.0 message (a JSON object)", "invalid_request")
    if _is_id(data.get("id")):
        view.rpc_id = data["id"]
        view.kind = "request"  # for error replies to carry the id even if the rest is malformed
    if data.get("jsonrpc") != "2.0":
        raise BadRequest('not a JSON-RPC 2.0 message: "jsonrpc" must be "2.0"', "invalid_request")
    if "id" in data and not _is_id(data["id"]):
        raise BadRequest("a JSON-RPC id must be a string or an integer", "invalid_request")
    method = data.get("method")
    params = data.get("params")
    if params is not None and not isinstance(params, dict):
        raise BadRequest("MCP params must be a JSON object", "invalid_request")
    view.params = params or {}
    if method is None:
        if "result" not in data and "error" not in data:
            raise BadRequest("a JSON-RPC message needs a method, a result or an error", "invalid_request")
        view.kind, view.operation = "response", "response"  # the client answering a server request
        if "id" not in data:
            raise BadRequest("a JSON-RPC response needs an id", "invalid_request")
    elif not isinstance(method, str) or not method:
        raise BadRequest("the JSON-RPC method must be a non-empty string", "invalid_request")
    else:
        view.method = view.operation = method
        view.kind = "request" if "id" in data else "notification"
    call.request_json = data
    if method == "tools/call":
        name = view.params.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest("tools/call needs params.name, the tool's name", "invalid_params")
        arguments = view.params.get("arguments")
        if arguments is not None and not isinstance(arguments, dict):
            raise BadRequest("tools/call params.arguments must be a JSON object", "invalid_params")
        view.tool_name = name
        view.tool_arguments = arguments if arguments is not None else {}
        view.tools = [name]
        view.texts = json_strings(view.tool_arguments, ("params", "arguments"), "tool_args")
    return view


def _is_json(text: str) -> bool:
    # A tool's structured result is often serialised JSON in a text block: values restored into it
    # must be escaped.
    return text.lstrip()[:1] in ("{", "[")


def _is_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _load(text: str | bytes) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        message = json.loads(text)
    except (UnicodeDecodeError, ValueError):  # ValueError: bad JSON, or a number past the int limit
        return None
    return message if isinstance(message, dict) else None
