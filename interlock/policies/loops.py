"""Loop detection: a policy rule's `loop:` notices an agent going round in circles within a session.

Three kinds of loop (docs/policies.md, "Loops", says the same for users):

- `tool_calls`: the same tool call (name + arguments, canonical JSON) seen N times among the
  session's last `window` tool calls. Read from the model's answers (non-streamed, and streams put
  back together) and from MCP `tools/call` requests; the two are counted apart, so an agent that
  runs the model's call through MCP is not counted twice per turn.
- `requests`: the same request N times among the session's last `window` requests. A request is
  compared by its new turn (the messages from the last assistant message on, without tool-call ids,
  which a model makes up afresh each time): the conversation grows, and a loop is the same turn
  growing it again and again.
- `tool_errors`: the same tool error N times in a row for one tool: MCP `tools/call` replies with
  `isError` or a JSON-RPC error, and Anthropic `tool_result` blocks with `is_error` in a request
  (OpenAI tool messages carry no error flag: nothing to count there).

The call where the Nth sighting happens is the one acted on: a request is refused before it is
sent, a model's answer that repeats a tool call is replaced (non-streamed) or its stream ended with
the protocol's error event before the repeated call reaches the agent (the stream's tool call is
held until the stream ends, only under an enforcing `tool_calls` check). An MCP tool error is seen
in a reply that already went to the agent, so a tool-error loop under `deny` refuses that tool's
later calls in the session. Every sighting of a loop is a `loop` decision on the call.

State is per session (calls without one count per agent), in memory, bounded: at most
`MAX_SESSIONS` sessions (least recently used forgotten first), each forgotten after `IDLE_TTL`
seconds without a call, and per session at most `window` entries per kind and `MAX_TOOLS` error
streaks. It is not shared between replicas (the decision and why are in docs/policies.md): a loop
split over k replicas is still caught, after up to k times as many repeats; stopping a session
goes through the kill switch, which is shared.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from interlock.core.call import Call, Decision
from interlock.core.views import Event, ToolCall
from interlock.protocols import ADAPTERS
from interlock.protocols.conversation import ChatMessage
from interlock.protocols.mcp import McpAdapter, McpView

if TYPE_CHECKING:
    from interlock.policies.engine import CompiledRule
    from interlock.policies.stage import Escalation

log = logging.getLogger("interlock.policies")

#: The error code of a call refused because of a loop.
LOOP_CODE = "loop_detected"
#: Sessions remembered at once; the least recently used is forgotten first.
MAX_SESSIONS = 10_000
#: A session without a call for this long is forgotten (seconds).
IDLE_TTL = 3600.0
#: Tools with an error streak remembered per session.
MAX_TOOLS = 256

#: Stops a session through the kill switch: (session, reason). None: no kill switch in this build.
SessionStopper = Callable[[str, str], Awaitable[None]]


def _digest(*parts: str) -> bytes:
    """A short fixed-size key: what a session remembers is bounded whatever the arguments' size."""
    return hashlib.blake2b("\x00".join(parts).encode("utf-8", "surrogatepass"), digest_size=16).digest()


