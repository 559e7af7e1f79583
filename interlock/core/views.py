"""The protocol-normalised views of a request and a response, and the value types they hold.

The protocol adapters (`interlock/protocols/`) build them; every other room reads them, so they sit
at the bottom beside the `Call` and know no wire format: a `ResponseView` asks its adapter (any
`ResponseReader`) to read the response on first use."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from interlock.core.call import Call

#: Where a value sits in a JSON document: keys and list indexes, outermost first.
JsonPath = tuple[str | int, ...]


def where(path: JsonPath) -> str:
    """`("messages", 2, "content")` → `messages[2].content`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# `json.loads` is JSONDecoder.decode, then raw_decode, then this C scanner: three Python frames
# and two regex matches a value, about as much as the scanning itself for a stream's small events.
# The writer parses every event of a recorded stream to reassemble it (13 a stream in bench's
# fake): this cut the stream's writer work by ~0.1 M instructions a call (docs/bench.md).
# (typeshed does not list the attribute: it is set in JSONDecoder.__init__.)
_scan_once: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def json_document(text: str) -> Any:
    """`json.loads(text)` for a text that starts with `{` or `[` (so no leading whitespace or BOM to
    skip), or None where json.loads raises (not JSON, nested past the recursion limit, a number past
    the int-string limit): the same values from the same C scanner, called directly."""
    try:
        value, end = _scan_once(text, 0)
    except (ValueError, RecursionError, StopIteration):
        return None
    # json.loads allows trailing JSON whitespace (" \t\n\r") and nothing else.
    if end != len(text) and text[end:].strip(" \t\n\r"):
        return None
    return value


@dataclass(slots=True)
class TextSlot:
    """A text an upstream will read, and where it sits in the request or response JSON."""

    path: JsonPath
    text: str
    role: str  # "system", "user", "assistant", "tool", "tool_args", "tool_result"


@dataclass(slots=True)
class ToolCall:
    name: str
    arguments: str  # JSON text as the model produced it
    id: str | None = None


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """A response's token usage as it is priced (`interlock.prices`): `input` counts every input
    token, cached ones included (OpenAI's `prompt_tokens` do; Anthropic's `input_tokens` do not, so
    its adapter adds the cache reads and writes); `cache_read` and `cache_write` are the parts of it
    read from or written to the provider's prompt cache; `reasoning` the part of `output` spent
    thinking (both providers count it in the output)."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0


@dataclass(slots=True)
class RequestView:
    """A protocol-normalised view of a request."""

    operation: str  # "chat", "responses", "embeddings", "messages", "tools/call", "http", ...
    model: str | None = None
    stream: bool = False
    texts: list[TextSlot] = field(default_factory=list)
    #: Where the request holds input the model reads but that has no text to scan (a legacy prompt or
    #: an embeddings input given as token ids), with what it is: the guardrails record it, or refuse
    #: the call under a `block` action (fail closed), never pass it as scanned.
    unscannable: list[str] = field(default_factory=list)
    #: Images, audio and files the model reads (`messages[0].content[1] (image_url)`): interlock has no
    #: OCR or speech recognition and never fetches a URL, so these are unscanned. Apart from
    #: `unscannable` because the rule differs: recorded as a skip, refused only under
    #: `guardrails.media: deny` (refusing every vision call under a PII rule would break vision agents).
    media: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)  # tool names offered to the model
    params: dict[str, Any] = field(default_factory=dict)  # temperature, max_tokens, ...
    tool_name: str | None = None  # MCP tools/call
    #: The tool call's arguments, the JSON value the agent sent (`Any`: JSON has no narrower type
    #: in Python without a schema, and a tool's schema is the tool's).
    tool_arguments: Any = None
    #: The request body `call.request_json` was parsed from (set by the parse stage): while that body
    #: is still the one recorded and nothing changed the request, the writer indexes the parsed
    #: document instead of parsing the body again (`tracing/writing.py`).
    source: bytes | None = None

    def media_part(self, path: JsonPath, kind: str) -> None:
        self.media.append(f"{where(path)} ({kind})")

    @property
    def input_chars(self) -> int:
        return sum(len(t.text) for t in self.texts)

    def rename_model(self, names: dict[str, str]) -> str | None:
        """Take the model a route's `deployments` say the asked-for name serves (an Azure
        deployment → its model); returns the name asked for, or None when it is not listed."""
        asked = self.model
        if asked is None or asked not in names:
            return None
        self.model = names[asked]
        return asked


class ResponseReader(Protocol):
    """What a `ResponseView` asks of its protocol adapter (`protocols.base.Adapter` is one).
    `Any` here and in `ResponseView` is a parsed JSON document: its shape is the wire format's,
    which only the adapter knows."""

    def read_response(self, call: Call) -> Any:
        """The response JSON as the upstream sent it (a stream reassembled); None: not JSON."""
        ...

    def read_body(self, call: Call) -> Any:
        """The response body parsed as JSON (content-encoding undone); None: none, or not JSON."""
        ...

    def response_texts(self, data: Any) -> list[TextSlot]: ...

    def response_tool_calls(self, data: Any) -> list[ToolCall]: ...

    def usage(self, call: Call) -> tuple[int | None, int | None]: ...

    def token_usage(self, call: Call) -> TokenUsage | None: ...

    def stream_usage(self, view: ResponseView) -> Any:
        """A stream's usage object, as summed while its events passed (`view.stream_read`) or read
        from its record."""
        ...


#: The most bytes of a stream's events a `StreamRead` keeps for readers after the relay (its
#: reassembly for search and summaries); a longer stream is read from its record instead.
STREAM_READ_MAX = 4 * 1024 * 1024


#: A ResponseView's message (`ResponseView.parsed`) or an event's JSON not read yet. Typed `Any` like the message it
#: stands in for, so a reader compares `view.parsed() is UNPARSED` without a cast.
UNPARSED: Any = object()
_UNREAD = UNPARSED


class Event:
    """One event of a response stream as the adapter's splitter cut it: its exact bytes (`raw`,
    terminator included), its name, its data text, and that text's JSON, parsed on first use and
    kept, so every stage that reads the event shares one parse (`json`). The parsed value is shared:
    a reader that changes it works on a copy (`protocols.base.with_path`). An event a stage makes (a
    rewritten one, `Adapter.new_event`) is built from its JSON; its data text is written only if asked for."""

    __slots__ = ("raw", "event", "_data", "_json")

    def __init__(self, raw: bytes, event: str | None, data: str | None, payload: Any = UNPARSED) -> None:
        self.raw = raw
        self.event = event
        self._data = data
        self._json = payload

    @property
    def data(self) -> str:
        data = self._data
        if data is None:
            data = self._data = json.dumps(self._json, ensure_ascii=False)
        return data

    def json(self) -> Any:
        """The data's JSON value; None when it has none (no data, `[DONE]`, not JSON)."""
        value = self._json
        if value is UNPARSED:
            data = self._data
            value = None
            if data and data[0] in "{[":
                value = json_document(data)
            self._json = value
        return value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return (self.raw, self.event, self.data) == (other.raw, other.event, other.data)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Event(raw={self.raw!r}, event={self.event!r})"


