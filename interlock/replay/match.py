"""Request matching: which recorded call answers an incoming request.

A request matches a recorded call when route, method, path, query and a canonical form of the body
agree. The canonical form is the JSON body with keys sorted and volatile fields dropped (request
ids, `user`, `stream_options`, `metadata`, timestamps inside texts; MCP's JSON-RPC `id` and
`_meta`), so that a re-run of the same agent produces the same key. Identical requests are served
in recording order: the n-th identical request gets the n-th recorded answer, preferring the
incoming request's own session when the bundle holds several.

Recorded requests whose PII was redacted (`<EMAIL_ADDRESS_1>` placeholders) cannot match by key:
they are kept aside as templates, where each placeholder matches any text, the same placeholder
the same text, and the values it captured restore the recorded response (`restore`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode

from interlock.core.call import Call
from interlock.guardrails.redaction import PLACEHOLDER
from interlock.protocols import ADAPTERS

#: Top-level request fields that change between runs of the same agent and never change the answer.
DEFAULT_IGNORE_FIELDS = frozenset(
    {"user", "stream_options", "metadata", "request_id", "idempotency_key", "prompt_cache_key", "safety_identifier"}
)
#: Keys dropped wherever they appear: MCP's per-request `_meta` (progress tokens).
DEFAULT_IGNORE_KEYS = frozenset({"_meta"})

#: ISO 8601 dates and date-times inside texts ("Today is 2026-11-24" in a system prompt).
TIMESTAMP = re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b")
TIMESTAMP_TOKEN = "<timestamp>"
#: UUIDs inside texts (a run id in a prompt, an id a tool made up): different on every run.
UUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
UUID_TOKEN = "<uuid>"


@dataclass(frozen=True, slots=True)
class MatchOptions:
    """What is ignored when comparing requests. `ignore_fields` are top-level body fields."""

    ignore_fields: frozenset[str] = DEFAULT_IGNORE_FIELDS
    ignore_keys: frozenset[str] = DEFAULT_IGNORE_KEYS
    ignore_timestamps: bool = True
    ignore_query: frozenset[str] = frozenset()
    ignore_uuids: bool = True
    #: More regular expressions whose matches inside texts are ignored (`--ignore-pattern`).
    ignore_patterns: tuple[str, ...] = ()

    def texts_cleaner(self) -> Callable[[str], str] | None:
        """What replaces volatile values inside texts, or None when nothing does."""
        return _text_cleaner(self.ignore_timestamps, self.ignore_uuids, self.ignore_patterns)

    def with_ignored(self, fields: Iterable[str]) -> MatchOptions:
        """These options plus more ignored fields: `name` is a top-level body field, `*.name` a key
        dropped at any depth."""
        top = set(self.ignore_fields)
        anywhere = set(self.ignore_keys)
        for name in fields:
            if name.startswith("*."):
                anywhere.add(name[2:])
            else:
                top.add(name)
        return replace(self, ignore_fields=frozenset(top), ignore_keys=frozenset(anywhere))


@dataclass(slots=True)
class Request:
    """An incoming request, as the replay server sees it. (Not frozen: one is made per replayed
    call, and a frozen dataclass sets each field through `object.__setattr__`, about four times the
    cost of plain assignment, measured: ~5% of a replayed call.)"""

    route: str
    protocol: str
    method: str
    path: str
    query: str = ""
    body: bytes = b""
    session: str | None = None


# -- canonical form ---------------------------------------------------------------------------------


def parse_body(body: bytes) -> Any:
    """The body as JSON, or `_RAW` when it is empty or not JSON."""
    if not body:
        return _RAW
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError):  # ValueError: bad JSON, or a number past the int limit
        return _RAW


class _Raw:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<raw body>"


_RAW: Any = _Raw()


def canonical(data: Any, protocol: str, options: MatchOptions) -> Any:
    """The JSON body with volatile fields dropped and timestamps in texts replaced."""
    if data is _RAW:
        return data
    adapter = ADAPTERS.get(protocol)
    top = options.ignore_fields | adapter.volatile_fields if adapter is not None else options.ignore_fields
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in top}
    return _clean(data, options.ignore_keys, options.texts_cleaner())


def _clean(value: Any, drop: frozenset[str], texts: Callable[[str], str] | None) -> Any:
    # `type(...) is`, not isinstance: parsed JSON holds exactly these types, and this runs for every
    # value of every replayed request (about a tenth less time in this function, measured).
    kind = type(value)
    if kind is str:
        return texts(value) if texts is not None else value
    if kind is dict:
        return {k: _clean(v, drop, texts) for k, v in value.items() if k not in drop}
    if kind is list:
        return [_clean(v, drop, texts) for v in value]
    return value


@functools.lru_cache(maxsize=16)
def _text_cleaner(timestamps: bool, uuids: bool, patterns: tuple[str, ...]) -> Callable[[str], str] | None:
    extra = [re.compile(p) for p in patterns]
    if not (timestamps or uuids or extra):
        return None

    def clean(text: str) -> str:
        # Both built-in patterns contain "-": most texts are skipped by one `in` test.
        if "-" in text:
            if uuids:
                text = UUID.sub(UUID_TOKEN, text)
            if timestamps:
                text = TIMESTAMP.sub(TIMESTAMP_TOKEN, text)
        for pattern in extra:
            text = pattern.sub("<ignored>", text)
        return text

    return clean


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def body_digest(canon: Any, body: bytes) -> str:
    raw = body if canon is _RAW else dumps(canon).encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def canonical_query(query: str, options: MatchOptions) -> str:
    if not query:
        return ""
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in options.ignore_query]
    return urlencode(sorted(pairs))


Key = tuple[str, str, str, str, str]


def request_key(request: Request, canon: Any, options: MatchOptions) -> Key:
    return (
        request.route,
        request.method,
        request.path,
        canonical_query(request.query, options),
        body_digest(canon, request.body),
    )


# -- placeholders -------------------------------------------------------------------------------------


def has_placeholder(canon: Any) -> bool:
    if isinstance(canon, str):
        return PLACEHOLDER.search(canon) is not None
    if isinstance(canon, dict):
        return any(has_placeholder(v) for v in canon.values())
    if isinstance(canon, list):
        return any(has_placeholder(v) for v in canon)
    return False


def match_template(recorded: Any, incoming: Any, values: dict[str, str]) -> bool:
    """Whether `incoming` equals `recorded` with each placeholder standing for some text (the same
    placeholder for the same text); the texts found are added to `values`."""
    if isinstance(recorded, str):
        if not isinstance(incoming, str):
            return False
        if recorded == incoming:
            return True
        if "<" not in recorded:
            return False
        return _match_text(recorded, incoming, values)
    if isinstance(recorded, dict):
        if not isinstance(incoming, dict) or recorded.keys() != incoming.keys():
            return False
        return all(match_template(v, incoming[k], values) for k, v in recorded.items())
    if isinstance(recorded, list):
        if not isinstance(incoming, list) or len(recorded) != len(incoming):
            return False
        return all(match_template(a, b, values) for a, b in zip(recorded, incoming, strict=True))
    return bool(recorded == incoming and type(recorded) is type(incoming))


def _match_text(recorded: str, incoming: str, values: dict[str, str]) -> bool:
    pattern: list[str] = []
    groups: dict[str, str] = {}
    position = 0
    for found in PLACEHOLDER.finditer(recorded):
        pattern.append(re.escape(recorded[position : found.start()]))
        token = found.group(0)
        if token in values:
            pattern.append(re.escape(values[token]))
        elif token in groups:
            pattern.append(f"(?P={groups[token]})")
        else:
            groups[token] = f"g{len(groups)}"
            pattern.append(f"(?P<{groups[token]}>.+?)")
        position = found.end()
    pattern.append(re.escape(recorded[position:]))
    found_match = re.fullmatch("".join(pattern), incoming, re.DOTALL)
    if found_match is None:
        return False
    for token, group in groups.items():
        values[token] = found_match.group(group)
    return True


def restore(data: bytes, values: dict[str, str]) -> bytes:
    """Placeholders in a recorded (JSON or SSE) response replaced by the incoming request's values,
    escaped as JSON string content."""
    if not values or b"<" not in data:
        return data
    text = data.decode("utf-8", "surrogatepass")

    def replace(found: re.Match[str]) -> str:
        value = values.get(found.group(0))
        return found.group(0) if value is None else json.dumps(value, ensure_ascii=False)[1:-1]

    return PLACEHOLDER.sub(replace, text).encode("utf-8", "surrogatepass")


# -- the index ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Recorded:
    """A recorded call in the index; `step` is its 1-based position in the recording."""

    step: int
    call: Call
    key: Key
    served: bool = False
    #: The canonical body, kept only for templates (requests with placeholders).
    template: Any = None
    #: The canonical body's leaves, computed when a miss is first compared with this call.
    leaves: frozenset[str] | None = None


@dataclass(slots=True)
class Match:
    recorded: Recorded
    #: Placeholder → the incoming request's value, to restore the response with.
    values: dict[str, str] = field(default_factory=dict)


class Matcher:
    """Recorded calls indexed by match key at load; `match` pops the next unserved one."""

    def __init__(self, calls: Sequence[Call], options: MatchOptions | None = None) -> None:
        self.options = options or MatchOptions()
        self.recorded: list[Recorded] = []
        self.unreplayable: list[Call] = []
        self.routes: dict[str, str] = {}  # route → protocol
        self.sessions: set[str] = set()
        self._by_key: dict[Key, deque[Recorded]] = {}
        self._by_session_key: dict[tuple[str, Key], deque[Recorded]] = {}
        self._templates: dict[tuple[str, str, str], list[Recorded]] = {}
        self._order: dict[str, deque[Recorded]] = {}  # route → recorded calls in order
        self.values: dict[str, str] = {}  # placeholder values seen so far in this replay
        self._served_keys: dict[Key, Recorded] = {}
        for call in calls:
            self.routes.setdefault(call.route, call.protocol)
            if call.status is None:  # never answered (the agent left first): nothing to serve
                self.unreplayable.append(call)
                continue
            self.add(call)

    def add(self, call: Call) -> Recorded:
        request = Request(call.route, call.protocol, call.method, call.path, call.query, call.request_body)
        canon = canonical(parse_body(call.request_body), call.protocol, self.options)
        entry = Recorded(len(self.recorded) + 1, call, request_key(request, canon, self.options))
        self.recorded.append(entry)
        self._order.setdefault(call.route, deque()).append(entry)
        if call.session:
            self.sessions.add(call.session)
        if canon is not _RAW and call.request_body and b"<" in call.request_body and has_placeholder(canon):
            entry.template = canon
            self._templates.setdefault((call.route, call.method, call.path), []).append(entry)
            return entry
        self._by_key.setdefault(entry.key, deque()).append(entry)
        if call.session:
            self._by_session_key.setdefault((call.session, entry.key), deque()).append(entry)
        return entry

    def key_of(self, request: Request) -> tuple[Key, Any]:
        """The match key and the parsed JSON body (or `_RAW`) of an incoming request."""
        data = parse_body(request.body)
        canon = canonical(data, request.protocol, self.options)
        return request_key(request, canon, self.options), data

    def match(self, request: Request, key: Key, data: Any) -> Match | None:
        """The recorded call for this request, marked served; None on a miss."""
        entry: Recorded | None = None
        if request.session and request.session in self.sessions:
            entry = _pop(self._by_session_key.get((request.session, key)))
        if entry is None:
            entry = _pop(self._by_key.get(key))
        if entry is not None:
            entry.served = True
            self._served_keys[key] = entry
            return Match(entry)
        templates = self._templates.get((request.route, request.method, request.path))
        if templates and data is not _RAW:
            canon = canonical(data, request.protocol, self.options)
            for candidate in templates:
                if candidate.served or candidate.key[3] != key[3]:
                    continue
                values = dict(self.values)
                if match_template(candidate.template, canon, values):
                    candidate.served = True
                    self._served_keys[key] = candidate
                    self.values.update(values)
                    return Match(candidate, values)
        return None

    def next_in_order(self, route: str) -> Recorded | None:
        """The first recorded call of this route not served yet (for `--on-miss next`), marked served."""
        entry = _pop(self._order.get(route))
        if entry is not None:
            entry.served = True
        return entry

    def expected(self, route: str) -> Recorded | None:
        """The first unserved recorded call of this route: what the agent was expected to send next."""
        queue = self._order.get(route)
        while queue and queue[0].served:
            queue.popleft()
        return queue[0] if queue else None

    def upcoming(self, route: str, limit: int) -> list[Recorded]:
        """Up to `limit` unserved recorded calls of the route, in recording order."""
        self.expected(route)  # drops served calls from the front
        out: list[Recorded] = []
        for entry in self._order.get(route, ()):
            if not entry.served:
                out.append(entry)
                if len(out) == limit:
                    break
        return out

    def last_of(self, route: str) -> list[Recorded]:
        """The route's last recorded call (when every call of it was served), as a candidate list."""
        last = next((r for r in reversed(self.recorded) if r.call.route == route), None)
        return [last] if last is not None else []

    def served_with(self, key: Key) -> Recorded | None:
        """The recorded call last served for exactly this key, if any."""
        return self._served_keys.get(key)

    def unused(self) -> list[Recorded]:
        return [r for r in self.recorded if not r.served]


def _pop(queue: deque[Recorded] | None) -> Recorded | None:
    while queue:
        entry = queue.popleft()
        if not entry.served:
            return entry
    return None