def canonical_arguments(arguments: Any) -> str:
    """Arguments as canonical JSON (sorted keys, no spaces): `{"a":1,"b":2}` and `{ "b": 2, "a": 1 }`
    are the same call. A model's arguments are JSON text; text that is not JSON is compared as is."""
    if isinstance(arguments, str):
        text = arguments
        try:
            arguments = json.loads(text)
        except ValueError:  # JSON's errors, and a number past Python's int-string limit
            return text.strip()
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def new_turn(messages: list[ChatMessage]) -> list[ChatMessage]:
    """The messages from the last assistant message on (all of them when there is none)."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "assistant":
            return messages[index:]
    return messages


def turn_key(model: str | None, turn: list[ChatMessage]) -> bytes:
    parts = [model or ""]
    for message in turn:
        calls = ";".join(f"{c.name}({canonical_arguments(c.arguments)})" for c in message.tool_calls)
        parts += [message.role, message.name or "", message.text, calls, "E" if message.error else ""]
    return _digest("request", *parts)


@dataclass(slots=True)
class _History:
    tool_calls: deque[bytes]
    requests: deque[bytes]
    #: tool → (error key, how many times in a row)
    errors: OrderedDict[str, tuple[bytes, int]] = field(default_factory=OrderedDict)
    #: tool → the rule and reason that refuse it (a tool-error loop under deny)
    blocked: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: (rule, kind) already escalated: one webhook event per loop, not per refused retry
    reported: set[tuple[str, str]] = field(default_factory=set)
    seen: float = 0.0


class LoopMemory:
    """Each session's recent tool calls, requests and tool-error streaks (bounded: module docstring)."""

    def __init__(self, max_sessions: int = MAX_SESSIONS, idle_ttl: float = IDLE_TTL) -> None:
        self.max_sessions = max_sessions
        self.idle_ttl = idle_ttl
        self._sessions: OrderedDict[str, _History] = OrderedDict()
        self.forgotten = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def history(self, scope: str, window: int, now: float) -> _History:
        sessions = self._sessions
        found = sessions.get(scope)
        if found is not None and now - found.seen > self.idle_ttl:
            del sessions[scope]
            found = None
        if found is None:
            self._expire(now)
            found = sessions[scope] = _History(deque(maxlen=window), deque(maxlen=window))
        else:
            sessions.move_to_end(scope)
            if (found.tool_calls.maxlen or 0) < window:  # a reloaded rule looks further back
                found.tool_calls = deque(found.tool_calls, maxlen=window)
                found.requests = deque(found.requests, maxlen=window)
        found.seen = now
        return found

    def _expire(self, now: float) -> None:
        sessions = self._sessions
        while sessions:
            oldest = next(iter(sessions.values()))
            if len(sessions) < self.max_sessions and now - oldest.seen <= self.idle_ttl:
                break
            sessions.popitem(last=False)
            self.forgotten += 1


def _count(entries: deque[bytes], key: bytes, window: int) -> int:
    start = max(0, len(entries) - window)
    return sum(1 for i in range(start, len(entries)) if entries[i] == key)


@dataclass(slots=True)
class _Sighting:
    rule: CompiledRule
    kind: str  # "tool_calls", "requests", "tool_errors"
    count: int
    what: str  # e.g. "tool call search({\"q\":\"x\"})"

    @property
    def enforced(self) -> bool:
        loop = self.rule.rule.loop
        return not self.rule.monitor and loop is not None and loop.action != "monitor"


@dataclass(slots=True)
class _Stream:
    """A streamed answer under an enforcing `tool_calls` check: its events, and those held back from
    the first one that names a tool (its call is judged when the stream is whole)."""

    events: list[Event] = field(default_factory=list)
    held: list[Event] = field(default_factory=list)


