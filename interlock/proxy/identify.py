"""The identify stage: which agent, which session, which trace."""

from __future__ import annotations

import os
import re

from interlock.config import Settings
from interlock.tracing.call import Call

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def parse_traceparent(value: str) -> tuple[str, str] | None:
    """(trace id, parent span id) from a W3C traceparent, or None if it is malformed or all zeros."""
    match = _TRACEPARENT.match(value.strip().lower())
    if not match or match.group(1) == "ff":
        return None
    trace_id, span_id = match.group(2), match.group(3)
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return trace_id, span_id


def credential(call: Call) -> str | None:
    """The key the agent sent, as `Authorization: Bearer` or `x-api-key`."""
    for name, value in call.request_headers:
        if name == "authorization" and value[:7].lower() == "bearer ":
            return value[7:].strip()
        if name == "x-api-key":
            return value.strip()
    return None


class Identify:
    """Sets agent and session (headers, then virtual key, then the default) and trace context."""

    name = "identify"

    def __init__(self, settings: Settings) -> None:
        self.default_agent = settings.default_agent
        self.virtual_keys = settings.virtual_keys

    async def request(self, call: Call) -> None:
        agent = session = traceparent = None
        for name, value in call.request_headers:
            if name == "x-interlock-agent":
                agent = value.strip() or None
            elif name == "x-interlock-session":
                session = value.strip() or None
            elif name == "traceparent":
                traceparent = value
        if self.virtual_keys:
            key = credential(call)
            virtual = self.virtual_keys.get(key) if key else None
            if virtual is not None:
                call.meta["virtual_key"] = True
                agent = agent or virtual.agent
                session = session or virtual.session
        parent = parse_traceparent(traceparent) if traceparent else None
        if parent:
            call.trace_id, call.parent_span_id = parent
        else:
            call.trace_id = os.urandom(16).hex()
        call.span_id = os.urandom(8).hex()
        call.agent = agent or self.default_agent
        call.session = session or (call.trace_id if parent else None)
