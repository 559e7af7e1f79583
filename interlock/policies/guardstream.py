"""Guardrails on a streamed response: per SSE event, restore placeholders and scan what the model writes.

The protocol adapter names the texts in each event (`stream_texts`): pieces of a text (deltas) go
through a `StreamScrubber` per logical text, which holds back only a tail that could still be a
placeholder or an entity; whole texts (the Responses API repeats the full text at the end) are
processed at once. Held text is released, in a copy of that text's last delta event, before the
first event that carries no delta (a finish chunk, `content_block_stop`, `[DONE]`) and at the end.
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

from interlock.policies.guardrails import Blocked
from interlock.policies.redaction import StreamScrubber, actions_for, entity_types, restorer, rewrite
from interlock.proxy.protocols import ADAPTERS
from interlock.proxy.protocols.base import JsonPath, set_path
from interlock.proxy.protocols.sse import Event, EventSplitter
from interlock.tracing.call import Call, Chunk, Finding

if TYPE_CHECKING:
    from interlock.policies.actions import GuardrailActions
    from interlock.policies.guardrails import Guardrails
    from interlock.policies.redaction import SessionVault


class StreamGuard:
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
        self.adapter = ADAPTERS[call.protocol]
        self.detector = stage.detector_now() if actions is not None else None
        self.splitter = EventSplitter()
        self.scrubbers: dict[str, StreamScrubber] = {}
        self.templates: dict[str, tuple[str | None, Any, JsonPath]] = {}
        self.positions: dict[str, int] = {}
        self.changed = False  # the agent's bytes differ from the upstream's
        self.found = False  # the model wrote something a guardrail acted on
        self.blocked = False

    def feed(self, data: bytes, last: bool) -> bytes:
        if self.blocked:
            return b""
        out: list[bytes] = []
        events = list(self.splitter.feed(data)) if data else []
        if last:
            events += self.splitter.close()
        try:
            for event in events:
                out.append(self.event(event))
            if last:
                out.append(self.flush())
        except Blocked as exc:
            out.append(self.block(exc.entities))
        return b"".join(out)

    def event(self, event: Event) -> bytes:
        if not event.data or event.data == "[DONE]" or event.data[0] not in "{[":
            return self.flush() + event.raw
        try:
            data = json.loads(event.data)
        except json.JSONDecodeError:
            return self.flush() + event.raw
        texts = self.adapter.stream_texts(event.event, data)
        prefix = b"" if any(t.delta for t in texts) else self.flush()
        changed = False
        for text in texts:
            if text.delta:
                scrubber = self.scrubbers.get(text.key)
                if scrubber is None:
                    scrubber = self.scrubbers[text.key] = StreamScrubber(
                        self.processor(text.key, text.json_text), self.detector is not None
                    )
                self.templates[text.key] = (event.event, data, text.path)
                new = scrubber.feed(text.text)
            else:
                new = self.processor(text.key, text.json_text, record=text.key not in self.scrubbers)(text.text)
            if new != text.text:
                set_path(data, text.path, new)
                changed = True
        if not changed:
            return prefix + event.raw
        self.changed = True
        return prefix + self.adapter.stream_event(event.event, data)

    def flush(self) -> bytes:
        """Release every held tail, each in a copy of its text's last delta event."""
        out: list[bytes] = []
        for key, scrubber in self.scrubbers.items():
            if not scrubber.buffer:
                continue
            text = scrubber.flush()
            name, data, path = self.templates[key]
            data = copy.deepcopy(data)
            set_path(data, path, text)
            out.append(self.adapter.stream_event(name, data))
            self.changed = True
        return b"".join(out)

    def processor(self, key: str, json_text: bool, record: bool = True) -> Any:
        """Scan, act on and restore one released segment of the text `key`."""
        restore = None if self.storage else restorer(self.vault, json_text)
        detector, actions, stage = self.detector, self.actions, self.stage
        replace = stage.stored(None, False) if self.storage else stage.replace(self.vault, False)

        def process(segment: str) -> str:
            offset = self.positions.get(key, 0)
            if record:
                self.positions[key] = offset + len(segment)
            if detector is None or actions is None or not segment.strip():
                return restore(segment) if restore else segment
            applied = actions_for(detector.detect(segment), lambda e: actions.action_for(e, "response"))
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
        """The upstream's chunks as the store may keep them: what a guardrail acted on is masked."""
        guard = StreamGuard(self.stage, self.call, self.actions, None, storage=True)
        out: list[Chunk] = []
        for i, chunk in enumerate(chunks):
            data = guard.feed(chunk.data, i == len(chunks) - 1)
            if data:
                out.append(Chunk(chunk.t_ms, data))
        return out


__all__ = ["StreamGuard"]
