"""The MCP stage: which session a JSON-RPC message belongs to, and what it did, for the record.

- Session: the server's `Mcp-Session-Id` (2025-11-25) is the call's session unless the agent named
  one with `X-Interlock-Session` (or a virtual key did), so a session's handshake, tool calls, event
  stream and DELETE group together. The `initialize` reply is where the id first appears.
- Record: `call.meta["mcp"]` holds the message's kind, method, JSON-RPC id, MCP session id and
  protocol revision, and for tools/call the tool's name, arguments, result and `isError` (the last
  by `McpRecord`, whose `seal` runs after the guardrails' and before the recorder's `done`).
- A server that ends a request's SSE stream before sending its response: the agent gets a JSON-RPC
  error for that id at once (instead of waiting out its read timeout) and the call is recorded as
  `upstream_error` / `stream_closed_early`, truncated. A JSON (or 202) reply without the response
  is answered and recorded the same way, as `no_answer`.
"""

from __future__ import annotations

import json
from typing import Any

from interlock.core.call import Call
from interlock.core.views import Event
from interlock.protocols import ADAPTERS
from interlock.protocols.mcp import DISCOVER, LISTEN, McpAdapter, McpView, answer_in, is_mcp

#: Tool arguments and results larger than this are not copied into `meta` (the body keeps them).
META_VALUE_LIMIT = 64 * 1024
#: Server messages listed per call (a long-lived event stream may carry thousands).
META_MESSAGES_LIMIT = 100

_VERSION_META_KEY = "io.modelcontextprotocol/protocolVersion"


class McpSession:
    """Session and record keeping for calls on `protocol: mcp` routes; other calls pass untouched."""

    name = "mcp"

    def __init__(self) -> None:
        adapter = ADAPTERS["mcp"]
        assert isinstance(adapter, McpAdapter)
        self.adapter = adapter

    async def request(self, call: Call) -> None:
        if not is_mcp(call.protocol):
            return
        if any(k == "accept-encoding" for k, _ in call.request_headers):
            # Ask the server for plain replies: a compressed SSE reply could not be read by the
            # tools/list filter or the guardrails (MCP messages are small; the hop is local).
            call.request_headers = [(k, v) for k, v in call.request_headers if k != "accept-encoding"]
        session_id = _header(call.request_headers, "mcp-session-id")
        if session_id:
            _adopt_session(call, session_id)
        view = call.view
        meta: dict[str, Any] = {"kind": view.kind if isinstance(view, McpView) else "invalid"}
        if isinstance(view, McpView):
            if view.method:
                meta["method"] = view.method
            if view.rpc_id is not None:
                meta["id"] = view.rpc_id
            if view.tool_name:
                meta["tool"] = view.tool_name
        if session_id:
            meta["session_id"] = session_id
        version = _protocol_version(call, view)
        if version:
            meta["protocol_version"] = version
        call.meta["mcp"] = meta

    async def response_head(self, call: Call) -> None:
        if not is_mcp(call.protocol):
            return
        session_id = _header(call.response_headers, "mcp-session-id")
        meta = call.meta.get("mcp")
        if session_id and isinstance(meta, dict) and "session_id" not in meta:
            meta["session_id"] = session_id  # the initialize reply names the new session
            _adopt_session(call, session_id)

    async def response(self, call: Call) -> None:
        if not is_mcp(call.protocol) or call.stream or call.reply is not None or not 200 <= (call.status or 0) < 300:
            return
        view = call.view
        if isinstance(view, McpView) and view.expects_reply and self.adapter.response_message(call) is None:
            # An empty or non-JSON-RPC body, or a 202, for a request: the 1.x client would wait
            # forever for an answer that cannot come. It gets a JSON-RPC error for its id instead.
            message = f"the server answered request id {view.rpc_id!r} with HTTP {call.status} and no JSON-RPC response"
            reply = self.adapter.error_reply(502, "no_answer", message, retryable=False)
            call.answer(reply, "upstream_error", "no_answer", message)

    async def chunk(self, call: Call, events: list[Event], last: bool) -> list[Event]:
        if not last or not is_mcp(call.protocol) or call.truncated:
            return events  # a broken stream (truncated) is ended by the app with stream_error_event
        view = call.view
        if isinstance(view, McpView) and view.expects_reply and self.adapter.response_message(call) is None:
            call.truncated = True
            call.outcome, call.error_code = "upstream_error", "stream_closed_early"
            call.error = f"the server ended the SSE stream without answering request id {view.rpc_id!r}"
            # The adapter's own error event: a JSON-RPC error for the id of the message being handled.
            error = self.adapter.stream_error_event("stream_closed_early", call.error)
            return [*events, Event(error, None, "")]
        return events

    async def seal(self, call: Call) -> None:
        if not is_mcp(call.protocol):
            return
        meta = call.meta.setdefault("mcp", {})
        view = call.view
        if not isinstance(view, McpView):
            return
        if (view.kind == "stream" or view.method == LISTEN) and call.outcome == "aborted":
            # The agent closing its event stream is how that stream normally ends: `closed`, not a
            # failure (replay holds such a stream open until the agent leaves, as here).
            call.outcome, call.error, call.truncated = "closed", None, False
            meta["closed_by"] = "agent"
        elif view.method == DISCOVER and call.outcome == "upstream_error" and 400 <= (call.status or 0) < 500:
            # The 2.x client's era probe: a server of the handshake era answers it 4xx, and the client
            # falls back to `initialize`, as the protocol means it to. Not an upstream failure.
            call.outcome, call.error_code = "unsupported", None
        elif call.outcome == "aborted" and call.stream and self.adapter.response_message(call, agent=True):
            # The SDK clients close a request's SSE stream the moment its response arrives, often
            # before the server's end of stream reaches interlock: the exchange was complete.
            call.outcome, call.error, call.truncated = "ok", None, False
            meta["closed_by"] = "agent"


