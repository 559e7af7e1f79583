"""What every protocol adapter offers. Only `proxy/protocols/*` knows a wire format."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from interlock.proxy.protocols.encoding import Unreadable, decode_body
from interlock.tracing.call import Call, Headers, Reply

#: The most a recorded body is decoded to for reading (a UI page, a search index, replay).
READ_LIMIT = 256 * 1024 * 1024

JsonPath = tuple[str | int, ...]


class BadRequest(Exception):
    """The agent sent something the route cannot accept; answered with a 4xx in the protocol's shape."""

    def __init__(self, message: str, code: str = "bad_request", status: int = 400) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


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


def token_count(value: Any) -> int:
    """A usage field as a count: a positive int, else 0 (absent, null, or not a number)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass(slots=True)
class RequestView:
    """A protocol-normalised view of a request."""

    operation: str  # "chat", "responses", "embeddings", "messages", "tools/call", "http", ...
    model: str | None = None
    stream: bool = False
    texts: list[TextSlot] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)  # tool names offered to the model
    params: dict[str, Any] = field(default_factory=dict)  # temperature, max_tokens, ...
    tool_name: str | None = None  # MCP tools/call
    tool_arguments: Any = None

    @property
    def input_chars(self) -> int:
        return sum(len(t.text) for t in self.texts)


class Adapter:
    """Base adapter: plain HTTP, no knowledge of the body."""

    name = "http"
    json_body = False
    #: Header that carries the provider key upstream, and how it is written.
    key_header = "authorization"
    key_prefix = "Bearer "
    #: Bytes that mark a stream's last event: an agent that leaves after one of these got everything.
    stream_end_markers: tuple[bytes, ...] = ()

    def parse(self, call: Call) -> RequestView:
        return RequestView(operation="http")

    def open_ended(self, call: Call) -> bool:
        """A response that lasts as long as the agent wants it (MCP's GET event stream): no total timeout."""
        return False

    def usage(self, call: Call) -> tuple[int | None, int | None]:
        """Input and output tokens from the (complete) response, as the provider reports them."""
        return None, None

    def token_usage(self, call: Call) -> TokenUsage | None:
        """The (complete) response's usage as it is priced; None when it reports none."""
        return None

    def response_texts(self, data: Any) -> list[TextSlot]:
        """Texts in a non-streamed response JSON (for output scanning)."""
        return []

    def response_tool_calls(self, data: Any) -> list[ToolCall]:
        """Tool calls a model made in a non-streamed response JSON."""
        return []

    def error_reply(self, status: int, code: str, message: str, *, retryable: bool = True) -> Reply:
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        return Reply(status, body, _json_headers(retryable))

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
        """Names of the tool calls that start in this SSE event (`sse.Event`) of a streamed response."""
        return []

    # -- guardrails (interlock/policies/guardstream.py) -----------------------------------------

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


def _json_headers(retryable: bool) -> Headers:
    headers: Headers = [("content-type", "application/json")]
    if not retryable:
        # The OpenAI and Anthropic SDKs honour this: interlock already retried, so they should not.
        headers.append(("x-should-retry", "false"))
    return headers


def parse_json_body(call: Call) -> Any:
    if not call.request_body:
        raise BadRequest("the request body is empty; this route expects JSON", "invalid_json")
    try:
        return json.loads(call.request_body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}", "invalid_json") from None
    except ValueError:  # an integer past Python's int-string limit (4,300 digits)
        raise BadRequest("the request body holds a number too long to read", "invalid_json") from None
    except RecursionError:
        raise BadRequest("the request body's JSON is nested too deeply", "invalid_json") from None


def json_strings(value: Any, path: JsonPath, role: str) -> list[TextSlot]:
    """The string leaves of a JSON value as text slots, in document order (iterative: an agent's
    JSON may nest deeper than Python's recursion limit)."""
    slots: list[TextSlot] = []
    stack: list[tuple[Any, JsonPath]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            slots.append(TextSlot(where, item, role))
        elif isinstance(item, dict):
            stack += [(v, (*where, k)) for k, v in reversed(item.items())]
        elif isinstance(item, list):
            stack += [(v, (*where, i)) for i, v in reversed(list(enumerate(item)))]
    return slots


def dump_body(data: Any, separators: tuple[str, str] | None = (",", ":")) -> bytes:
    """JSON that interlock writes (a re-serialised body, a rewritten event, its own reply): UTF-8,
    compact unless `separators` says otherwise. JSON text may carry a lone surrogate (`"\\ud800"`),
    which has no UTF-8 form; such a value is written with ASCII escapes instead, so it stays valid
    JSON and reaches the other side as it was sent."""
    text = json.dumps(data, ensure_ascii=False, separators=separators)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(data, separators=separators).encode()


def decoded_body(body: bytes | None, headers: Iterable[Sequence[str]]) -> bytes:
    """A recorded body with its content-encoding undone, for reading (b"" when it does not decode).
    The proxy records bodies decoded already (`encoding.py`); this reads older records and replies."""
    if not body:
        return b""
    try:
        return decode_body(body, headers, READ_LIMIT)
    except Unreadable:
        return b""


def response_json(call: Call) -> Any:
    """The (non-streamed) upstream response body parsed as JSON, or None."""
    body = decoded_body(call.response_body, call.response_headers)
    if not body:
        return None
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError):  # ValueError: JSON's errors, and a number too long to read
        return None


def set_path(document: Any, path: JsonPath, value: Any) -> None:
    """Set `document[p0][p1]...` to `value`."""
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


def get_path(document: Any, path: JsonPath) -> Any:
    target = document
    for key in path:
        target = target[key]
    return target


@dataclass(slots=True)
class StreamText:
    """A text in one SSE event of a streamed response, and where it sits in the event's JSON."""

    key: str  # the logical text it belongs to across events: "choices.0.content", "content.1.input"
    path: JsonPath
    text: str
    delta: bool = True  # a piece of the text; False: the whole text (repeated at the end)
    json_text: bool = False  # the text is JSON (tool arguments): values put into it are escaped
