"""One object per proxied exchange: every stage reads and annotates it, the store keeps it.

`Call` round-trips through `to_record` / `from_record`, so replay and the UI read exactly what the
proxy wrote.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any, Literal

from interlock.core.actions import GuardrailActions
from interlock.core.fields import RECORD_SCALARS
from interlock.core.randpool import random_hex
from interlock.core.views import RequestView, ResponseView

Outcome = Literal[
    "ok", "closed", "unsupported", "upstream_error", "denied", "blocked", "aborted", "bad_request", "internal_error"
]
OUTCOMES: tuple[Outcome, ...] = (
    "ok",
    "closed",
    "unsupported",
    "upstream_error",
    "denied",
    "blocked",
    "aborted",
    "bad_request",
    "internal_error",
)
#: Outcomes of an exchange that went as its protocol means it to (not problems, not errors): `ok`;
#: `closed`, a stream with no end of its own (an MCP GET event stream) that the agent closed; and
#: `unsupported`, a protocol probe (MCP `server/discover`) the server answered "not here" (a 4xx),
#: after which the client falls back. docs/store.md lists every outcome.
SOUND_OUTCOMES: frozenset[str] = frozenset({"ok", "closed", "unsupported"})

#: Headers that carry credentials: never stored, never exported.
SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "cookie",
        "set-cookie",
        "x-goog-api-key",
        "openai-organization",
        "anthropic-admin-api-key",
    }
)

Headers = list[tuple[str, str]]


def new_id() -> str:
    """A 26-character id that sorts by creation time: 13 hex digits of µs, 13 of randomness."""
    return f"{time.time_ns() // 1000:013x}{random_hex(13)}"


#: Header names that carry credentials, by the words in them (split at `-` and `_`; docs/security.md):
#: a word ending in `token` or `key` (X-Auth-Token, X-Amz-Security-Token, X-CSRFToken,
#: Ocp-Apim-Subscription-Key, X-Goog-Api-Key), `auth`, `sig`, `signature`, or a word holding
#: `secret`, `password`, `passwd`, `credential`, `cookie` or `authorization`. Not `tokens`: the
#: providers' rate-limit headers (x-ratelimit-remaining-tokens) are kept on record.
_SECRET_WORD_ENDS = ("token", "key")
_SECRET_WORDS = frozenset({"auth", "sig", "signature"})
_SECRET_WORD_PARTS = ("secret", "password", "passwd", "credential", "cookie", "authorization")
#: Names the words catch that carry no credential, kept on record.
_NOT_SECRET = frozenset({"idempotency-key"})


def _secret_name(lower: str) -> bool:
    if lower in SECRET_HEADERS:
        return True
    if lower in _NOT_SECRET:
        return False
    for word in _WORD_SPLIT.split(lower):
        if word.endswith(_SECRET_WORD_ENDS) or word in _SECRET_WORDS:
            return True
        if any(part in word for part in _SECRET_WORD_PARTS):
            return True
    return False


_WORD_SPLIT = re.compile(r"[-_]")
_secret_header_memo: dict[str, bool] = {}


def is_secret_header(name: str) -> bool:
    """Whether a header may carry a credential: never stored, logged or exported."""
    found = _secret_header_memo.get(name)
    if found is None:
        found = _secret_name(name.lower())
        if len(_secret_header_memo) < 4096:  # bounded: names come from clients
            _secret_header_memo[name] = found
    return found


def public_headers(headers: Headers) -> Headers:
    """Headers with credentials removed: what may be stored and shown."""
    memo = _secret_header_memo
    try:  # names seen before (nearly all): one dict lookup each
        return [(k, v) for k, v in headers if not memo[k]]
    except KeyError:
        return [(k, v) for k, v in headers if not is_secret_header(k)]


#: An attempt's `error` when it was abandoned on its way (the agent left, a deadline, the kill switch):
#: the upstream had the request and may have billed it.
ATTEMPT_CANCELLED = "cancelled"


@dataclass(slots=True)
class Attempt:
    """One try at an upstream."""

    upstream: str
    url: str
    model: str | None = None
    started_ms: float = 0.0  # offset from the call's start
    duration_ms: float | None = None
    ttfb_ms: float | None = None
    status: int | None = None
    error: str | None = None
    backoff_ms: float = 0.0  # waited before this attempt


@dataclass(slots=True)
class Decision:
    """What a policy or guardrail decided about the call, and why."""

    stage: str  # "policy", "guardrails", "limits", ...
    action: str  # "allow", "deny", "modify", "monitor", "error"
    rule: str | None = None
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    #: When it was decided, in ms after the call started (set by `Call.decide`; None: not known).
    t_ms: float | None = None


@dataclass(slots=True)
class Finding:
    """A PII or secret found in a text. The raw value is kept only when configuration allows it."""

    entity: str
    where: str  # e.g. "request.messages[2].content", "response.choices[0]"
    start: int
    end: int
    score: float
    action: str  # "block", "redact", "mask", "hash", "log"
    value: str | None = None


@dataclass(slots=True)
class Chunk:
    """A piece of a streamed response and when it arrived (ms after the call started)."""

    t_ms: float
    data: bytes


@dataclass(slots=True)
class Reply:
    """A response that interlock itself gives (a denial, an error) instead of the upstream's."""

    status: int
    body: bytes
    headers: Headers = field(default_factory=lambda: [("content-type", "application/json")])