class McpRecord:
    """Copies what an MCP message did into `call.meta["mcp"]` (tool arguments and result, isError,
    listed tools, errors), from the bodies as they will be stored: it runs after the guardrails
    stage has put the redacted form in place, just before the recorder, so no raw value the
    guardrails acted on is copied into meta."""

    name = "mcp_record"

    def __init__(self) -> None:
        adapter = ADAPTERS["mcp"]
        assert isinstance(adapter, McpAdapter)
        self.adapter = adapter

    async def seal(self, call: Call) -> None:
        view = call.view
        if not is_mcp(call.protocol):
            return
        if not isinstance(view, McpView):
            call.meta["mcp"] = _rejected(call)
            return
        meta = call.meta.setdefault("mcp", {})
        if view.method == "tools/call":
            try:
                sent = json.loads(call.request_body)
            except (UnicodeDecodeError, ValueError):  # ValueError: bad JSON, or a number past the int limit
                sent = None
            if isinstance(sent, dict) and isinstance(sent.get("params"), dict):
                meta["arguments"] = _bounded(sent["params"].get("arguments"))
        if call.reply is not None or call.status is None:
            return
        messages = self.adapter.response_messages(call)
        server_messages = [m["method"] for m in messages if isinstance(m.get("method"), str)]
        if server_messages:
            meta["server_messages"] = server_messages[:META_MESSAGES_LIMIT]
        if not view.expects_reply:
            return
        answer = answer_in(messages, view.rpc_id)  # the reply is parsed once, above
        meta["answered"] = answer is not None
        if answer is None:
            return
        if "error" in answer:
            error = answer.get("error")
            meta["error"] = error if isinstance(error, dict) else {"message": str(error)}
        elif view.method == "tools/call" and isinstance(answer.get("result"), dict):
            result = answer["result"]
            meta["is_error"] = result.get("isError") is True
            meta["result"] = _bounded(result)
        elif view.method == "tools/list":
            meta["tools"] = self.adapter.tools_in_list(answer)
        elif view.method in ("initialize", DISCOVER) and isinstance(answer.get("result"), dict):
            result = answer["result"]
            info = result.get("serverInfo")
            if isinstance(info, dict):
                meta["server"] = {k: info[k] for k in ("name", "version") if k in info}
            if isinstance(result.get("protocolVersion"), str):
                meta["protocol_version"] = result["protocolVersion"]


def _rejected(call: Call) -> dict[str, Any]:
    """What can be told of a message the adapter refused (malformed, a batch, too large)."""
    meta: dict[str, Any] = {"kind": "invalid"}
    try:
        data = json.loads(call.request_body)
    except (UnicodeDecodeError, ValueError):  # ValueError: bad JSON, or a number past the int limit
        return meta
    if isinstance(data, dict):
        if isinstance(data.get("method"), str):
            meta["method"] = data["method"]
        if isinstance(data.get("id"), str | int) and not isinstance(data.get("id"), bool):
            meta["id"] = data["id"]
    elif isinstance(data, list):
        meta["kind"] = "batch"
    return meta


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value.strip() or None
    return None


def _adopt_session(call: Call, session_id: str) -> None:
    """Use the MCP session as the call's session unless the agent or its virtual key named one."""
    explicit = _header(call.request_headers, "x-interlock-session")
    if explicit is None and (call.session is None or call.session == call.trace_id):
        call.session = session_id


def _protocol_version(call: Call, view: Any) -> str | None:
    version = _header(call.request_headers, "mcp-protocol-version")
    if version:
        return version
    if isinstance(view, McpView):
        meta = view.params.get("_meta")
        if isinstance(meta, dict) and isinstance(meta.get(_VERSION_META_KEY), str):
            return str(meta[_VERSION_META_KEY])
        if view.method == "initialize" and isinstance(view.params.get("protocolVersion"), str):
            return str(view.params["protocolVersion"])
    return None


def _bounded(value: Any) -> Any:
    size = len(json.dumps(value, ensure_ascii=False, default=str))
    return value if size <= META_VALUE_LIMIT else {"omitted": f"{size} bytes, over the meta limit; see the body"}