class LoopStage:
    """Counts what each session repeats and acts on a loop (after the policy stage, which sets
    `call.loop_rules`)."""

    name = "loops"

    def __init__(
        self,
        memory: LoopMemory | None = None,
        escalator: Escalation | None = None,
        stopper: SessionStopper | None = None,
        *,
        announce: bool = True,
    ) -> None:
        """`announce`: log each loop (once) and post it to the webhook; `policy test` does not."""
        self.memory = memory or LoopMemory()
        self.announce = announce
        self.escalator = escalator
        self.stopper = stopper
        self._streams: dict[str, _Stream] = {}
        mcp = ADAPTERS["mcp"]
        assert isinstance(mcp, McpAdapter)
        self.mcp = mcp

    # -- request: MCP tool calls, blocked tools, repeated requests, errors reported in a request ---

    async def request(self, call: Call) -> None:
        rules: list[CompiledRule] | None = call.loop_rules
        if not rules or call.reply is not None:
            return
        history = self._history(call, rules)
        view = call.view
        sightings: list[_Sighting] = []
        if isinstance(view, McpView):
            if view.method == "tools/call" and view.tool_name:
                blocked = history.blocked.get(view.tool_name)
                if blocked is not None:
                    rule_name, reason = blocked
                    call.decide(Decision("loop", "deny", rule_name, reason, {"kind": "tool_errors"}))
                    self._refuse(call, reason)
                    return
                key = _digest("mcp", view.tool_name, canonical_arguments(view.tool_arguments or {}))
                what = f"MCP tool call {view.tool_name!r} (same arguments)"
                sightings += _tally(history.tool_calls, key, rules, "tool_calls", what)
        elif ADAPTERS[call.protocol].model_api:
            messages = ADAPTERS[call.protocol].conversation(call.request_json, None)  # parsed once, by the adapter
            if messages:
                turn = new_turn(messages)
                what = f"request (the same new turn of {len(turn)} message{'s' if len(turn) != 1 else ''})"
                sightings += _tally(history.requests, turn_key(call.model, turn), rules, "requests", what)
                sightings += self._turn_errors(history, turn, rules)
        await self._act(call, history, sightings, before_sending=True)

    def _turn_errors(self, history: _History, turn: list[ChatMessage], rules: list[CompiledRule]) -> list[_Sighting]:
        """Tool results the agent reports as errors (Anthropic `is_error`) in the new turn."""
        names = {c.id: c.name for m in turn for c in m.tool_calls if c.id}
        found: list[_Sighting] = []
        for message in turn:
            if message.role != "tool" or message.tool_call_id is None:
                continue
            tool = names.get(message.tool_call_id, "?")
            found += _streak(history, tool, message.text if message.error else None, rules)
        return found

    # -- the model's tool calls: non-streamed at `response`, streamed through `chunk` --------------

    async def response(self, call: Call) -> None:
        rules: list[CompiledRule] | None = call.loop_rules
        if not rules or call.reply is not None or (call.status or 0) >= 400:
            return
        if call.stream or not ADAPTERS[call.protocol].model_api:
            return  # streams are judged in `chunk`
        await self.judge_answer(call, ADAPTERS[call.protocol].response_view(call).tool_calls)

    async def judge_answer(self, call: Call, tool_calls: Sequence[ToolCall], *, streamed: bool = False) -> str | None:
        """Count the tool calls of the model's answer to `call` (under `call.loop_rules`) and act on a
        loop; returns the refusal message (None: not refused). `policy test` calls this too."""
        rules: list[CompiledRule] = call.loop_rules or []
        history = self._history(call, rules)
        sightings = self._tool_calls(history, tool_calls, rules)
        return await self._act(call, history, sightings, before_sending=False, streamed=streamed)

    async def chunk(self, call: Call, events: list[Event], last: bool) -> list[Event]:
        rules: list[CompiledRule] | None = call.loop_rules
        adapter = ADAPTERS[call.protocol]
        if not rules or not adapter.model_api:
            return events
        stream = self._streams.get(call.id)
        if stream is None:
            if not any(_checks(r, "tool_calls") for r in rules):
                return events  # no rule counts tool calls: nothing in this stream to read
            stream = self._streams[call.id] = _Stream()
        holds = any(_checks(r, "tool_calls") and _enforces(r) for r in rules)
        out: list[Event] = []
        for event in events:
            stream.events.append(event)
            if holds and not stream.held and adapter.stream_tool_names(event):
                stream.held.append(event)  # from here on, held until the stream is whole
            elif stream.held:
                stream.held.append(event)
            else:
                out.append(event)
        if not last:
            return out
        del self._streams[call.id]
        if call.truncated or call.outcome == "blocked":
            return out + stream.held  # cut short already: nothing whole to judge
        message = adapter.reassemble_events(stream.events)  # the proxy's split, each event parsed once
        refusal = await self.judge_answer(call, adapter.response_tool_calls(message), streamed=True)
        if refusal is not None:
            return [*out, Event(adapter.stream_error_event(LOOP_CODE, refusal), None, "")]
        return out + stream.held

    def _tool_calls(self, history: _History, calls: Iterable[ToolCall], rules: list[CompiledRule]) -> list[_Sighting]:
        found: list[_Sighting] = []
        for tool_call in calls:
            # The reason names the tool, never its arguments: they may hold PII, and reasons are
            # recorded, logged and sent to the webhook.
            what = f"tool call {tool_call.name!r} (same arguments)"
            key = _digest("model", tool_call.name, canonical_arguments(tool_call.arguments))
            found += _tally(history.tool_calls, key, rules, "tool_calls", what)
        return found

    # -- MCP results: tool-error streaks ------------------------------------------------------------

    async def _mcp_result(self, call: Call, rules: list[CompiledRule]) -> None:
        view = call.view
        if not isinstance(view, McpView) or view.method != "tools/call" or not view.tool_name:
            return
        answer = self.mcp.response_message(call)
        if answer is None:
            return
        error: str | None = None
        if "error" in answer:
            error = canonical_arguments(answer.get("error"))
        elif isinstance(answer.get("result"), dict) and answer["result"].get("isError") is True:
            error = canonical_arguments(answer["result"].get("content"))
        history = self._history(call, rules)
        for sighting in _streak(history, view.tool_name, error, rules):
            reason = _reason(sighting)
            loop = sighting.rule.rule.loop
            assert loop is not None
            if sighting.enforced:
                history.blocked[view.tool_name] = (
                    sighting.rule.name,
                    f"{reason}: the tool's calls are refused for the rest of this session",
                )
                if len(history.blocked) > MAX_TOOLS:
                    history.blocked.pop(next(iter(history.blocked)))
            action = "monitor" if not sighting.enforced else loop.action
            detail = {"kind": sighting.kind, "count": sighting.count, "tool": view.tool_name}
            call.decide(Decision("loop", action, sighting.rule.name, reason, detail))
            self._note(call, history, sighting, action)
            if action == "stop_session":
                await self._stop(call, f"{reason} (policy rule {sighting.rule.name!r})")

    # -- acting --------------------------------------------------------------------------------

    async def _act(
        self,
        call: Call,
        history: _History,
        sightings: Sequence[_Sighting],
        *,
        before_sending: bool,
        streamed: bool = False,
    ) -> str | None:
        """Record every sighting; refuse the call for the first enforced one. Returns the refusal
        message (None: not refused)."""
        refusal: str | None = None
        for sighting in sightings:
            loop = sighting.rule.rule.loop
            assert loop is not None
            reason = _reason(sighting)
            detail = {"kind": sighting.kind, "count": sighting.count}
            if not sighting.enforced:
                call.decide(Decision("loop", "monitor", sighting.rule.name, f"would {loop.action}: {reason}", detail))
                self._note(call, history, sighting, "monitor")
                continue
            call.decide(Decision("loop", loop.action, sighting.rule.name, reason, detail))
            self._note(call, history, sighting, loop.action)
            if refusal is not None:
                continue
            refusal = f"stopped by policy rule {sighting.rule.name!r}: {reason}"
            if loop.action == "stop_session":
                await self._stop(call, f"{reason} (policy rule {sighting.rule.name!r})")
        if refusal is None:
            return None
        summary = call.meta.setdefault("policy", {})
        summary.update(decision="deny", reason=refusal)
        if streamed:
            call.outcome, call.error_code, call.error = "blocked", LOOP_CODE, refusal
        else:
            self._refuse(call, refusal, outcome="denied" if before_sending else "blocked")
        return refusal

    def _refuse(self, call: Call, message: str, outcome: str = "denied") -> None:
        adapter = ADAPTERS[call.protocol]
        reply = adapter.error_reply(403, LOOP_CODE, message, retryable=False)
        call.answer(reply, "denied" if outcome == "denied" else "blocked", LOOP_CODE, message)

    def _note(self, call: Call, history: _History, sighting: _Sighting, action: str) -> None:
        """The call's `meta["loop"]` (the UI's timeline reads it) and, once per loop, the webhook."""
        found = call.meta.setdefault("loop", [])
        if len(found) < 8:
            found.append({"rule": sighting.rule.name, "kind": sighting.kind, "count": sighting.count, "action": action})
        key = (sighting.rule.name, sighting.kind)
        if key in history.reported or not self.announce:
            return
        history.reported.add(key)
        log.warning(
            "call %s: loop in session %s: %s (rule %r, %s)",
            call.id,
            _scope(call),
            _reason(sighting),
            sighting.rule.name,
            action,
        )
        if self.escalator is not None and self.escalator.enabled:
            self.escalator.emit(
                "loop_detected",
                call_id=call.id,
                agent=call.agent,
                session=call.session,
                route=call.route,
                rule=sighting.rule.name,
                kind=sighting.kind,
                count=sighting.count,
                action=action,
            )

    async def _stop(self, call: Call, reason: str) -> None:
        if call.session is None or self.stopper is None:
            # Fail closed: the call is refused all the same; the record says the session could not be stopped.
            why = "the call has no session" if call.session is None else "no kill switch in this interlock"
            call.decide(Decision("loop", "error", None, f"cannot stop the session: {why}; the call is refused"))
            return
        try:
            await self.stopper(call.session, reason)
        except Exception as exc:  # noqa: BLE001 - the refusal stands; the gap is recorded
            call.decide(Decision("loop", "error", None, f"cannot stop the session: {exc}; the call is refused"))
            log.warning("call %s: stopping session %s failed: %s", call.id, call.session, exc)

    def _history(self, call: Call, rules: list[CompiledRule]) -> _History:
        window = max((r.rule.loop.window for r in rules if r.rule.loop is not None), default=2)
        return self.memory.history(_scope(call), window, time.monotonic())

    async def seal(self, call: Call) -> None:
        self._streams.pop(call.id, None)
        rules: list[CompiledRule] | None = call.loop_rules
        # An MCP result is read here, not at `response`: the SDK clients close a reply's SSE stream
        # as soon as its answer arrives, and such a call reaches `seal` without a `response` hook.
        if rules and isinstance(call.view, McpView) and call.reply is None and (call.status or 0) < 400:
            await self._mcp_result(call, rules)