@dataclass(slots=True)
class SuppliedResponse:
    """A response a stage supplies instead of the upstream's (a cache hit, a recorded reply played
    back): the proxy relays it through the response hooks exactly as it relays an upstream's, no
    upstream attempt is made, and `meta["supplied_by"]` records `source`. What the protocol's
    adapter takes for a stream (`Adapter.is_stream`: a `text/event-stream` content type, Bedrock's
    event stream, Gemini's JSON array) is relayed as one; `body` is then its bytes or an async
    iterator of its chunks, each relayed as it comes (through the `chunk` hooks)."""

    status: int
    headers: Headers
    body: bytes | AsyncIterator[bytes]
    #: Who supplied it (the stage's name), on record.
    source: str
    #: A stream is checked for its protocol's end-of-stream event as an upstream's is (one that
    #: closes without it was cut short, and ends with `stream_truncated`). False: the chunks are the
    #: whole stream as the agent must get it, ending where they end (a recording of what an agent got).
    end_checked: bool = True
    #: A stream that broke after its chunks: (code, message). The proxy ends it as it ends an
    #: upstream's broken stream, with the protocol's error event in the agent's framing.
    broken: tuple[str, str] | None = None


@dataclass(slots=True)
class Call:
    """Everything about one proxied request."""

    id: str
    route: str
    protocol: str
    method: str
    path: str  # the upstream path, after the route segment, starting with "/"
    query: str = ""
    started_at: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)  # monotonic twin of started_at
    agent: str = "default"
    session: str | None = None
    #: The multi-agent workflow the call belongs to (a virtual key's, `X-Interlock-Workflow`, or the
    #: agents' shared W3C trace id; docs/workflows.md), or None.
    workflow: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    request_headers: Headers = field(default_factory=list)
    request_body: bytes = b""
    #: What was actually sent upstream, when a stage changed the body (redaction, clamping, aliasing).
    upstream_body: bytes | None = None
    #: The request parsed as JSON by the protocol adapter (None for non-JSON bodies). Stages that
    #: change the request edit this in place and set `request_changed`; the forwarder serialises it
    #: once into `upstream_body` before sending. `Any`: a JSON document, of whatever shape the
    #: agent sent (only its adapter knows the shape, and checks it in `parse`).
    request_json: Any = None
    request_changed: bool = False
    model: str | None = None
    stream: bool = False
    #: Parsed, protocol-normalised view of the request, set by the parse stage.
    view: RequestView | None = None
    status: int | None = None
    response_headers: Headers = field(default_factory=list)
    #: The body as the upstream sent it (not streamed) — or interlock's own reply.
    response_body: bytes | None = None
    #: The body as the agent received it, when a stage changed it (restoration, blocking).
    agent_response_body: bytes | None = None
    #: Streamed response: chunks as the upstream sent them, with arrival times.
    chunks: list[Chunk] = field(default_factory=list)
    #: Streamed response as the agent received it, when a stage changed it.
    agent_chunks: list[Chunk] | None = None
    outcome: Outcome = "ok"
    error: str | None = None
    error_code: str | None = None
    truncated: bool = False
    #: A stream that broke after bytes reached the agent was continued by another target and spliced
    #: into the same answer (`stream_rescue`, docs/routing.md); `meta["rescue"]` says where and how.
    rescued: bool = False
    decisions: list[Decision] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    #: What the call cost in USD (None: not priced, see `cost_source`), and where the price came
    #: from: `genai-prices <version>`, `prices` (interlock.yaml), `tool_prices`, `mcp` ($0) or
    #: `unpriced` (usage but no price). Both None when there was no usage to price.
    cost_usd: float | None = None
    cost_source: str | None = None
    ttfb_ms: float | None = None
    duration_ms: float | None = None
    upstream: str | None = None
    #: Set by a stage that answers the call itself (a denial); nothing is then sent upstream.
    reply: Reply | None = None
    #: Set by a stage that supplies the response itself (`SuppliedResponse`), relayed through the
    #: response hooks like an upstream's. Not recorded (`meta["supplied_by"]` is).
    supplied: SuppliedResponse | None = None
    #: Free-form annotations by stages (response model, finish reasons, tool calls made, cost...).
    meta: dict[str, Any] = field(default_factory=dict)
    #: The finished response as its adapter reads it (`core.views.ResponseView`: message, texts,
    #: tool calls, usage, summary), parsed once and shared by every reader. Not recorded.
    response_view: ResponseView | None = None
    #: The guardrail actions that apply to this call (`core.actions.GuardrailActions`), set by the
    #: policy stage and read by the guardrails stage. Not recorded.
    guardrails: GuardrailActions | None = None
    #: The policy rules with `loop:` that apply to this call (`CompiledRule`s), set by the policy
    #: stage and read by the loop stage (`policies/loops.py`). Not recorded. Items typed `Any`: a
    #: `CompiledRule` holds compiled CEL, the policy engine's own; the engine sits above this
    #: vocabulary, and policies/ is the only room that writes or reads them.
    loop_rules: list[Any] | None = None
    #: The query string as the agent sent it, when `query` (what is recorded, logged and exported)
    #: has credentials masked (`secret_query_params`); only the upstream request uses it. Not recorded.
    upstream_query: str | None = None
    #: What must read the response (rules and guardrails that apply to it), named by the stages that
    #: need it in their request hook: when the response cannot be decoded and this is not empty, the
    #: proxy ends the call with `unreadable_response` instead of relaying it unread. Not recorded.
    readers: list[str] = field(default_factory=list)
    #: Set, with the call's task cancelled, by a stage ending the call from outside while it is in
    #: flight (the kill switch): (code, message). The proxy then answers with the protocol's error
    #: (its error event, for a stream already flowing). Not recorded (the outcome and error are).
    halted: tuple[str, str] | None = None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0

    def decide(self, decision: Decision) -> None:
        if decision.t_ms is None:
            decision.t_ms = self.elapsed_ms()
        self.decisions.append(decision)

    def answer(self, reply: Reply, outcome: Outcome, code: str, error: str) -> None:
        """Answer the call without the upstream (a stage refusing it sets this; it never raises)."""
        self.reply = reply
        self.outcome = outcome
        self.error_code = code
        self.error = error

    # -- round trip ------------------------------------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        """A plain dict of JSON-able values and bytes; `from_record` inverts it. Its keys are
        `fields.RECORD_KEYS`: the scalar fields as they are, the structured ones as plain lists."""
        record = dict(zip(RECORD_SCALARS, _record_scalars(self), strict=True))
        record["request_headers"] = public_headers(self.request_headers)
        record["response_headers"] = public_headers(self.response_headers)
        record["chunks"] = [(c.t_ms, c.data) for c in self.chunks]
        record["agent_chunks"] = None if self.agent_chunks is None else [(c.t_ms, c.data) for c in self.agent_chunks]
        record["decisions"] = [_plain(d) for d in self.decisions]
        record["findings"] = [_plain(f) for f in self.findings]
        record["attempts"] = [_plain(a) for a in self.attempts]
        record["meta"] = self.meta
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Call:
        data = dict(record)
        chunks = [Chunk(t, bytes(d)) for t, d in data.pop("chunks", None) or []]
        agent_chunks_raw = data.pop("agent_chunks", None)
        call = cls(
            **{k: v for k, v in data.items() if k in _SIMPLE_FIELDS},
        )
        call.request_headers = [tuple(h) for h in data.get("request_headers") or []]
        call.response_headers = [tuple(h) for h in data.get("response_headers") or []]
        call.chunks = chunks
        call.agent_chunks = None if agent_chunks_raw is None else [Chunk(t, bytes(d)) for t, d in agent_chunks_raw]
        call.decisions = [Decision(**d) for d in data.get("decisions") or []]
        call.findings = [Finding(**f) for f in data.get("findings") or []]
        call.attempts = [Attempt(**a) for a in data.get("attempts") or []]
        call.meta = dict(data.get("meta") or {})
        return call

    def agent_body(self) -> bytes | None:
        """The response body as the agent received it (joined chunks for a stream)."""
        if self.stream and (self.chunks or self.agent_chunks):
            chunks = self.agent_chunks if self.agent_chunks is not None else self.chunks
            return b"".join(c.data for c in chunks)
        return self.agent_response_body if self.agent_response_body is not None else self.response_body


_SIMPLE_FIELDS = frozenset(RECORD_SCALARS)
_record_scalars = attrgetter(*RECORD_SCALARS)


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _plain(item: Attempt | Decision | Finding) -> dict[str, Any]:
    """A dataclass's fields as a dict, one level deep: `dataclasses.asdict` deep-copies every value
    recursively and cost 10-15 µs per Attempt or Decision, measured; this costs about 1 µs. The
    values are JSON-able already (detail dicts are serialised by the store, never mutated after)."""
    names = _FIELD_NAMES.get(type(item))
    if names is None:
        names = _FIELD_NAMES[type(item)] = tuple(f.name for f in fields(item))
    return {name: getattr(item, name) for name in names}
