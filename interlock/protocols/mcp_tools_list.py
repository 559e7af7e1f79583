"""Rewriting MCP `tools/list` answers, JSON or streamed: the base of the stages that change what
tools an agent sees (the policy's tool filter, policies/mcp_tools.py; the proxy's tool pins,
proxy/mcp_pins.py). Wire knowledge only, so it sits with the adapters both rooms stand on."""

from __future__ import annotations

import copy
import json
from typing import Any

from interlock.core.call import Call
from interlock.core.views import Event
from interlock.protocols import ADAPTERS
from interlock.protocols.base import dump_body, response_json
from interlock.protocols.mcp import McpAdapter, McpView, is_mcp, rewrite_event


class ToolsListRewriter:
    """The part of a stage that rewrites MCP `tools/list` answers (the policy's tool filter, the tool
    pins): `filter` changes the answer message in place and says whether it did. The reply may be
    JSON (set as the agent's body) or an SSE stream (the event carrying the answer is held until
    complete, rewritten, and released; notifications pass at once)."""

    def __init__(self) -> None:
        adapter = ADAPTERS["mcp"]
        assert isinstance(adapter, McpAdapter)
        self.adapter = adapter
        self._streams: set[str] = set()  # calls whose streamed answer this stage reads

    def applies(self, call: Call) -> bool:
        """Whether this call's answer is one to read (a tools/list this stage looks at)."""
        raise NotImplementedError

    def filter(self, call: Call, message: dict[str, Any]) -> bool:
        """Change the tools/list answer `message` in place; True if it changed."""
        raise NotImplementedError

    async def response(self, call: Call) -> None:
        if call.stream or not self.applies(call) or (call.status or 0) >= 400:
            return
        # What an earlier rewriter left for the agent, else the upstream's answer: rewrites chain.
        body = call.agent_response_body
        message = response_json(call) if body is None else _load_event(body.decode("utf-8", "replace"))
        if isinstance(message, dict) and self.filter(call, message):
            call.agent_response_body = dump_body(message)

    async def chunk(self, call: Call, events: list[Event], last: bool) -> list[Event]:
        if call.id not in self._streams:
            if not is_mcp(call.protocol) or not self.applies(call):
                return events  # not a tools/list reply this stage reads
            self._streams.add(call.id)
        rpc_id = call.view.rpc_id if isinstance(call.view, McpView) else None
        out: list[Event] = []
        # Whole events (the proxy splits them): the response never leaves half-sent before it is filtered.
        for event in events:
            message = event.json()
            if isinstance(message, dict) and "result" in message and message.get("id") == rpc_id:
                message = copy.deepcopy(message)  # the event's parse is shared: filtered on a copy
                if self.filter(call, message):
                    out.append(Event(rewrite_event(event.raw, message), event.event, None, message))
                    continue
            out.append(event)
        if last:
            self._streams.discard(call.id)
        return out

    async def seal(self, call: Call) -> None:
        self._streams.discard(call.id)


def _load_event(text: str) -> Any:
    if not text or text[0] != "{":
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None
