"""Guardrails on a streamed response: per SSE event, restore placeholders and scan what the model writes.

The event-by-event rewriting (deltas held per logical text, whole texts at once, held tails released
before the next event without a delta) is `StreamTextRewriter`'s, shared with replay; this adds what
happens to each released segment: scan, act (findings, block), restore.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from interlock.core.call import Call, Chunk, Finding
from interlock.core.views import Event
from interlock.guardrails.redaction import MAX_HOLD, actions_for, entity_types, restorer, rewrite
from interlock.guardrails.streamrewrite import StreamTextRewriter
from interlock.protocols import ADAPTERS

if TYPE_CHECKING:
    from interlock.core.actions import GuardrailActions
    from interlock.guardrails.redaction import SessionVault
    from interlock.guardrails.stage import Guardrails


class Blocked(Exception):
    """A text holds an entity whose action is `block`."""

    def __init__(self, entities: list[str]) -> None:
        super().__init__(", ".join(entities))
        self.entities = entities


#: Released text kept per streamed text for secret rules that need words before the secret.
CONTEXT_CHARS = 256


class StreamGuard(StreamTextRewriter):
    """The per-call state of one streamed response."""

    def __init__(
        self,
        stage: Guardrails,
        call: Call,
        actions: GuardrailActions | None,
        vault: SessionVault | None,
        *,
        storage: bool = False,
    ) -> None:
        self.stage = stage
        self.call = call
        self.actions = actions  # response scanning, when set
        self.vault = vault
        self.storage = storage  # re-rendering the upstream's chunks for the store: mask, never restore
        self.detector = stage.detector_now() if actions is not None else None
        limit = stage.stream_hold(actions) if actions is not None and self.detector is not None else MAX_HOLD
        super().__init__(ADAPTERS[call.protocol], self.detector is not None, limit)
        self.positions: dict[str, int] = {}
        self.found = False  # the model wrote something a guardrail acted on
        self.blocked = False

    def feed(self, events: list[Event], last: bool) -> list[Event]:
        """The events as they leave (split once by the proxy; `last`: the stream's end, held text released)."""
        if self.blocked:
            return []
        out: list[Event] = []
        try:
            for event in events:
                out += self.event(event)
            if last:
                out += self.flush()
        except Blocked as exc:
            out.append(Event(self.block(exc.entities), None, ""))
        return out

    def processor(self, key: str, json_text: bool, record: bool = True) -> Callable[[str], str]:
        """Scan, act on and restore one released segment of the text `key`."""
        restore = None if self.storage else restorer(self.vault, json_text)
        detector, actions, stage = self.detector, self.actions, self.stage
        replace = stage.stored(None, False) if self.storage else stage.replace(self.vault, False)

        before = ""  # the end of what was released of this text: secret rules may need its words

        def process(segment: str) -> str:
            nonlocal before
            offset = self.positions.get(key, 0)
            context = before
            if record:
                self.positions[key] = offset + len(segment)
                before = (before + segment)[-CONTEXT_CHARS:]
            if detector is None or actions is None or not segment.strip():
                return restore(segment) if restore else segment
            found = detector.detect(segment, context) if context else detector.detect(segment)
            applied = actions_for(found, lambda e: actions.action_for(e, "response"))
            if applied:
                self.found = True
                if not self.storage:
                    if record:
                        for a in applied:
                            d = a.detection
                            self.call.findings.append(
                                Finding(
                                    d.entity, f"response.{key}", d.start + offset, d.end + offset, d.score, a.action
                                )
                            )
                    blocked = entity_types(applied, "block")
                    if blocked:
                        raise Blocked(blocked)
            return rewrite(segment, applied, replace, restore)

        return process

    def block(self, entities: list[str]) -> bytes:
        assert self.actions is not None
        message = self.stage.block(self.call, self.actions, "response", entities)
        call = self.call
        call.outcome, call.error_code, call.error = "blocked", "pii_blocked", message
        self.blocked = self.changed = True
        return self.adapter.stream_error_event("pii_blocked", message)

    def stored_chunks(self, chunks: list[Chunk]) -> list[Chunk]:
        """The upstream's chunks as the store may keep them: what a guardrail acted on is masked.
        Run in a thread at the call's end, and only when a guardrail acted: the adapter re-renders
        the recorded chunks (`Adapter.rewrite_chunks`, which splits them again: the record keeps
        each chunk's bytes and time, not the relay's events) through a guard that masks and never
        restores."""
        guard = StreamGuard(self.stage, self.call, self.actions, None, storage=True)
        return self.adapter.rewrite_chunks(chunks, guard.feed)


__all__ = ["StreamGuard"]
