"""The values an adapter's members take and return (`base.Adapter`'s signatures name them): what the
proxy hands an adapter to sign, what frames a stream, what a response says about itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from interlock.core.views import Event, JsonPath


class SigningTarget(Protocol):
    """What `Adapter.sign` reads of the upstream a request goes to (`config.Upstream` is one):
    named here, not imported, so the adapters depend on nothing above `interlock.core`."""

    @property
    def url(self) -> str: ...

    @property
    def api_key(self) -> str | None: ...

    @property
    def region(self) -> str | None: ...


#: `call.meta` key saying interlock asked the upstream for this stream's usage (`USAGE_ASKED`), which
#: the agent did not: what answers the ask is not relayed (`Adapter.unasked`), here
#: and when replay plays the recording back.
STREAM_USAGE = "stream_usage"
USAGE_ASKED = "asked"


class StreamFramer(Protocol):
    """Puts a stream's events in the framing the agent asked for (`Adapter.stream_framer`), called
    with every batch of events on its way to the agent, in order; `last` with the final one."""

    def frame(self, events: list[Event], last: bool) -> list[Event]: ...


def token_count(value: Any) -> int:
    """A usage field as a count: a positive int, else 0 (absent, null, or not a number)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass(frozen=True, slots=True)
class Unmetered:
    """A call whose response carries no token usage, known from its request (`Adapter.unmetered`):
    `free` when the provider does not bill it (priced $0, source `free`), else billed without a
    measure (unpriced, so a money budget follows `limits.unpriced`). `reason` goes on the record."""

    free: bool
    reason: str


@dataclass(slots=True)
class ResponseSummary:
    """What a finished response says about itself (OpenTelemetry's `gen_ai.response.*`)."""

    id: str | None = None
    model: str | None = None
    finish_reasons: list[str] = field(default_factory=list)

    def take(self, rid: Any, model: Any) -> None:
        """Keep the first id and model seen."""
        if self.id is None and isinstance(rid, str):
            self.id = rid
        if self.model is None and isinstance(model, str):
            self.model = model


@dataclass(frozen=True, slots=True)
class Rewritten:
    """A response body an adapter rewrote (`Adapter.rewrite_response`): its bytes, and the JSON
    document they were written from (shared with the original where unchanged: never edit it)."""

    body: bytes
    message: Any


@dataclass(slots=True)
class StreamText:
    """A text in one SSE event of a streamed response, and where it sits in the event's JSON."""

    key: str  # the logical text it belongs to across events: "choices.0.content", "content.1.input"
    path: JsonPath
    text: str
    delta: bool = True  # a piece of the text; False: the whole text (repeated at the end)
    json_text: bool = False  # the text is JSON (tool arguments): values put into it are escaped