def _scope(call: Call) -> str:
    return f"session:{call.session}" if call.session else f"agent:{call.agent}"


def _checks(rule: CompiledRule, kind: str) -> bool:
    loop = rule.rule.loop
    return loop is not None and getattr(loop, kind) is not None


def _enforces(rule: CompiledRule) -> bool:
    loop = rule.rule.loop
    return not rule.monitor and loop is not None and loop.action != "monitor"


def _tally(entries: deque[bytes], key: bytes, rules: list[CompiledRule], kind: str, what: str) -> list[_Sighting]:
    """Remember `key` and return a sighting for each rule whose threshold it reaches."""
    entries.append(key)
    found = []
    for rule in rules:
        loop = rule.rule.loop
        limit = getattr(loop, kind) if loop is not None else None
        if loop is None or limit is None:
            continue
        count = _count(entries, key, loop.window)
        if count >= limit:
            found.append(_Sighting(rule, kind, count, what))
    return found


def _streak(history: _History, tool: str, error: str | None, rules: list[CompiledRule]) -> list[_Sighting]:
    """Extend (an error) or end (a success) the tool's error streak; a sighting per rule it reaches."""
    errors = history.errors
    if error is None:
        errors.pop(tool, None)
        return []
    key = _digest("error", tool, error)
    previous = errors.pop(tool, None)
    count = previous[1] + 1 if previous is not None and previous[0] == key else 1
    errors[tool] = (key, count)
    if len(errors) > MAX_TOOLS:
        errors.popitem(last=False)
    found = []
    for rule in rules:
        loop = rule.rule.loop
        if loop is not None and loop.tool_errors is not None and count >= loop.tool_errors:
            found.append(_Sighting(rule, "tool_errors", count, f"tool {tool!r} returned the same error"))
    return found


def _reason(sighting: _Sighting) -> str:
    if sighting.kind == "tool_errors":
        return f"loop: {sighting.what} {sighting.count} times in a row"
    return f"loop: the same {sighting.what} {sighting.count} times in this session"


__all__ = ["LOOP_CODE", "LoopMemory", "LoopStage", "canonical_arguments", "new_turn", "turn_key"]