@dataclass(slots=True)
class StreamRead:
    """A stream as the proxy read it while relaying it, split once into events (issue 18): the usage
    folded from them (`Adapter.fold_usage`) and the events themselves, so that nothing after the relay
    (the response view's message, the summary, the search index) splits the stream again. `events`
    holds the events; None once the stream passed `limit` bytes. `usage` is typed `Any`:
    it is the adapter's own running total, made and read only by its `fold_usage`."""

    usage: Any = None
    events: list[Event] | None = field(default_factory=list)
    size: int = 0
    #: The most bytes of events kept: `STREAM_READ_MAX`, or less where the record keeps less.
    limit: int = STREAM_READ_MAX

    def take(self, events: list[Event], fold: Callable[[Any, Any], Any]) -> None:
        """Fold more events (the upstream's, in order) into the usage, and keep them while bounded."""
        usage, size = self.usage, self.size
        for event in events:
            usage = fold(event, usage)
            size += len(event.raw)
        self.usage, self.size = usage, size
        kept = self.events
        if kept is not None:
            if size > self.limit:
                self.events = None
            else:
                kept += events


class ResponseView:
    """A finished response as its adapter reads it, computed once per call and cached on it
    (`Adapter.response_view`), so the usage stage, the tool-call policy, loop detection and the
    exporters share one parse. Each part is read on first use. Read-only: a stage that rewrites the
    response asks the adapter (`rewrite_response`), which writes a copy of the parts it changes."""

    __slots__ = (
        "adapter",
        "call",
        "body",
        "chunks",
        "chunk_count",
        "memo",
        "stream_read",
        "_message",
        "_body_json",
        "_texts",
        "_tool_calls",
    )

    def __init__(self, adapter: ResponseReader, call: Call, message: Any = _UNREAD) -> None:
        """`message`: the response's message when it is known already (a record's stored
        reassembly of its stream, `Adapter.stored_view`); by default it is read on first use."""
        self.adapter, self.call = adapter, call
        #: What it was read from: a body or chunks replaced (the guardrails' masked record), or chunks added
        #: later, make it stale.
        self.body, self.chunks, self.chunk_count = call.response_body, call.chunks, len(call.chunks)
        #: Values an adapter derives once per response (its usage object).
        self.memo: dict[str, Any] = {}
        #: What the proxy gathered from a stream's events as they passed; None for a stream not read
        #: that way (a record read later: the adapter reads the recorded chunks).
        self.stream_read: StreamRead | None = None
        self._message: Any = message  # the JSON message, or `UNPARSED` until first read
        self._body_json: Any = _UNREAD
        self._texts: list[TextSlot] | None = None
        self._tool_calls: list[ToolCall] | None = None

    @property
    def message(self) -> Any:
        """The response JSON as the upstream sent it (a stream reassembled); None: not JSON."""
        if self._message is _UNREAD:
            self._message = self.adapter.read_response(self.call)
        return self._message

    def body_json(self) -> Any:
        """The response body parsed as JSON, or None (no body, or not JSON): parsed once. For a
        plain response it is the message; a stream's message is its events reassembled instead,
        and its body (when it has one: one relayed whole, Gemini's JSON array) is read here."""
        if self._body_json is _UNREAD:
            self._body_json = self.adapter.read_body(self.call)
        return self._body_json

    def parsed(self) -> Any:
        """The message if some reader already parsed it, else `UNPARSED` (never parses: for a
        reader that can do its own cheaper work, e.g. the recorder's search text)."""
        return self._message

    @property
    def texts(self) -> list[TextSlot]:
        if self._texts is None:
            message = self.message
            self._texts = self.adapter.response_texts(message) if message is not None else []
        return self._texts

    @property
    def tool_calls(self) -> list[ToolCall]:
        if self._tool_calls is None:
            message = self.message
            self._tool_calls = self.adapter.response_tool_calls(message) if message is not None else []
        return self._tool_calls

    @property
    def usage(self) -> tuple[int | None, int | None]:
        """Input and output tokens as the provider reports them."""
        return self.adapter.usage(self.call)

    @property
    def token_usage(self) -> TokenUsage | None:
        """The usage as it is priced (cache and reasoning tokens included)."""
        return self.adapter.token_usage(self.call)
