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

import copy
import json
from collections.abc import Callable
from typing import Any

from interlock.core.views import JsonPath
from interlock.policies.redaction import MAX_HOLD, StreamScrubber
from interlock.protocols.base import Adapter, set_path
from interlock.protocols.sse import Event


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

    def untexted(self, raw: bytes) -> bytes:
        """A JSON-looking event the adapter names no texts in (or that does not parse)."""
        return raw

    def event(self, event: Event) -> bytes:
        """The event as it leaves, after any held text it releases."""
        if not event.data:
            return event.raw  # a comment (`: keep-alive`) or a bare event line: nothing ends here
        if event.data == "[DONE]" or event.data[0] not in "{[":
            return self.flush() + event.raw
        try:
            data = json.loads(event.data)
        except json.JSONDecodeError:
            return self.flush() + self.untexted(event.raw)
        texts = self.adapter.stream_texts(event.event, data)
        if not texts:
            prefix = b"" if self.adapter.stream_keepalive(event.event, data) else self.flush()
            return prefix + self.untexted(event.raw)
        prefix = b"" if any(t.delta for t in texts) else self.flush()
        changed = False
        for text in texts:
            if text.delta:
                scrubber = self.scrubbers.get(text.key)
                if scrubber is None:
                    scrubber = self.scrubbers[text.key] = StreamScrubber(
                        self.processor(text.key, text.json_text), self.entities, self.limit
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
            out.append(self.adapter.stream_copy_event(name, data))
            self.changed = True
        return b"".join(out)


__all__ = ["StreamTextRewriter"]
