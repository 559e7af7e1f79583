"""The guardrails stage: PII and secrets in requests and responses, streamed or not.

request   scan the texts the adapter lists (each analysed once: a cache keyed by content hash), then
          block the call, or redact / mask / hash the values before they go upstream
response  restore placeholders for the agent, and scan what the model wrote
chunk     the same per SSE event, holding back only a tail that could still be a placeholder or entity
seal      before the recorder: the stored call holds the redacted form, never a raw value
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from interlock.core.actions import GuardrailActions
from interlock.core.call import Call, Decision, Finding
from interlock.core.state import StateUnavailable
from interlock.core.views import Event, JsonPath, where
from interlock.guardrails.guardstream import StreamGuard
from interlock.guardrails.pii import Detection
from interlock.guardrails.redaction import (
    MAX_HOLD,
    Applied,
    EmbeddedVault,
    SessionVault,
    Vault,
    VaultConflict,
    actions_for,
    entity_types,
    restorer,
    rewrite,
)
from interlock.guardrails.scanner import THREAD_CHARS, Scanner
from interlock.guardrails.vault import Unreachable
from interlock.protocols import ADAPTERS
from interlock.protocols.base import Rewritten, dump_body, set_path

if TYPE_CHECKING:
    from interlock.config import Settings

log = logging.getLogger("interlock.guardrails")

Direction = Literal["request", "response"]


def is_json_text(role: str, text: str) -> bool:
    return role == "tool_args" and text.lstrip()[:1] in ("{", "[")


@dataclass(slots=True)
class _CallState:
    #: Stored-form texts that differ from what went upstream (blocked and logged values masked).
    request_overrides: list[tuple[JsonPath, str]] = field(default_factory=list)
    stored_response: Rewritten | None = None
    restored: bool = False  # the agent's copy holds restored values
    stream: StreamGuard | None = None
    passthrough: bool = False  # a stream with nothing to restore or scan
    cut: bytes | None = None  # a stream ended unscanned: its error event, until sent (then b"")
    rewrote_request: bool = False  # the guardrails changed what went upstream (not only a policy)
    #: The session's vault table as the request hooks opened it (`vault_open`): the response hooks
    #: restore from it, with no second round trip (every placeholder the upstream saw is in it).
    vault: SessionVault | None = None
    vault_open: bool = False


class Guardrails(Scanner):
    """The stage. Actions come from `call.guardrails` (set by the policy stage) or the config; the
    analysis and its caches are `Scanner`'s (`scanner.py`)."""

    name = "guardrails"

    def __init__(self, settings: Settings, vault: Vault | None = None) -> None:
        """`vault`: the placeholders' values (a service: `runtime.build_services`); one of its own if None."""
        super().__init__(settings.guardrails)
        self.settings = settings
        config = self.config
        self.defaults = GuardrailActions(dict(config.request), dict(config.response), config.on_error)
        self.vault: Vault = vault if vault is not None else EmbeddedVault(config.vault_sessions, config.vault_values)
        self.raw_at_rest = settings.store.store_raw_pii and settings.store.capture == "full"
        self._calls: dict[str, _CallState] = {}
        if self.defaults.empty:
            self.warmed.set()  # only a policy can ask for a scan: the engine is built on its first call
        else:
            # Build the engine now, off the loop, so the first call does not wait the whole second (or,
            # on a loaded machine, many): `/ready` answers 503 until it is built.
            threading.Thread(target=self._warm, name="guardrails-warm", daemon=True).start()

    # -- what applies to a call ------------------------------------------------------------------

    def actions(self, call: Call) -> GuardrailActions | None:
        actions = call.guardrails if isinstance(call.guardrails, GuardrailActions) else self.defaults
        return None if actions.empty else actions

    def stream_hold(self, actions: GuardrailActions) -> int:
        """The longest tail a streamed response holds back for scanning: the configured cap when a
        response action applies to an entity that can be long (secrets, custom patterns, URLs),
        else the short entities' `MAX_HOLD`."""
        config = self.config
        long = [r.entity for r in config.recognizers] + [e for e in config.entities if e == "URL"]
        if config.secrets:
            long.append("SECRET")
        if any(actions.action_for(entity, "response") for entity in long):
            return config.stream_holdback_chars
        return MAX_HOLD

    async def session_vault(
        self, call: Call, create: bool, reserve: Sequence[tuple[str, str]] = ()
    ) -> SessionVault | None:
        """The session's placeholder table (one round trip to the vault; `vault.py`), kept for the
        call's later hooks. A shared vault out of reach raises `StateUnavailable` (`vault_refused`)."""
        state = self.state(call)
        if state.vault_open and not reserve and (state.vault is not None or not create):
            return state.vault
        state.vault = await self.vault.open(vault_key(call), create=create, reserve=reserve)
        state.vault_open = True
        return state.vault

    def vault_refused(self, call: Call, exc: Exception) -> None:
        """Fail closed (docs/guardrails.md, "A shared vault"): a call whose placeholders cannot be
        stored, checked or restored is refused, so no value leaks upstream and no placeholder
        reaches the agent unrestored."""
        message = f"the redaction vault cannot be used: {exc}; refused (the vault fails closed)"
        log.error("call %s: %s", call.id, message)
        call.decide(Decision("guardrails", "deny", None, message))
        reply = ADAPTERS[call.protocol].error_reply(503, "vault_unavailable", message, retryable=True)
        call.answer(reply, "blocked", "vault_unavailable", message)

    def state(self, call: Call) -> _CallState:
        state = self._calls.get(call.id)
        if state is None:
            state = self._calls[call.id] = _CallState()
        return state

    def record(self, call: Call, prefix: str, applied: Sequence[Applied]) -> None:
        for a in applied:
            d = a.detection
            call.findings.append(Finding(d.entity, prefix, d.start, d.end, d.score, a.action))

    def failed(self, call: Call, actions: GuardrailActions, direction: Direction, exc: BaseException) -> bool:
        """The analyzer raised: deny (True) when a `block` action applies and on_error is deny."""
        reason = f"the {direction} could not be scanned for PII and secrets ({type(exc).__name__})"
        log.error("%s: %s", reason, exc)
        return self.unscanned(call, actions, direction, reason, "error")

    def unscanned(
        self, call: Call, actions: GuardrailActions, direction: Direction, reason: str, passed: Literal["error", "skip"]
    ) -> bool:
        """Something that applies could not be scanned (`reason`): deny (True) when a `block` action
        applies and on_error is deny (fail closed), else record the gap (a `passed` decision)."""
        table = actions.request if direction == "request" else actions.response
        fail_closed = actions.on_error == "deny" and "block" in table.values()
        if not fail_closed:
            why = "on_error: allow" if actions.on_error == "allow" else "no block action"
            call.decide(Decision("guardrails", passed, _rules(actions), f"{reason}; allowed ({why})"))
            return False
        self.refuse(call, actions, reason + "; denied because a guardrail blocks on it (fail closed)")
        return True

    def refuse(self, call: Call, actions: GuardrailActions, message: str) -> None:
        """Answer the call with a 503 `guardrails_error`: what must be scanned could not be."""
        call.decide(Decision("guardrails", "deny", _rules(actions), message))
        reply = ADAPTERS[call.protocol].error_reply(503, "guardrails_error", message, retryable=False)
        call.answer(reply, "blocked", "guardrails_error", message)

    def block(self, call: Call, actions: GuardrailActions, direction: Direction, entities: list[str]) -> str:
        message = (
            f"the {direction} contains {', '.join(entities)}, which a guardrail blocks"
            f"{' (' + ', '.join(actions.rules) + ')' if actions.rules else ''}"
        )
        call.decide(Decision("guardrails", "deny", _rules(actions), message, {"entities": entities}))
        return message

    # -- hooks ----------------------------------------------------------------------------------

    async def request(self, call: Call) -> None:
        try:
            await self._request(call)
        except (StateUnavailable, VaultConflict) as exc:  # values to store: refused, none leaks upstream
            self.vault_refused(call, exc)
            return
        if call.reply is not None:
            return
        try:
            vault = await self.session_vault(call, create=False)
        except StateUnavailable as exc:
            # Nothing to store: the call goes on, and is refused only if its response holds a
            # placeholder (`Unreachable`), so an outage stops only the calls that need the vault.
            state = self.state(call)
            vault = state.vault = Unreachable(str(exc))
            state.vault_open = True
            reason = f"the redaction vault cannot be read ({exc}): a response holding a placeholder is refused"
            call.decide(Decision("guardrails", "error", None, reason))
        # What must read the response: the proxy fails the call closed when it cannot (issue 16).
        actions = self.actions(call)
        if actions is not None and actions.response:
            call.readers.append("guardrails (response scan)")
        if vault is not None and len(vault) > 0:
            call.readers.append("guardrails (placeholder restore)")

    async def _request(self, call: Call) -> None:
        actions = self.actions(call)
        if actions is not None and actions.response and self._detector is None:
            # A response that must be scanned (streams included) needs the engine: build it here,
            # in a thread, rather than on the event loop when the first chunk arrives.
            try:
                await self.detector()
            except Exception:  # noqa: BLE001 - the stream is then relayed unscanned, and this is logged
                log.exception("building the guardrails engine failed")
        view = call.view
        if actions is None or not actions.request or view is None or call.request_json is None:
            return
        if view.unscannable:
            # Token ids carry input the model reads but no text to scan: a gap, never a pass.
            reason = f"the request could not be scanned for PII and secrets: {', '.join(view.unscannable)}"
            if self.unscanned(call, actions, "request", reason, "skip"):
                return
        if view.media:
            # Images, audio, files: no OCR or speech recognition here, so a recorded skip whatever the
            # rules (refusing every vision call under a PII rule would break vision agents), or a
            # refusal when `guardrails.media: deny` says so. The texts beside them are scanned as usual.
            reason = f"images, audio or files the guardrails cannot read: {', '.join(view.media)}"
            if self.config.media == "deny":
                self.refuse(call, actions, reason + "; denied (guardrails.media: deny)")
                return
            call.decide(Decision("guardrails", "skip", _rules(actions), reason + "; allowed (guardrails.media: skip)"))
        if not view.texts:
            return
        slots = view.texts
        try:
            entries = await self.request_texts([s.text for s in slots], actions)
        except Exception as exc:  # noqa: BLE001 - fail closed or open, as configured
            self.failed(call, actions, "request", exc)
            return
        per_slot = [(slot, entry, entry.applied) for slot, entry in zip(slots, entries, strict=True) if entry.applied]
        if not per_slot:
            return
        for slot, _, applied in per_slot:
            self.record(call, "request." + where(slot.path), applied)
        state = self.state(call)
        blocked = entity_types([a for _, _, applied in per_slot for a in applied], "block")
        if blocked:
            message = self.block(call, actions, "request", blocked)
            reply = ADAPTERS[call.protocol].error_reply(403, "pii_blocked", message, retryable=False)
            call.answer(reply, "blocked", "pii_blocked", message)
            stored = self.stored(None, reversible=False)
            state.request_overrides = [(s.path, rewrite(s.text, applied, stored)) for s, _, applied in per_slot]
            return
        # The values about to be redacted get their placeholders from the vault itself, in this one
        # round trip: two replicas never number two values alike (`vault.py`).
        reserve = [
            (a.detection.entity, slot.text[a.detection.start : a.detection.end])
            for slot, _, applied in per_slot
            for a in applied
            if a.action == "redact"
        ]
        # Only a redaction needs the vault here: a call that masks, hashes or logs goes on without
        # it (so an unreachable shared vault stops only the calls that would store a value).
        vault = await self.session_vault(call, create=True, reserve=reserve) if reserve else None
        changed: dict[str, int] = {}
        for slot, entry, applied in per_slot:
            done = self.rewritten(entry, slot.text, vault)
            new = done.upstream
            assert new is not None
            if new != slot.text:
                set_path(call.request_json, slot.path, new)
                call.request_changed = state.rewrote_request = True
                for a in applied:
                    changed[a.action] = changed.get(a.action, 0) + 1
            if done.stored != new:
                state.request_overrides.append((slot.path, done.stored))
        if vault is not None:
            await self.vault.commit(vault_key(call), vault)  # the placeholders issued, for the next calls
        if changed:
            summary = ", ".join(
                f"{n} {action}ed" if action != "hash" else f"{n} hashed" for action, n in changed.items()
            )
            call.decide(
                Decision(
                    "guardrails",
                    "modify",
                    _rules(actions),
                    f"request: {summary}",
                    {"entities": entity_types([a for _, _, applied in per_slot for a in applied])},
                )
            )

    async def response(self, call: Call) -> None:
        if call.stream or call.response_body is None or call.reply is not None:
            return
        actions = self.actions(call)
        scan = actions is not None and bool(actions.response)
        try:
            vault = await self.session_vault(call, create=False)  # kept from the request: no I/O
        except StateUnavailable as exc:
            self.vault_refused(call, exc)
            return
        restore = vault is not None and len(vault) > 0
        if not (scan or restore):
            return
        adapter = ADAPTERS[call.protocol]
        view = adapter.response_view(call)  # the call's one parse of the body, shared with the other readers
        if view.message is None:
            # Never silent (issue 16): the record says the response went unscanned, and why.
            reason = "response not scanned: the body is not JSON"
            call.decide(Decision("guardrails", "skip", _rules(actions) if actions else None, reason))
            return
        problem = adapter.answer_shape_problem(view.message) if (call.status or 0) < 400 else None
        if problem is not None:
            # Never silent either: a reader reads nothing where the answer is out of shape, so what it
            # holds there is relayed unscanned; recorded, and whatever is in shape is scanned as usual.
            reason = f"response not fully scanned: {problem}"
            call.decide(Decision("guardrails", "skip", _rules(actions) if actions else None, reason))
        slots = view.texts
        if not slots:
            return
        found: list[tuple[Detection, ...]] = [()] * len(slots)
        if scan:
            assert actions is not None
            try:
                found = await self.analyze([s.text for s in slots])
            except Exception as exc:  # noqa: BLE001
                if self.failed(call, actions, "response", exc):
                    return
                found = [()] * len(slots)
                scan = False  # recorded by `failed` as not scanned
        table = (lambda entity: actions.action_for(entity, "response")) if actions else (lambda entity: None)
        applied_at: dict[JsonPath, list[Applied]] = {}  # what acted on each text, by its place in the body
        for slot, detections in zip(slots, found, strict=True):
            applied = actions_for(detections, table)
            if applied:
                applied_at[slot.path] = applied
                self.record(call, "response." + where(slot.path), applied)
        applied_all = [a for applied in applied_at.values() for a in applied]
        upstream, stored = self.replace(vault, False), self.stored(vault, False)
        # Two copies of the body, each written by the adapter from its one parse: the agent's (values
        # replaced, placeholders restored) and, when a guardrail acted, the store's (masked, never restored).
        agent_body = adapter.rewrite_response(
            call,
            lambda slot: rewrite(
                slot.text,
                applied_at.get(slot.path, []),
                upstream,
                restorer(vault, is_json_text(slot.role, slot.text)),
            ),
        )
        state = self.state(call) if agent_body is not None or applied_all else None
        if applied_at and state is not None:
            state.stored_response = adapter.rewrite_response(
                call,
                lambda slot: (
                    rewrite(slot.text, applied_at[slot.path], stored) if slot.path in applied_at else slot.text
                ),
            )
        blocked = entity_types(applied_all, "block")
        if blocked:
            assert actions is not None
            message = self.block(call, actions, "response", blocked)
            reply = adapter.error_reply(403, "pii_blocked", message, retryable=False)
            call.answer(reply, "blocked", "pii_blocked", message)
            return
        if isinstance(vault, Unreachable) and vault.missed is not None:
            self.vault_refused(call, StateUnavailable(f"{vault.reason}; the response holds {vault.missed}"))
            return
        if agent_body is not None and state is not None:
            call.agent_response_body = agent_body.body
            state.restored = True
        if scan and not applied_all:
            assert actions is not None
            call.decide(Decision("guardrails", "allow", _rules(actions), "response scanned: nothing found"))

    async def chunk(self, call: Call, events: list[Event], last: bool) -> list[Event]:
        state = self._calls.get(call.id)
        if state is None or not (state.passthrough or state.cut is not None or state.stream is not None):
            await self.open_stream(call)  # sets one of the three
            state = self._calls[call.id]
        if state.passthrough:
            return events
        if state.cut is not None:  # ended unscanned (fail closed): the error event once, then nothing
            cut, state.cut = state.cut, b""
            return [Event(cut, None, "")] if cut else []
        if state.stream is None:
            return events
        out = state.stream.feed(events, last)
        vault = state.vault
        if isinstance(vault, Unreachable) and vault.missed is not None:  # a placeholder it cannot restore
            message = f"the redaction vault cannot be used: {vault.reason}; the response holds {vault.missed}"
            log.error("call %s: %s; stream ended (the vault fails closed)", call.id, message)
            call.decide(Decision("guardrails", "deny", None, message))
            call.outcome, call.error_code, call.error = "blocked", "vault_unavailable", message
            state.cut, state.stream = b"", None
            return [Event(ADAPTERS[call.protocol].stream_error_event("vault_unavailable", message), None, "")]
        return out

    async def open_stream(self, call: Call) -> StreamGuard | None:
        actions = self.actions(call)
        scan = actions is not None and bool(actions.response)
        state = self.state(call)
        try:
            vault = await self.session_vault(call, create=False)  # kept from the request: no I/O
        except StateUnavailable as exc:
            message = f"the redaction vault cannot be used: {exc}; stream ended (the vault fails closed)"
            log.error("call %s: %s", call.id, message)
            call.decide(Decision("guardrails", "deny", None, message))
            call.outcome, call.error_code, call.error = "blocked", "vault_unavailable", message
            state.cut = ADAPTERS[call.protocol].stream_error_event("vault_unavailable", message)
            return None
        restore = vault is not None and len(vault) > 0
        if not (scan or restore):
            # Nothing applies: no guardrail reads this stream. (An encoded stream arrives here decoded,
            # or not at all: the proxy fails closed on a body it cannot decode while `readers` is set.)
            state.passthrough = True
            return None
        if scan and self._detector is None:
            assert actions is not None
            reason = "the response stream could not be scanned for PII and secrets (no guardrails engine)"
            log.error("call %s: %s", call.id, reason)
            if actions.on_error == "deny" and "block" in actions.response.values():
                message = reason + "; ended because a guardrail blocks on it (fail closed)"
                call.decide(Decision("guardrails", "deny", _rules(actions), message))
                call.outcome, call.error_code, call.error = "blocked", "guardrails_error", message
                state.cut = ADAPTERS[call.protocol].stream_error_event("guardrails_error", message)
                return None
            call.decide(
                Decision("guardrails", "error", _rules(actions), reason + "; relayed unscanned (on_error: allow)")
            )
            scan = False
            if not restore:
                state.passthrough = True
                return None
        state.stream = StreamGuard(self, call, actions if scan else None, vault)
        return state.stream

    async def seal(self, call: Call) -> None:
        state = self._calls.pop(call.id, None)
        if state is None:
            return
        guard = state.stream
        if guard is not None and guard.actions is not None and not guard.found and call.outcome != "blocked":
            rules = _rules(guard.actions)
            call.decide(Decision("guardrails", "allow", rules, "response stream scanned: nothing found"))
        if self.raw_at_rest:
            return
        # The agent's own body may hold raw values: replaced by the redacted form as sent. A body that
        # only a policy changed (`set`, stripped tools) holds none, and stays on record as the agent
        # sent it, next to `upstream_body`.
        if state.request_overrides or state.rewrote_request:
            sent = call.upstream_body
            if sent is not None and not state.request_overrides and _sent_as_is(call):
                body = sent  # serialised once, by the forwarder: not again here
            elif len(call.request_body) > THREAD_CHARS * 4:  # copying a long history is not for the loop
                body = await asyncio.to_thread(_stored_request, call.request_json, state.request_overrides)
            else:
                body = _stored_request(call.request_json, state.request_overrides)
            call.request_body = body
            if state.request_overrides and call.upstream_body is not None:
                call.upstream_body = body
        if state.stored_response is not None:  # blocked too: the upstream body stays on record, masked
            ADAPTERS[call.protocol].replace_response(call, state.stored_response)
        if state.restored:
            call.agent_response_body = None
        if guard is not None:
            if guard.changed:
                call.agent_chunks = None
            if guard.found:
                call.chunks = await asyncio.to_thread(guard.stored_chunks, call.chunks)


def _sent_as_is(call: Call) -> bool:
    """The body that went upstream is the redacted request as serialised once by the forwarder (the
    stored form when nothing is masked beyond it): not another model's copy (a fallback target's)."""
    if call.upstream_body is None or not call.attempts or not isinstance(call.request_json, dict):
        return False
    return call.attempts[-1].model == call.request_json.get("model")


def _stored_request(request: Any, overrides: list[tuple[JsonPath, str]]) -> bytes:
    """The request as sent upstream, with what was blocked or only logged masked too."""
    document = copy.deepcopy(request) if overrides else request
    for path, text in overrides:
        set_path(document, path, text)
    return dump_body(document)


def vault_key(call: Call) -> str:
    """Whose placeholder table a call uses: its session's, else its agent's."""
    return call.session or f"agent:{call.agent}"


def _rules(actions: GuardrailActions) -> str | None:
    return ", ".join(actions.rules) or None


__all__ = ["Guardrails", "where"]
