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


class _Rescan(Exception):
    """A segment of a batch scanned on trust holds something a guardrail acts on: scan it again."""


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
        self.contexts: list[list[str]] = []  # each processor's released text before (secret rules' words)
        #: While a batch of events is processed on trust (`feed`): the texts its secret scans would
        #: have read, scanned afterwards in one call.
        self.deferred: list[str] | None = None

    def feed(self, events: list[Event], last: bool) -> list[Event]:
        """The events as they leave (split once by the proxy; `last`: the stream's end, held text released).

        Several events at once (a read that held more than one) are processed first on trust that
        their segments hold no secret, each segment's PII scanned as usual, and the texts the
        secret rules would have read are scanned afterwards in one kingfisher call
        (`SecretScanner.scan_many`; a call costs ~15-37 µs whatever its length). If that finds
        nothing, the events stand; if it finds anything, or a segment's PII has an action, the
        guard's state is put back and the events are processed again segment by segment, as
        one at a time would: the events, findings and actions are always those."""
        if self.blocked:
            return []
        secrets = self.detector.secrets if self.detector is not None and self.actions is not None else None
        if secrets is None or len(events) < 2:
            return self._feed(events, last)
        state = self._state()
        self.deferred = []
        try:
            out = self._feed(events, last)
            deferred = self.deferred
        except _Rescan:
            deferred = None
        finally:
            self.deferred = None
        if deferred is not None and not any(secrets.scan_many(deferred)):
            return out
        self._restore(state)
        return self._feed(events, last)

    def _state(self) -> tuple[object, ...]:
        scrubbers = {key: scrubber.buffer for key, scrubber in self.scrubbers.items()}
        contexts = [context[0] for context in self.contexts]
        return scrubbers, dict(self.templates), dict(self.positions), contexts, self.changed, self.found

    def _restore(self, state: tuple[object, ...]) -> None:
        scrubbers, templates, positions, contexts, self.changed, self.found = state  # type: ignore[assignment]
        assert isinstance(scrubbers, dict) and isinstance(contexts, list)
        for key in list(self.scrubbers):
            if key in scrubbers:
                self.scrubbers[key].buffer = scrubbers[key]
            else:
                del self.scrubbers[key]
        del self.contexts[len(contexts) :]
        for context, before in zip(self.contexts, contexts, strict=True):
            context[0] = before
        self.templates = templates  # type: ignore[assignment]
        self.positions = positions  # type: ignore[assignment]

    def _feed(self, events: list[Event], last: bool) -> list[Event]:
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

        before = [""]  # the end of what was released of this text: secret rules may need its words
        if record:
            self.contexts.append(before)  # kept with the state `feed` may put back

        def process(segment: str) -> str:
            offset = self.positions.get(key, 0)
            context = before[0]
            if record:
                self.positions[key] = offset + len(segment)
                before[0] = (context + segment)[-CONTEXT_CHARS:]
            if detector is None or actions is None or not segment.strip():
                return restore(segment) if restore else segment
            deferred = self.deferred
            if deferred is not None and detector.secrets is not None:
                # On trust (`feed`): the PII now, the secret rules' text kept for one scan of the batch.
                found = detector.detect(segment, secrets=False)
                deferred.append(context + segment)
            else:
                found = detector.detect(segment, context) if context else detector.detect(segment)
            applied = actions_for(found, lambda e: actions.action_for(e, "response"))
            if applied and deferred is not None:
                raise _Rescan
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
