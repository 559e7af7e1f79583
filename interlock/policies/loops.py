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

State is per session (calls without one count per agent), behind the `LoopHistory` interface
(`loop_history.py`): in this process by default, bounded (sessions, idle time, `window` keys per
kind, error streaks); in the store's SQLite file for `serve --workers N`, or on Redis with
`state.url`, so a loop spread over workers or replicas is caught at its Nth repeat as on one
process. A shared history out of reach applies `state.on_failure.loops` (docs/policies.md, "Loops").
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from interlock.core.call import Call, Decision
from interlock.core.state import StateUnavailable
from interlock.core.views import Event, ToolCall
from interlock.policies.loop_history import LoopHistory, LoopMemory, Repeat, Seen, Streak
from interlock.protocols import ADAPTERS
from interlock.protocols.conversation import ChatMessage
from interlock.protocols.mcp import McpAdapter, McpView

if TYPE_CHECKING:
    from interlock.policies.engine import CompiledRule
    from interlock.policies.stage import Escalation

log = logging.getLogger("interlock.policies")

#: The error code of a call refused because of a loop.
LOOP_CODE = "loop_detected"
#: The error code of a call refused because the shared history is out of reach (fail_closed), as
#: the limits' (`policies/stage.py`).
UNAVAILABLE_CODE = "state_unavailable"

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
        history: LoopHistory | None = None,
        escalator: Escalation | None = None,
        stopper: SessionStopper | None = None,
        *,
        announce: bool = True,
        on_failure: Literal["fail_open", "fail_closed"] = "fail_open",
    ) -> None:
        """`history`: where each session's history is kept (`loop_history.py`; this process's memory
        by default). `announce`: log each loop (once) and post it to the webhook; `policy test` does
        not. `on_failure`: what a shared history out of reach does (`state.on_failure.loops`)."""
        self.history: LoopHistory = history if history is not None else LoopMemory()
        #: Counts in this process while a shared history is out of reach (fail_open): a loop within
        #: this interlock is still caught, as before histories were shared.
        self.local = self.history if isinstance(self.history, LoopMemory) else LoopMemory()
        self.on_failure = on_failure
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
        view = call.view
        sightings: list[_Sighting] = []
        # Only what a rule checks is counted: a shared history is a round trip, and a rule that
        # counts nothing here must not make an unreachable one refuse the call.
        kinds = _kinds(rules)
        counts_calls, counts_errors = "tool_calls" in kinds, "tool_errors" in kinds
        if isinstance(view, McpView):
            if not (view.method == "tools/call" and view.tool_name) or not (counts_calls or counts_errors):
                return
            key = _digest("mcp", view.tool_name, canonical_arguments(view.tool_arguments or {}))
            repeats = [Repeat("tool_calls", key)] if counts_calls else []
            # A tool-error loop's refusal is asked for in the same round trip.
            seen = await self._observe(call, rules, repeats, tool=view.tool_name if counts_errors else None)
            if seen is None:
                self._unavailable(call, before_sending=True)
                return
            if seen.blocked is not None:
                rule_name, reason = seen.blocked
                call.decide(Decision("loop", "deny", rule_name, reason, {"kind": "tool_errors"}))
                self._refuse(call, reason)
                return
            if counts_calls:
                what = f"MCP tool call {view.tool_name!r} (same arguments)"
                sightings += _tally(seen.repeats[0], rules, "tool_calls", what)
        elif ADAPTERS[call.protocol].model_api:
            counts_requests = "requests" in kinds
            if not (counts_requests or counts_errors):
                return
            messages = ADAPTERS[call.protocol].conversation(call.request_json, None)  # parsed once, by the adapter
            if not messages:
                return
            turn = new_turn(messages)
            tools, streaks = _turn_errors(turn) if counts_errors else ([], [])
            repeats = [Repeat("requests", turn_key(call.model, turn))] if counts_requests else []
            if not (repeats or streaks):
                return
            seen = await self._observe(call, rules, repeats, streaks)
            if seen is None:
                self._unavailable(call, before_sending=True)
                return
            if counts_requests:
                what = f"request (the same new turn of {len(turn)} message{'s' if len(turn) != 1 else ''})"
                sightings += _tally(seen.repeats[0], rules, "requests", what)
            for tool, count in zip(tools, seen.streaks, strict=True):
                sightings += _streak(tool, count, rules)
        await self._act(call, sightings, before_sending=True)

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
        if not tool_calls or not any(_checks(r, "tool_calls") for r in rules):
            return None  # nothing to count: no round trip to a shared history
        calls = list(tool_calls)
        keys = [_digest("model", c.name, canonical_arguments(c.arguments)) for c in calls]
        seen = await self._observe(call, rules, [Repeat("tool_calls", key) for key in keys])
        if seen is None:
            return self._unavailable(call, before_sending=False, streamed=streamed)
        sightings: list[_Sighting] = []
        for tool_call, found in zip(calls, seen.repeats, strict=True):
            # The reason names the tool, never its arguments: they may hold PII, and reasons are
            # recorded, logged and sent to the webhook.
            sightings += _tally(found, rules, "tool_calls", f"tool call {tool_call.name!r} (same arguments)")
        return await self._act(call, sightings, before_sending=False, streamed=streamed)

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
            code = call.error_code or LOOP_CODE
            return [*out, Event(adapter.stream_error_event(code, refusal), None, "")]
        return out + stream.held

    # -- MCP results: tool-error streaks ------------------------------------------------------------

    async def _mcp_result(self, call: Call, rules: list[CompiledRule]) -> None:
        view = call.view
        if not isinstance(view, McpView) or view.method != "tools/call" or not view.tool_name:
            return
        if not any(_checks(r, "tool_errors") for r in rules):
            return
        answer = self.mcp.response_message(call)
        if answer is None:
            return
        error: str | None = None
        if "error" in answer:
            error = canonical_arguments(answer.get("error"))
        elif isinstance(answer.get("result"), dict) and answer["result"].get("isError") is True:
            error = canonical_arguments(answer["result"].get("content"))
        tool = view.tool_name
        key = None if error is None else _digest("error", tool, error)
        # The reply has gone to the agent already: out of reach, there is nothing left to refuse.
        seen = await self._observe(call, rules, streaks=[Streak(tool, key)])
        if seen is None:
            return
        for sighting in _streak(tool, seen.streaks[0], rules):
            reason = _reason(sighting)
            loop = sighting.rule.rule.loop
            assert loop is not None
            if sighting.enforced:
                why = f"{reason}: the tool's calls are refused for the rest of this session"
                await self._block(call, tool, sighting.rule.name, why)
            action = "monitor" if not sighting.enforced else loop.action
            detail = {"kind": sighting.kind, "count": sighting.count, "tool": tool}
            call.decide(Decision("loop", action, sighting.rule.name, reason, detail))
            await self._note(call, sighting, action)
            if action == "stop_session":
                await self._stop(call, f"{reason} (policy rule {sighting.rule.name!r})")

    # -- the history, and its failure mode ----------------------------------------------------------

    async def _observe(
        self,
        call: Call,
        rules: list[CompiledRule],
        repeats: Sequence[Repeat] = (),
        streaks: Sequence[Streak] = (),
        tool: str | None = None,
    ) -> Seen | None:
        """The session's share of this call, from the history. A shared history out of reach: under
        fail_open, counted by this interlock alone (`self.local`); under fail_closed, None (the
        caller refuses what it can). Either way the gap is an `error` decision on the call."""
        window = max((r.rule.loop.window for r in rules if r.rule.loop is not None), default=2)
        scope, now = _scope(call), time.time()
        try:
            return await self.history.observe(scope, window, now, repeats, streaks, tool)
        except StateUnavailable as exc:
            names = ", ".join(r.name for r in rules)
            if self.on_failure == "fail_closed":
                reason = f"loops cannot be counted: {exc} (state.on_failure.loops: fail_closed)"
                call.decide(Decision("loop", "error", names, reason))
                log.warning("call %s: %s", call.id, reason)
                return None
            reason = f"loops counted by this interlock alone: {exc} (state.on_failure.loops: fail_open)"
            call.decide(Decision("loop", "error", names, reason))
            log.warning("call %s: %s", call.id, reason)
            return await self.local.observe(scope, window, now, repeats, streaks, tool)

    def _unavailable(self, call: Call, *, before_sending: bool, streamed: bool = False) -> str:
        """Refuse the call: the shared history is out of reach and fails closed (503, retryable)."""
        message = "loop detection unavailable: the shared state cannot be reached; try again"
        if streamed:
            call.outcome, call.error_code, call.error = "blocked", UNAVAILABLE_CODE, message
        else:
            reply = ADAPTERS[call.protocol].error_reply(503, UNAVAILABLE_CODE, message, retryable=True)
            call.answer(reply, "denied" if before_sending else "blocked", UNAVAILABLE_CODE, message)
        return message

    async def _block(self, call: Call, tool: str, rule: str, reason: str) -> None:
        scope, now = _scope(call), time.time()
        try:
            await self.history.block(scope, tool, rule, reason, now)
        except StateUnavailable as exc:
            # Refused by this interlock at least; the record says the others may not know.
            message = f"tool {tool!r} refused by this interlock alone: {exc}"
            call.decide(Decision("loop", "error", rule, message))
            log.warning("call %s: %s", call.id, message)
            await self.local.block(scope, tool, rule, reason, now)

    # -- acting --------------------------------------------------------------------------------

    async def _act(
        self,
        call: Call,
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
                await self._note(call, sighting, "monitor")
                continue
            call.decide(Decision("loop", loop.action, sighting.rule.name, reason, detail))
            await self._note(call, sighting, loop.action)
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

    async def _note(self, call: Call, sighting: _Sighting, action: str) -> None:
        """The call's `meta["loop"]` (the UI's timeline reads it) and, once per loop, the webhook."""
        found = call.meta.setdefault("loop", [])
        if len(found) < 8:
            found.append({"rule": sighting.rule.name, "kind": sighting.kind, "count": sighting.count, "action": action})
        if not self.announce:
            return
        scope, now = _scope(call), time.time()
        try:
            first = await self.history.announce(scope, sighting.rule.name, sighting.kind, now)
        except StateUnavailable:
            # Once per loop by this interlock: a loop announced twice beats one never announced.
            first = await self.local.announce(scope, sighting.rule.name, sighting.kind, now)
        if not first:
            return
        log.warning(
            "call %s: loop in session %s: %s (rule %r, %s)",
            call.id,
            scope,
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


def _kinds(rules: list[CompiledRule]) -> set[str]:
    """The kinds of loop these rules check (one pass: the request hook asks for all three)."""
    kinds: set[str] = set()
    for rule in rules:
        loop = rule.rule.loop
        if loop is None:
            continue
        if loop.tool_calls is not None:
            kinds.add("tool_calls")
        if loop.requests is not None:
            kinds.add("requests")
        if loop.tool_errors is not None:
            kinds.add("tool_errors")
    return kinds


def _enforces(rule: CompiledRule) -> bool:
    loop = rule.rule.loop
    return not rule.monitor and loop is not None and loop.action != "monitor"


def _turn_errors(turn: list[ChatMessage]) -> tuple[list[str], list[Streak]]:
    """The tool results in the new turn, as streak steps: an error the agent reports (Anthropic
    `is_error`) lengthens its tool's streak, a success ends it."""
    names = {c.id: c.name for m in turn for c in m.tool_calls if c.id}
    tools: list[str] = []
    streaks: list[Streak] = []
    for message in turn:
        if message.role != "tool" or message.tool_call_id is None:
            continue
        tool = names.get(message.tool_call_id, "?")
        tools.append(tool)
        streaks.append(Streak(tool, _digest("error", tool, message.text) if message.error else None))
    return tools, streaks


def _tally(found: Sequence[int], rules: list[CompiledRule], kind: str, what: str) -> list[_Sighting]:
    """A sighting for each rule whose threshold the key reaches within the rule's window (`found`:
    where the key stands among the kind's latest entries, ascending from the newest, 0)."""
    sightings = []
    for rule in rules:
        loop = rule.rule.loop
        limit = getattr(loop, kind) if loop is not None else None
        if loop is None or limit is None:
            continue
        count = bisect.bisect_left(found, loop.window)  # the positions are ascending
        if count >= limit:
            sightings.append(_Sighting(rule, kind, count, what))
    return sightings


def _streak(tool: str, count: int, rules: list[CompiledRule]) -> list[_Sighting]:
    """A sighting per rule whose `tool_errors` the tool's streak (`count` in a row) reaches."""
    found = []
    for rule in rules:
        loop = rule.rule.loop
        if loop is not None and loop.tool_errors is not None and count and count >= loop.tool_errors:
            found.append(_Sighting(rule, "tool_errors", count, f"tool {tool!r} returned the same error"))
    return found


def _reason(sighting: _Sighting) -> str:
    if sighting.kind == "tool_errors":
        return f"loop: {sighting.what} {sighting.count} times in a row"
    return f"loop: the same {sighting.what} {sighting.count} times in this session"


__all__ = ["LOOP_CODE", "LoopMemory", "LoopStage", "canonical_arguments", "new_turn", "turn_key"]
