"""The texts of a streamed response, rewritten event by event: the core the guardrails' `StreamGuard`
and replay's stream rewriter share.

The protocol adapter names the texts in each SSE event (`stream_texts`). Pieces of a text (deltas)
go through a `StreamScrubber` per logical text, which holds back only a tail that could still be a
placeholder (or, when scanning, an entity); whole texts (the Responses API repeats the full text at
the end) are processed at once. Held text is released, in a copy of that text's last delta event,
before the first event that carries no delta (a finish chunk, `content_block_stop`, `[DONE]`) and
at the end. Keep-alives (SSE comments, events without data, Anthropic `ping`, OpenAI chunks with an
empty delta and no finish reason) carry nothing and end nothing: they pass without releasing held
text, which would otherwise leave an entity split across them in two unscanned halves. An event
whose bytes are unchanged leaves as it came.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from interlock.core.views import Event, JsonPath
from interlock.guardrails.redaction import MAX_HOLD, StreamScrubber
from interlock.protocols.base import Adapter, with_path


class StreamTextRewriter:
    """Per-stream state; subclasses say what happens to a released segment of text (`processor`)."""

    def __init__(self, adapter: Adapter, entities: bool, limit: int = MAX_HOLD) -> None:
        self.adapter = adapter
        self.entities = entities  # hold back tails that could be an entity, not only a placeholder
        self.limit = limit  # the longest tail held for an entity (`redaction.holdback`)
        self.scrubbers: dict[str, StreamScrubber] = {}
        self.templates: dict[str, tuple[str | None, Any, JsonPath]] = {}
        self.changed = False  # some event left with bytes other than those that came

    def processor(self, key: str, json_text: bool, record: bool = True) -> Callable[[str], str]:
        """What becomes of one released segment of the text `key` (`record`: False for a whole text
        that repeats deltas already processed)."""
        raise NotImplementedError

    def untexted(self, event: Event) -> Event:
        """A JSON-looking event the adapter names no texts in (or that does not parse)."""
        return event

    def event(self, event: Event) -> list[Event]:
        """The event as it leaves, after any held text it releases. Its JSON is the proxy's one parse
        of it, shared by every stage: a text is changed on a copy (`with_path`), and an event whose
        texts are unchanged leaves as it came, the same object and bytes."""
        data = event.data
        if not data:
            return [event]  # a comment (`: keep-alive`) or a bare event line: nothing ends here
        if data == "[DONE]" or data[0] not in "{[":
            return [*self.flush(), event]
        payload = event.json()
        if payload is None:  # not JSON after all
            return [*self.flush(), self.untexted(event)]
        texts = self.adapter.stream_texts(event.event, payload)
        if not texts:
            prefix = [] if self.adapter.stream_keepalive(event.event, payload) else self.flush()
            return [*prefix, self.untexted(event)]
        prefix = [] if any(t.delta for t in texts) else self.flush()
        changed = payload
        for text in texts:
            if text.delta:
                scrubber = self.scrubbers.get(text.key)
                if scrubber is None:
                    scrubber = self.scrubbers[text.key] = StreamScrubber(
                        self.processor(text.key, text.json_text), self.entities, self.limit
                    )
                new = scrubber.feed(text.text)
            else:
                new = self.processor(text.key, text.json_text, record=text.key not in self.scrubbers)(text.text)
            if new != text.text:
                changed = with_path(changed, text.path, new)
        for text in texts:
            if text.delta:  # a held tail is released in a copy of the event as it left
                self.templates[text.key] = (event.event, changed, text.path)
        if changed is payload:
            return [*prefix, event]
        self.changed = True
        return [*prefix, self.adapter.new_event(event.event, changed)]

    def flush(self) -> list[Event]:
        """Release every held tail, each in a copy of its text's last delta event."""
        out: list[Event] = []
        for key, scrubber in self.scrubbers.items():
            if not scrubber.buffer:
                continue
            text = scrubber.flush()
            name, data, path = self.templates[key]
            out.append(self.adapter.new_event(name, with_path(data, path, text), copy=True))
            self.changed = True
        return out


__all__ = ["StreamTextRewriter"]
