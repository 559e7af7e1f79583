"""What policy rules see about a call (`Subject`): built from a live Call, a recorded one, or a
`policy test` case. Its own module: the CEL conditions (cel.py) and the engine both read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from interlock.core.call import Call


@dataclass(slots=True)
class Subject:
    """What rules see about a call: built from a live Call, a recorded one, or a test case."""

    route: str
    protocol: str
    agent: str
    session: str | None
    model: str | None
    method: str
    path: str
    operation: str = "http"
    tools: tuple[str, ...] = ()  # offered to the model
    tool: str | None = None  # MCP tools/call
    tool_arguments: Any = None
    input_chars: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    host: str | None = None

    @classmethod
    def from_call(cls, call: Call, host: str | None = None) -> Subject:
        """`host`: the upstream's host name, lowercase (as `urlsplit(...).hostname` gives it)."""
        view = call.view
        method = call.method.upper()
        if view is None:
            return cls(call.route, call.protocol, call.agent, call.session, call.model, method, call.path, host=host)
        return cls(
            call.route,
            call.protocol,
            call.agent,
            call.session,
            view.model,
            method,
            call.path,
            view.operation,
            tuple(t for t in view.tools if isinstance(t, str)),  # the adapters refuse other names; never unhashable
            view.tool_name,
            view.tool_arguments,
            view.input_chars,
            view.params,
            view.stream,
            host,
        )
