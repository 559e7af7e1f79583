"""What every protocol adapter offers (`Adapter`, whose defaults describe an opaque HTTP API). Only
`protocols/*` knows a wire format.

The helpers an adapter is written with live beside it, one idea each, and are re-exported here, so
an adapter imports what it needs from `base`: the values its members take and return (`values.py`),
error shaping (`errors.py`), JSON bodies (`bodies.py`), a JSON document changed at a path
(`jsonedit.py`), and a recorded response read back and re-rendered (`recorded.py`, where the members
that work on a record delegate)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from interlock.core.call import Call, Chunk, Headers, Reply
from interlock.core.views import UNPARSED, Event, RequestView, ResponseView, TextSlot, TokenUsage, ToolCall
from interlock.protocols import recorded
from interlock.protocols.bodies import (
    body_model,
    decoded_body,
    dump_body,
    json_object_body,
    json_strings,
    parse_json_body,
    response_json,
)
from interlock.protocols.conversation import ChatMessage
from interlock.protocols.errors import BadRequest, json_headers
from interlock.protocols.jsonedit import set_path, with_path, with_paths
from interlock.protocols.recorded import SKIP_KEYS
from interlock.protocols.sse import EventSplitter, iter_events
from interlock.protocols.values import (
    STREAM_USAGE,
    USAGE_ASKED,
    ResponseSummary,
    Rewritten,
    SigningTarget,
    StreamFramer,
    StreamText,
    Unmetered,
    token_count,
)

T = TypeVar("T")

#: The name the adapters import the error headers by (`errors.json_headers`).
_json_headers = json_headers


class Adapter:
    """Base adapter: plain HTTP, no knowledge of the body.

    An adapter is the whole interface to one wire format: every other module asks it, never
    `call.protocol == ...` (docs/providers.md, "Adding a provider", says what each member must do).
    The defaults describe an opaque HTTP API whose streams, if any, are server-sent events."""

    name = "http"
    #: How people write the protocol's name (`interlock serve` prints it beside each route's URL).
    title = "HTTP"
    #: The environment variable its SDKs take a base URL from (`interlock replay -- cmd` sets it).
    base_url_env: str | None = None
    json_body = False
    #: Header that carries the provider key upstream, and how it is written.
    key_header = "authorization"
    key_prefix = "Bearer "
    #: Headers an agent may carry its own key in (and a virtual key): never relayed as they are; the
    #: route's key replaces them, or without one the agent's key is re-written (`upstream_key`).
    agent_key_headers: frozenset[str] = frozenset({"authorization", "x-api-key"})
    #: Query parameters an agent may carry its key in (Gemini's `?key=`): never sent upstream as
    #: they are; the key they hold is treated like one from `agent_key_headers`. (The edge masks
    #: them in what is recorded, `secret_query_params`.)
    key_query_params: frozenset[str] = frozenset()
    #: An agent's own `Authorization: Bearer` token (OAuth, Entra ID) stays a bearer token upstream
    #: when no route key replaces it, instead of being written as `key_header` (a provider that takes
    #: both an API key and an OAuth token: Azure, Gemini).
    bearer_kept = False
    #: Bytes that mark a stream's last event: an agent that leaves after one of these got everything.
    stream_end_markers: tuple[bytes, ...] = ()
    #: The end markers start a line (SSE); False: they are matched anywhere (a binary framing).
    markers_at_line_start = True
    #: The stream's end is told by its last line read whole (`last_line_ends_stream`), not by markers:
    #: a line-per-object framing (NDJSON) whose terminator is a field, which a nested value (a tool
    #: call's arguments) can also hold.
    ends_by_last_line = False
    #: Response content types that are a stream, relayed chunk by chunk and split into events.
    stream_media_types: tuple[str, ...] = ("text/event-stream",)
    #: OpenTelemetry's `gen_ai.provider.name` for calls whose upstream host names no provider.
    provider_name: str | None = None
    #: The upstream a route of this protocol calls when its config names none (None: it must name
    #: one; openai and anthropic routes must, as their many compatible servers make a default a guess).
    default_upstream: str | None = None
    #: The path a `policy test` case without one asks for.
    default_path = "/"
    #: A model API (texts in, a generated answer with tool calls and usage out): loop detection,
    #: response summaries and the UI's "model" kind apply. False for tools (MCP, plain HTTP).
    model_api = False
    #: The body is JSON-RPC 2.0 (MCP): an error for a request with an id is a 200 carrying that id.
    is_jsonrpc = False
    #: A tool server (MCP): its calls are priced per tool (`tool_prices`), never by tokens.
    tool_server = False
    #: The price catalogue's provider (genai-prices' id) when the upstream's URL names none.
    price_provider: str | None = None
    #: Bodies and streams are relayed exactly as they come: no JSON body check at the edge, and a
    #: stream is not cut into whole events (its framing is not known).
    opaque = True
    #: A broken stream may be continued on another target (`stream_rescue`, issue 21).
    stream_rescue = False
    #: The prefill styles an upstream of this protocol may declare (`Upstream.prefill`), and the
    #: one it has when the config does not say.
    prefills: frozenset[str] = frozenset({"assistant", "prefix", "continue_final_message", "none"})
    default_prefill = "none"
    #: Its streams report token usage only when asked (OpenAI chat's `stream_options.include_usage`):
    #: interlock asks for it on the agent's behalf (`with_stream_usage`, `Upstream.stream_usage`).
    asks_stream_usage = False
    #: Top-level request fields that differ between two runs of the same agent (replay matching).
    volatile_fields: frozenset[str] = frozenset()

    def parse(self, call: Call) -> RequestView:
        return RequestView(operation="http")

    def response_view(self, call: Call) -> ResponseView:
        """The call's finished response, read once (cached on the call; see `ResponseView`)."""
        view = call.response_view
        if (
            isinstance(view, ResponseView)
            and view.body is call.response_body
            and view.chunks is call.chunks
            and view.chunk_count == len(call.chunks)
        ):
            return view
        view = call.response_view = ResponseView(self, call)
        return view

    def stored_view(
        self,
        *,
        stream: bool,
        body: bytes | None,
        headers: Iterable[Sequence[str]],
        message: str | None = None,
        chunks: bytes = b"",
    ) -> ResponseView:
        """The response view of a call read back from the store as columns rather than as a `Call`
        (the audit trail, the UI's pages): the one way an offline reader reads a recorded answer.
        A stream is read from `message`, the record's reassembly of it (`bodies.response_message`,
        the JSON text the writer stored from the live view), else from its `chunks`' bytes; a stream
        with neither (one the proxy relayed as one body: Gemini's JSON array) and a plain response
        are read from `body`. (A reader holding a `Call` asks `response_view(call)`.)"""
        return recorded.stored_view(self, stream, body, headers, message, chunks)

    def read_response(self, call: Call) -> Any:
        """The response JSON as the upstream sent it (a stream reassembled); None: not JSON. What
        `ResponseView.message` holds: read it there, parsed once per call."""
        if call.stream:
            read = self.response_view(call).stream_read
            if read is not None and read.events is not None:  # split once, as it was relayed
                return self.reassemble_events(read.events)
            if call.chunks:
                return self.reassemble_stream(b"".join(c.data for c in call.chunks))
            # No chunks: a stream the proxy relayed as one body (Gemini's JSON array) is read from it.
        return self.response_view(call).body_json()

    def read_body(self, call: Call) -> Any:
        """The response body parsed as JSON (content-encoding undone), or None: what
        `ResponseView.body_json` holds, parsed once per call."""
        return response_json(call)

    def memoized(self, call: Call, name: str, compute: Callable[[ResponseView], T]) -> T:
        """`compute(view)` once per response (e.g. the usage object both `usage` and `token_usage` read)."""
        view = self.response_view(call)
        if name not in view.memo:
            view.memo[name] = compute(view)
        return view.memo[name]  # type: ignore[no-any-return]

    # -- rewriting a response (the guardrails: restore placeholders, redact) ---------------------

    def rewrite_response(self, call: Call, rewrite: Callable[[TextSlot], str]) -> Rewritten | None:
        """The non-streamed response body with each of its texts (`ResponseView.texts`) replaced by
        `rewrite(slot)`, serialised; None when no text changes (the body stays byte-identical).
        Works on the view's one parse of the body, copy on write (`with_paths`): the view's message
        stays as the upstream sent it, for the next reader and the next rewrite (the agent's copy,
        then the store's). A stream is rewritten event by event (`new_event`), never here."""
        if call.stream:
            raise ValueError("a stream is rewritten event by event, not as a body")
        view = self.response_view(call)
        message = view.message
        if message is None:
            return None
        changes = [(slot.path, new) for slot in view.texts if (new := rewrite(slot)) != slot.text]
        if not changes:
            return None
        document = with_paths(message, changes)
        return Rewritten(dump_body(document), document)

    def replace_response(self, call: Call, rewritten: Rewritten) -> None:
        """Make a rewritten body the call's response body (the guardrails' masked record), with a view
        that reads the document it was written from: the recorder and the exporter read it without
        parsing the body again."""
        call.response_body = rewritten.body
        call.response_view = ResponseView(self, call, rewritten.message)

    def rewrite_chunks(
        self, chunks: Sequence[Chunk], rewrite: Callable[[list[Event], bool], list[Event]]
    ) -> list[Chunk]:
        """A recorded stream's chunks re-rendered: split into events (this protocol's splitter, across
        chunk boundaries), each chunk's events passed through `rewrite(events, last)` (`last` with
        the final chunk, its unterminated tail included), and what comes out kept with the chunk's
        time (a chunk left empty is dropped). The one split of a stream after its relay: a record
        keeps the upstream's chunks with their timing, not the relay's events (the guardrails'
        masked record, `StreamGuard.stored_chunks`, in a thread at the call's end)."""
        return recorded.rewrite_chunks(self, chunks, rewrite)

    # -- routing and retry ----------------------------------------------------------------------

    def upstream_problem(self, url: str) -> str | None:
        """What is wrong with a route's upstream URL for this protocol (refused at the config's
        line), or None."""
        return None

    def upstream_key(self, key: str, sent_as: str | None = None) -> tuple[str, str]:
        """The header (name, value) that carries `key` upstream: the route's key (`sent_as` None),
        or the agent's own, which arrived in header `sent_as` (one of `agent_key_headers`). Written as
        `key_header` by default; a provider with two kinds of credential keeps each in its header
        (`bearer_kept`)."""
        if sent_as == "authorization" and self.bearer_kept:
            return "authorization", "Bearer " + key
        return self.key_header, self.key_prefix + key

    def rewrite_model(self, data: Any, path: str, model: str) -> tuple[Any, str] | None:
        """The request JSON and upstream path asking for `model` instead (a model alias or
        fallback), or None when they already do. The body's `model` field by default; a provider
        with the model in the URL rewrites the path. Never changes `data` in place (the record and
        other attempts read it)."""
        if isinstance(data, dict) and data.get("model") != model:
            return {**data, "model": model}, path
        return None

    def with_stream_usage(self, call: Call, body: bytes) -> bytes | None:
        """The request body `body` (what this attempt sends, `call.request_json` parsed) asking the
        upstream for the stream's token usage, when the call is a stream that would not report it
        (`asks_stream_usage`); None when nothing needs asking. The answer then holds events the agent
        did not ask for: `unasked_event` finds them."""
        return None

    def unasked(self, call: Call) -> Callable[[Event], Event | None] | None:
        """What the agent is sent of each stream event when interlock asked the upstream for more than
        the agent did (`with_stream_usage`, said by the call's meta): the event as it came, the same
        without what only the ask added, or None for an event only the ask brought. The upstream's
        events are read (the usage folded) and recorded as they came. None: every event is relayed."""
        return None

    def may_resend(self, method: str, operation: str | None) -> bool:
        """Whether a request that may have reached the upstream can be sent again without the
        route's `retry.non_idempotent` (a model call has no side effect worth protecting; a tool's
        POST may act on the world)."""
        return self.model_api or method not in ("POST", "PATCH")

    def sign(self, method: str, url: str, headers: Headers, body: bytes, upstream: SigningTarget) -> Headers:
        """The headers an upstream request leaves with, signed for it when the provider authenticates
        each request by a signature over it (Bedrock's SigV4); unchanged by default."""
        return headers

    def is_stream(self, content_type: str, call: Call | None = None, status: int = 200) -> bool:
        """Whether a response with this content type is a stream (`stream_media_types`), relayed
        chunk by chunk with its events read as they pass. `call` and `status`: for a provider whose
        stream has a media type its other answers have too (Gemini's JSON array)."""
        return content_type.startswith(self.stream_media_types)

    def rpc_id(self, data: Any) -> Any:
        """The JSON-RPC id of a request JSON (None: not JSON-RPC, or a notification)."""
        return None

    def reply_with_id(self, body: bytes, rpc_id: Any) -> bytes:
        """A recorded response body answering another request id (`is_jsonrpc` protocols: replay
        gives the recorded answer the incoming request's id); unchanged by default, and for a body
        that is not a JSON-RPC response."""
        return body

    def event_with_id(self, event: Event, rpc_id: Any) -> Event:
        """`reply_with_id` for one event of a stream: the same event where nothing changes."""
        return event

    # -- streams: framing, reassembly -------------------------------------------------------------

    def event_splitter(self) -> EventSplitter:
        """A splitter that turns a response stream's bytes into events, whatever the chunk
        boundaries (server-sent events here; a provider with another framing returns its own
        splitter with the same `feed`/`close`/`pending`, each event's `raw` its exact bytes)."""
        return EventSplitter()

    def iter_events(self, body: bytes) -> Iterator[Event]:
        """The events of a whole recorded stream."""
        return iter_events(body)

    def event_json(self, event: Event) -> Any:
        """An event's JSON payload, or None (no data, `[DONE]`, not JSON): parsed once per event
        (`Event.json`), shared by every reader, never to be changed in place."""
        return event.json()

    def new_event(self, name: str | None, data: Any, *, copy: bool = False) -> Event:
        """An event a stage makes (a rewritten one, or with `copy` a copy sent after the one it copies),
        carrying `data`, framed as this protocol frames events (`stream_event`, `stream_copy_event`)."""
        raw = self.stream_copy_event(name, data) if copy else self.stream_event(name, data)
        return Event(raw, name, None, data)

    def fold_usage(self, event: Event, found: Any) -> Any:
        """The stream's usage object so far, `found` (None at first), after one more event: the
        proxy folds each event in as it passes (`ResponseView.stream_read`), so a stream's usage
        is never read by joining and splitting it again at its end. None: the protocol has none."""
        return found

    def stream_usage(self, view: ResponseView) -> Any:
        """A stream's usage object (`fold_usage` over its events): as the proxy summed it while the
        events passed, or, for a stream read from its record, folded over the recorded chunks."""
        read = view.stream_read
        if read is not None:
            return read.usage
        found = None
        for event in self.iter_events(b"".join(c.data for c in view.call.chunks)):
            found = self.fold_usage(event, found)
        return found

    def reassemble(self, events: list[dict[str, Any]]) -> Any:
        """The one JSON message a stream's events (their JSON objects, in order) add up to: what the
        non-streamed call would have returned. None when the format has no such message."""
        return None

    def reassemble_events(self, events: Iterable[Event]) -> Any:
        """The message a stream's events (split already, each parsed once) carried, or None when they
        hold nothing this protocol knows."""
        payloads = [p for p in (self.event_json(event) for event in events) if isinstance(p, dict)]
        return self.reassemble(payloads) if payloads else None

    def reassemble_stream(self, body: bytes) -> Any:
        """The message a whole recorded stream carried (`reassemble_events` over its events)."""
        return self.reassemble_events(self.iter_events(body))

    def recorded_stream_text(self, chunks: Sequence[tuple[float, bytes]], message: Any = UNPARSED) -> tuple[Any, str]:
        """(the message, its search text) of a recorded stream (its chunks as a record holds them),
        for the search index, in the writer thread: `message` when the proxy already reassembled it
        from the events it split as it relayed them (the call's `ResponseView`), else the stream
        reassembled, a long one from its head and tail (`REASSEMBLE_MAX`); a stream that does not
        reassemble gives its text pieces (`stream_search_text`)."""
        return recorded.recorded_stream_text(self, chunks, message)

    def stream_head_and_tail(self, body: bytes, head: int, tail: int) -> bytes:
        """A long stream's first ~`head` and last ~`tail` bytes, cut at event boundaries (what the
        search index reassembles: the head holds the text, the tail the usage and finish)."""
        return recorded.sse_head_and_tail(body, head, tail)

    # -- reading a response -----------------------------------------------------------------------

    def conversation(self, request: Any, response: Any) -> list[ChatMessage]:
        """The messages of a request JSON, then the response's (both parsed, a stream reassembled;
        either may be None), for reading (the UI, loop detection)."""
        return []

    def read_summary(self, data: Any, summary: ResponseSummary) -> None:
        """Take what one response JSON (a whole body, or one stream event) says about its id, model
        and finish reasons into `summary` (see `summary.summarize_response`)."""

    def stream_search_text(self, body: bytes) -> str:
        """A stream's text pieces joined as the agent read them, for search when the stream does
        not reassemble: the strings under the keys providers put streamed text in."""
        return recorded.stream_search_text(self, body)

    # -- policy test cases (interlock/policies/cases.py) -----------------------------------------

    def sample_body(
        self, path: str, text: str, model: str | None, tools: Sequence[str], tool: tuple[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """A `policy test` case's request body: asking `model` about `text` with these tools
        offered, or calling a tool (name, arguments). None: the protocol has no body to build."""
        return None

    def last_line_ends_stream(self, line: bytes) -> bool:
        """Whether a stream's last line (without its newline) is its protocol's last object; asked
        only when `ends_by_last_line`."""
        raise NotImplementedError

    def open_ended(self, call: Call) -> bool:
        """A response that lasts as long as the agent wants it (MCP's GET event stream): no total timeout."""
        return False

    def usage(self, call: Call) -> tuple[int | None, int | None]:
        """Input and output tokens from the (complete) response, as the provider reports them."""
        return None, None

    def token_usage(self, call: Call) -> TokenUsage | None:
        """The (complete) response's usage as it is priced; None when it reports none."""
        return None

    def unmetered(self, call: Call) -> Unmetered | None:
        """An operation whose response never reports token usage (counting tokens, some embeddings
        APIs), decided from the request: free, or billed without a measure. None: its response says."""
        return None

    def response_texts(self, data: Any) -> list[TextSlot]:
        """Texts in a non-streamed response JSON (for output scanning)."""
        return []

    def response_tool_calls(self, data: Any) -> list[ToolCall]:
        """Tool calls a model made in a non-streamed response JSON."""
        return []

    def answer_shape_problem(self, data: Any) -> str | None:
        """Why a successful response JSON is not in the format's shape where its texts would be (a string
        where the format has an object): its readers then read less or nothing, and the guardrails record
        the answer as not (fully) scanned rather than as one with no text. None: in shape, or unknown."""
        return None

    def error_reply(self, status: int, code: str, message: str, *, retryable: bool = True) -> Reply:
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        return Reply(status, body, json_headers(retryable))

    def stream_error_event(self, code: str, message: str) -> bytes:
        """An SSE event that ends a broken stream loudly, in the protocol's own format."""
        return b"event: error\ndata: " + json.dumps({"error": {"code": code, "message": message}}).encode() + b"\n\n"

    # -- policy (interlock/policies/stage.py) ---------------------------------------------------

    def strip_tools(self, data: Any, names: set[str]) -> list[str]:
        """Remove these offered tools from a request JSON in place; returns the names removed."""
        return []

    def set_param(self, data: Any, name: str, value: Any, operation: str) -> list[tuple[str, Any, Any]]:
        """Clamp (numbers: an upper bound) or set a request parameter in place; returns the
        (key, old, new) changes."""
        return []

    def stream_tool_names(self, event: Any) -> list[str]:
        """Names of the tool calls that start in this SSE event (`core.views.Event`) of a streamed response."""
        return []

    # -- guardrails (interlock/guardrails/guardstream.py) ---------------------------------------

    def stream_texts(self, event: str | None, data: Any) -> list[StreamText]:
        """The texts in one parsed SSE event of a streamed response: deltas, or whole texts."""
        return []

    def stream_keepalive(self, event: str | None, data: Any) -> bool:
        """An event that carries no text and ends none (sent to keep a connection alive): held text
        stays held across it. Any other event without text may end one (a finish chunk,
        `content_block_stop`), so held text goes out before it, in order."""
        return False

    def stream_event(self, event: str | None, data: Any) -> bytes:
        """An SSE event carrying `data` (a rewritten event, or a copy of one)."""
        head = f"event: {event}\n".encode() if event else b""
        return head + b"data: " + dump_body(data, separators=None) + b"\n\n"

    def stream_framer(self, call: Call) -> StreamFramer | None:
        """What puts the events the agent gets in the framing it asked for, when interlock's own
        events (`stream_error_event`) are not in it already; None for server-sent events."""
        return None

    def stream_copy_event(self, event: str | None, data: Any) -> bytes:
        """A copy of an event, sent after the one it copies (held text released): the same as
        `stream_event` unless the framing has separators (Gemini's JSON array)."""
        return self.stream_event(event, data)


__all__ = [
    "SKIP_KEYS",
    "STREAM_USAGE",
    "USAGE_ASKED",
    "Adapter",
    "BadRequest",
    "ResponseSummary",
    "Rewritten",
    "SigningTarget",
    "StreamFramer",
    "StreamText",
    "Unmetered",
    "_json_headers",
    "body_model",
    "decoded_body",
    "dump_body",
    "json_object_body",
    "json_strings",
    "parse_json_body",
    "response_json",
    "set_path",
    "token_count",
    "with_path",
    "with_paths",
]
