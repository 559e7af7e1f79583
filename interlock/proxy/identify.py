"""The identify stage: which agent, which session, which workflow, which trace."""

from __future__ import annotations

import re

from interlock.config import Settings
from interlock.core.call import Call, Decision
from interlock.core.randpool import random_hex
from interlock.protocols import ADAPTERS
from interlock.proxy.upstream import query_key

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
    """The key the agent sent, as `Authorization: Bearer` or in its protocol's key header
    (`x-api-key`; Azure's `api-key`), else in its protocol's key query parameter (Gemini's `?key=`)."""
    adapter = ADAPTERS[call.protocol]
    names = adapter.agent_key_headers
    for name, value in call.request_headers:
        if name not in names:
            continue
        if name != "authorization":
            return value.strip()
        if value[:7].lower() == "bearer ":
            return value[7:].strip()
    return query_key(call, adapter.key_query_params) if adapter.key_query_params else None


class Identify:
    """Sets trace context, then agent, session and workflow: a virtual key decides them when it names
    them (a header never overrides a key), else the `X-Interlock-*` headers, else the default agent;
    a call with a valid `traceparent` and no session (workflow) named falls back to its trace id for
    both, so agents that pass one W3C trace along form one workflow with no interlock header at all.
    Agent names are case-folded, so `Alice` is the same agent as `alice` to every rule, limit and budget.

    With virtual keys, a header naming another agent (session, workflow) than the key is refused (403
    `identity_conflict`) or ignored (`identity.on_conflict`); a route with `require_key` refuses a
    call without a configured key (401) before anything is sent upstream (docs/security.md)."""

    name = "identify"

    def __init__(self, settings: Settings) -> None:
        self.default_agent = settings.default_agent.strip().casefold()
        self.virtual_keys = {
            key: (virtual.agent.strip().casefold(), virtual.session, virtual.workflow)
            for key, virtual in settings.virtual_keys.items()
        }
        self.refuse_conflicts = settings.identity.on_conflict == "refuse"
        self.require_key = frozenset(name for name, route in settings.routes.items() if route.require_key)

    async def request(self, call: Call) -> None:
        agent = session = workflow = traceparent = None
        for name, value in call.request_headers:
            if name == "x-interlock-agent":
                agent = value.strip().casefold() or None
            elif name == "x-interlock-session":
                session = value.strip() or None
            elif name == "x-interlock-workflow":
                workflow = value.strip() or None
            elif name == "traceparent":
                traceparent = value
        parent = parse_traceparent(traceparent) if traceparent else None
        if parent:
            call.trace_id, call.parent_span_id = parent
        else:
            call.trace_id = random_hex(32)
        call.span_id = random_hex(16)
        if self.virtual_keys:
            key = credential(call)
            virtual = self.virtual_keys.get(key) if key else None
            if virtual is not None:
                call.meta["virtual_key"] = True
                key_agent, key_session, key_workflow = virtual
                named = None
                if agent is not None and agent != key_agent:
                    named = f"{key_agent!r}, not agent {agent!r}"
                elif key_session is not None and session is not None and session != key_session:
                    named = f"session {key_session!r}, not {session!r}"
                elif key_workflow is not None and workflow is not None and workflow != key_workflow:
                    named = f"workflow {key_workflow!r}, not {workflow!r}"
                if named is not None and self.refuse_conflicts:
                    call.agent, call.session, call.workflow = key_agent, key_session, key_workflow
                    self._refuse(call, 403, "identity_conflict", f"the virtual key names {named}")
                    return
                agent, session, workflow = key_agent, key_session or session, key_workflow or workflow
            elif call.route in self.require_key:
                # Nobody proven: recorded as the default agent; a claimed name is only quoted.
                call.agent, call.session = self.default_agent, None
                claimed = f" (the call claimed agent {agent!r})" if agent else ""
                if key is None:
                    message = f"route {call.route!r} requires a virtual key{claimed}"
                    self._refuse(call, 401, "missing_api_key", message)
                else:
                    message = f"the key is not a virtual key of route {call.route!r}{claimed}"
                    self._refuse(call, 401, "invalid_api_key", message)
                return
        call.agent = agent or self.default_agent
        call.session = session or (call.trace_id if parent else None)
        call.workflow = workflow or (call.trace_id if parent else None)

    @staticmethod
    def _refuse(call: Call, status: int, code: str, message: str) -> None:
        reply = ADAPTERS[call.protocol].error_reply(status, code, message, retryable=False)
        call.answer(reply, "denied", code, message)
        call.decide(Decision("identify", "deny", reason=message))
