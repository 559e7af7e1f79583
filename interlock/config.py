"""interlock.yaml → validated, frozen settings. Errors name `file:line:col`.

Every section lives here so `interlock config show` and the JSON Schema see the whole shape.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from interlock.protocols import ADAPTERS, known_protocol
from interlock.yamlsource import Document, SourceError, load_yaml, parse_yaml

#: The keys a `prices:` entry may have, USD per million tokens (`interlock.prices`).
PRICE_KEYS = ("input", "output", "cached_input", "cache_write")


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listen(Model):
    host: str = "127.0.0.1"
    port: int = Field(4141, ge=0, le=65535)
    #: Host names (without port) the proxy answers besides localhost, IP addresses and its own bind
    #: address (docs/security.md: DNS rebinding). `*` answers any; `.example.com` a domain and its subdomains.
    allowed_hosts: tuple[str, ...] = ()
    #: Browser origins (`https://app.example`) allowed to call the proxy; any other request with an
    #: `Origin` or `Sec-Fetch-Site` header (a browser's) is refused. `*` allows every origin.
    cors: tuple[str, ...] = ()


class Admin(Model):
    host: str = "127.0.0.1"
    port: int = Field(4142, ge=0, le=65535)
    #: When set, every admin page and API call needs `Authorization: Bearer <token>` (or `?token=`).
    token: str | None = None
    #: Host names the admin port answers besides localhost and loopback addresses (and, with a token,
    #: any IP address and the bind address); `*` answers any (docs/security.md).
    allowed_hosts: tuple[str, ...] = ()


_BOTH_LOCATIONS = "give store.path (the embedded SQLite file) or store.url (a database server), not both"


class Store(Model):
    #: Recording on or off (off: nothing is written, the admin API has no calls; for benchmarks).
    enabled: bool = True
    path: str = "./interlock.db"
    #: A database server instead of the file: `postgresql://user@host:5432/db` (docs/store.md). Or
    #: the environment's `INTERLOCK_STORE_URL`, which wins over the file's store location.
    url: str | None = None
    #: Most connections to the database server at once (the writer, the large-call and overflow
    #: writers, retention, and the admin port's readers share them).
    pool_size: int = Field(8, ge=1, le=1000)
    #: Seconds to connect to the database server, and to wait for a pooled connection.
    connect_timeout: float = Field(5.0, gt=0)
    #: `full` keeps bodies and chunks; `metadata` keeps only the narrow call row and events.
    capture: Literal["full", "metadata"] = "full"
    batch_size: int = Field(256, ge=1)
    batch_interval_ms: int = Field(50, ge=1)
    queue_size: int = Field(20000, ge=1)
    #: Retention: calls older than this many seconds are pruned (None keeps everything).
    max_age: float | None = Field(None, gt=0)
    #: Retention: prune the oldest calls while the database is larger than this many bytes.
    max_size: int | None = Field(None, gt=0)
    #: Keep raw PII at rest (only with capture `full`); off by default, the redacted form is stored.
    store_raw_pii: bool = False
    #: Most bytes of one call kept for the record, per body and per side of a stream: a stream past
    #: it keeps its head and its last 64 KB (`meta.record_cut` says what was dropped), a body its
    #: head. Bounds the proxy's memory and the writer's work for one call (docs/store.md).
    record_max_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    #: A call holding more than this many bytes is written by its own thread, its chunks in
    #: transactions of about this size, so other calls keep being written meanwhile.
    large_call_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    #: Calls kept in memory (bytes of bodies and chunks) while the store cannot be written (disk
    #: full, file gone), retried with backoff; past it, spilled to `spill_path`.
    retry_max_bytes: int = Field(256 * 1024 * 1024, ge=0)
    #: Side file for calls that could not be written (JSON lines; default `<path>.spill`), written
    #: into the store once it can be, and at the next start.
    spill_path: str | None = None
    #: Most bytes the side file may hold; calls past it are lost, counted (`lost`) and logged.
    spill_max_bytes: int = Field(1024 * 1024 * 1024, ge=0)
    #: Whose tamper-evident chain this instance's writes extend (docs/audit.md; env
    #: `INTERLOCK_STORE_WRITER` when the file names none): instances sharing a fleet store each
    #: name their own so each anchors its own head; writers sharing a name share one chain, correctly.
    writer: str = Field("local", min_length=1, max_length=200)

    @field_validator("url")
    @classmethod
    def _database_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        scheme = urlsplit(url).scheme
        if scheme not in ("postgresql", "postgres"):
            raise ValueError(f"{scheme or 'a URL without a scheme'}: store.url takes postgresql://user@host:5432/db")
        return url

    @model_validator(mode="after")
    def _one_location(self) -> Store:
        if self.url is not None and "path" in self.model_fields_set:
            raise ValueError(_BOTH_LOCATIONS)
        return self

    @property
    def location(self) -> str:
        """What `open_store` opens: the URL, else the file."""
        return self.url or self.path


class HttpServer(Model):
    """Bounds on what an agent (or anything reaching the ports) may hold open: both ports (docs/routing.md)."""

    #: Seconds for a request's head (request line and headers) to arrive, from the connection's
    #: start or the request's first byte; past it: 408 and the connection closed (slowloris).
    header_timeout: float = Field(10.0, gt=0)
    #: Seconds to read a whole request body once its head arrived (the body-read deadline); past
    #: it: 408 `body_timeout` (a body trickled, or shorter than its Content-Length).
    body_timeout: float = Field(60.0, gt=0)
    #: Seconds an idle keep-alive connection stays open (uvicorn's timeout_keep_alive).
    keep_alive: float = Field(5.0, gt=0)
    #: Most bytes of a request head; past it: 431 and the connection closed.
    max_header_bytes: int = Field(64 * 1024, ge=1024)


class Timeouts(Model):
    connect: float = Field(5.0, gt=0)
    #: Seconds from the start of an attempt to its response head and first body bytes (a stream's
    #: first event); past it the attempt fails over (issue 21).
    first_token: float = Field(120.0, gt=0)
    #: Seconds allowed between two chunks of a stream once it is relayed; past it the stream ends
    #: with the protocol's error event.
    idle: float = Field(120.0, gt=0)
    #: Deprecated: the one timeout that did both jobs. Sets `first_token` and `idle` where they are
    #: not given (left out of a dumped config, whose `first_token` and `idle` carry it).
    first_byte: float | None = Field(None, gt=0, exclude=True)
    #: Seconds for the whole call, stream included.
    total: float = Field(600.0, gt=0)

    @model_validator(mode="after")
    def _first_byte_alias(self) -> Timeouts:
        if self.first_byte is not None:
            for name in ("first_token", "idle"):
                if name not in self.model_fields_set:
                    object.__setattr__(self, name, self.first_byte)
        return self


class Retry(Model):
    #: Attempts per call in all (1: never retry), across upstreams and fallback models. Four lets a
    #: two-upstream route try each twice (see docs/routing.md for the arithmetic).
    attempts: int = Field(4, ge=1, le=20)
    #: Upstream statuses worth another attempt; other statuses are relayed at once. 529 is
    #: Anthropic's "overloaded".
    statuses: tuple[int, ...] = (408, 429, 500, 502, 503, 504, 529)
    #: Backoff before going back to an upstream that failed: full jitter in [0, initial·2^(n-1)], capped.
    backoff_initial: float = Field(0.2, ge=0)
    backoff_max: float = Field(5.0, ge=0)
    #: A `Retry-After` (seconds or HTTP date) is waited for, but never longer than this.
    retry_after_max: float = Field(30.0, ge=0)
    #: Overall deadline in seconds for all attempts of one call, backoff included.
    deadline: float = Field(120.0, gt=0)
    #: Retry non-idempotent methods (POST/PATCH on `http` routes, MCP `tools/call`). Model protocols are
    #: always retried; a connect error (nothing sent) is always retried.
    non_idempotent: bool = False
    #: Tries on one (upstream, model) before moving on to the next target (issue 21); an alias entry
    #: may set its own (`retry: {same_target: N}`).
    same_target: int = Field(2, ge=1, le=20)
    #: Error codes that fail over to a target with a larger declared `context_window` instead of being
    #: relayed: an error's `code` or `type`, optionally `type: message prefix` (Anthropic has no code).
    #: Content-policy refusals never fail over.
    failover_codes: tuple[str, ...] = ("context_length_exceeded", "invalid_request_error: prompt is too long")

    @field_validator("failover_codes")
    @classmethod
    def _no_refusals(cls, codes: tuple[str, ...]) -> tuple[str, ...]:
        for code in codes:
            if any(word in code.lower() for word in REFUSAL_WORDS):
                raise ValueError(f"{code!r}: content-policy refusals never fail over (no routing around a filter)")
        return codes


#: Error codes and types of content-policy refusals: never failed over (see `Retry.failover_codes`).
REFUSAL_WORDS = ("content_filter", "content_policy", "safety", "refusal")


class Breaker(Model):
    enabled: bool = True
    #: Open after this many failures in a row...
    consecutive_failures: int = Field(5, ge=1)
    #: ...or when this share of the last `window` calls failed (once `min_calls` are in the window).
    failure_ratio: float = Field(0.5, gt=0, le=1)
    window: int = Field(20, ge=1)
    min_calls: int = Field(10, ge=1)
    #: Seconds an open breaker waits before letting one probe call through (half-open).
    cooldown: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _window_holds_min_calls(self) -> Breaker:
        if self.min_calls > self.window:
            raise ValueError("min_calls must not exceed window")
        return self


def http_url(value: str) -> str:
    """An upstream URL: http or https, with a host."""
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    try:
        host = urlsplit(value).hostname
    except ValueError as exc:  # e.g. a malformed port or IPv6 literal
        raise ValueError(f"is not a valid URL: {exc}") from None
    if not host:
        raise ValueError("needs a host, e.g. https://api.openai.com/v1")
    return value


class Upstream(Model):
    url: str
    name: str | None = None
    priority: int = 0
    weight: float = Field(1.0, ge=0)
    #: The real provider key, injected by interlock so that agents never hold it.
    api_key: str | None = None
    #: The region a signing provider's requests are signed for (Bedrock's SigV4); unset: the one in
    #: the upstream's host, else the environment's.
    region: str | None = None
    headers: dict[str, str] = {}
    #: How this upstream continues an assistant prefill, for `stream_rescue` (issue 21): `assistant`
    #: (a trailing assistant message is continued: Anthropic, Ollama), `prefix` (with `"prefix":
    #: true`: DeepSeek, Mistral), `continue_final_message` (vLLM, SGLang), `none`. Unset: `assistant`
    #: on anthropic routes, `none` on openai ones (api.openai.com answers a trailing assistant
    #: message with a new turn instead of continuing it).
    prefill: Literal["assistant", "prefix", "continue_final_message", "none"] | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return http_url(value).rstrip("/")


class TargetRetry(Model):
    same_target: int = Field(ge=1, le=20)


class ModelTarget(Model):
    upstream: str | None = None
    model: str
    #: The model's context window in tokens: a `retry.failover_codes` error fails over only to a
    #: target that declares a larger one.
    context_window: int | None = Field(None, gt=0)
    #: This entry's own `retry.same_target` (else the route's).
    retry: TargetRetry | None = None


class Route(Model):
    #: A name in `interlock.protocols.ADAPTERS` (openai, anthropic, mcp, http, ...).
    protocol: str = "openai"
    #: Shorthand for a single upstream.
    upstream: str | None = None
    api_key: str | None = None
    upstreams: tuple[Upstream, ...] = ()
    strategy: Literal["priority", "weight", "least_inflight"] = "priority"
    #: Model aliases: a requested model → ordered (upstream, model) fallbacks.
    models: dict[str, tuple[ModelTarget, ...]] = {}
    #: What the model an agent asks for is (an Azure deployment → the model it serves, e.g.
    #: `prod-chat: gpt-4o`), for policy, limits and pricing; the upstream still gets the name asked
    #: for. Unlisted names stand for themselves (docs/providers.md, Azure OpenAI).
    deployments: dict[str, str] = {}
    retry: Retry = Retry()
    breaker: Breaker = Breaker()
    timeouts: Timeouts | None = None
    #: Refuse calls without a configured virtual key (401); the provider key is never injected for them.
    require_key: bool = False
    #: Continue a stream that breaks or stalls after bytes reached the agent on the next target, with
    #: the delivered text as an assistant prefill, spliced into the same stream (issue 21; opt-in:
    #: openai chat and anthropic messages; docs/routing.md).
    stream_rescue: bool = False

    @field_validator("upstream")
    @classmethod
    def _upstream_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        value = http_url(value)
        protocol = info.data.get("protocol")  # validated first (declared first): a bad one is absent here
        problem = ADAPTERS[protocol].upstream_problem(value) if protocol is not None else None
        if problem is not None:
            raise ValueError(problem)  # at the upstream's line (`upstreams:` entries: at the route's)
        return value

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, value: str) -> str:
        return known_protocol(value)

    @model_validator(mode="after")
    def _one_upstream_form(self) -> Route:
        if self.upstream and self.upstreams:
            raise ValueError("give either `upstream` or `upstreams`, not both")
        if not self.upstream and not self.upstreams:
            default = ADAPTERS[self.protocol].default_upstream
            if default is None:
                raise ValueError("a route needs `upstream` or `upstreams`")
            object.__setattr__(self, "upstream", default)
        if self.upstream:
            object.__setattr__(self, "upstreams", (Upstream(url=self.upstream, api_key=self.api_key),))
        names = self.upstream_names()
        if len(set(names)) != len(names):
            raise ValueError("upstream names must be unique within a route")
        adapter = ADAPTERS[self.protocol]
        for upstream in self.upstreams:
            problem = adapter.upstream_problem(upstream.url)
            if problem is not None:
                raise ValueError(f"upstream {upstream.name or upstream.url!r}: {problem}")
        if self.stream_rescue and not adapter.stream_rescue:
            able = ", ".join(name for name, a in ADAPTERS.items() if a.stream_rescue)
            raise ValueError(f"stream_rescue continues the streams of {able} routes only")
        for upstream in self.upstreams:
            if upstream.prefill is not None and upstream.prefill not in adapter.prefills:
                raise ValueError(
                    f"upstream {upstream.name or upstream.url!r}: prefill {upstream.prefill!r} is not how a "
                    f"{self.protocol} upstream continues a message (use one of {', '.join(sorted(adapter.prefills))})"
                )
        for alias, chain in self.models.items():
            if not chain:
                raise ValueError(f"model alias {alias!r} needs at least one target")
            for target in chain:
                if target.upstream is not None and target.upstream not in names:
                    raise ValueError(
                        f"model alias {alias!r} names upstream {target.upstream!r}; upstreams: {', '.join(names)}"
                    )
        return self

    def upstream_names(self) -> list[str]:
        return [u.name or u.url for u in self.upstreams]


class VirtualKey(Model):
    agent: str
    session: str | None = None
    #: The workflow every call made with this key belongs to (docs/workflows.md).
    workflow: str | None = None


class Identity(Model):
    """Who a call is (docs/security.md). A virtual key decides the agent; a header cannot override it."""

    #: An `X-Interlock-Agent` (or `-Session`, `-Workflow`) header naming someone other than the virtual key does:
    #: `refuse` the call (403 identity_conflict), or `ignore` the header (the key's name is used).
    on_conflict: Literal["refuse", "ignore"] = "refuse"


#: Query-string parameters that carry credentials: their values are replaced by `***` in what is
#: recorded, logged and exported (the upstream still gets them).
SECRET_QUERY_PARAMS = (
    "key",
    "api_key",
    "api-key",
    "apikey",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "auth",
    "password",
    "secret",
    "client_secret",
    "sig",
    "signature",
    "code",
    "x-amz-signature",
    "x-amz-security-token",
    "x-amz-credential",
    "x-goog-signature",
    "x-goog-credential",
)


class Otel(Model):
    """OpenTelemetry export (docs/otel.md). Unset keys fall back to the standard OTEL_* variables."""

    enabled: bool = True
    #: OTLP endpoint (the base URL, like OTEL_EXPORTER_OTLP_ENDPOINT); when unset, the standard
    #: OTEL_EXPORTER_OTLP_* variables decide, and with neither set nothing is exported.
    endpoint: str | None = None
    #: None: OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL, else http/protobuf.
    protocol: Literal["http/protobuf", "grpc"] | None = None
    #: None: OTEL_SERVICE_NAME, else "interlock".
    service_name: str | None = None
    #: Export message content (gen_ai.input.messages, ...), after redaction. Off: never any content.
    capture_content: bool = False
    #: Longest content attribute, in characters; longer ones are cut.
    content_max_chars: int = Field(16384, ge=0)
    headers: dict[str, str] = {}
    #: Export metrics too (gen_ai.client.*, interlock.*), every `metrics_interval` seconds.
    metrics: bool = True
    metrics_interval: float | None = Field(None, gt=0)
    #: Finished calls waiting to become spans; beyond this, calls are not exported (and counted).
    queue_size: int = Field(4096, ge=1)
    #: Where spans are built and encoded: a child `process` (off this process's CPU), or a `thread`.
    worker: Literal["process", "thread"] = "process"


class Escalation(Model):
    #: URL that receives a JSON POST when a call exhausts its retries or a breaker opens or closes.
    webhook: str | None = Field(None, pattern=r"^https?://")
    timeout: float = Field(5.0, gt=0)
    headers: dict[str, str] = {}
    #: Events waiting to be posted; more are dropped (and counted), never waited for.
    queue_size: int = Field(100, ge=1)


class KillSwitch(Model):
    """Stopping sessions and agents (docs/policies.md, "Kill switch")."""

    #: Seconds between reads of the store's stops: a stop made elsewhere (`interlock sessions stop`,
    #: another replica) is applied within this (a stop made through this interlock's API at once).
    poll_interval: float = Field(0.5, gt=0, le=60)


class McpPins(Model):
    """Pinned MCP tool contracts (docs/mcp.md, "Pinned tool contracts")."""

    #: Pin each MCP route's tools at its first `tools/list` answer and watch later answers.
    enabled: bool = True
    #: A pinned tool that changed, or a new tool: record it (monitor), leave it out of the list and
    #: refuse its calls (hide), or refuse the whole list and the changed tools' calls (deny).
    on_change: Literal["monitor", "hide", "deny"] = "hide"
    #: Seconds between reads of the store's pins (an approval, or a change another replica or worker
    #: saw, reaches this interlock's tools/call checks within this).
    poll_interval: float = Field(2.0, gt=0, le=3600)


class CustomRecognizer(Model):
    """A recognizer of your own: regular expressions and/or a deny-list of exact words."""

    entity: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    patterns: tuple[str, ...] = ()
    deny_list: tuple[str, ...] = ()
    score: float = Field(0.8, ge=0, le=1)

    @model_validator(mode="after")
    def _valid(self) -> CustomRecognizer:

        if not self.patterns and not self.deny_list:
            raise ValueError("a recognizer needs `patterns` or `deny_list`")
        for pattern in self.patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None
        return self


GuardrailAction = Literal["block", "redact", "mask", "hash", "log"]


#: The PII entities `guardrails.entities` may name → the presidio predefined recognizer class that
#: finds each (policies/pii.py loads them). Here, at the edge, so the config is checked against it
#: without importing the guardrails. The first seven are loaded by default.
BUILTIN_RECOGNIZERS: dict[str, str] = {
    "EMAIL_ADDRESS": "EmailRecognizer",
    "PHONE_NUMBER": "PhoneRecognizer",
    "CREDIT_CARD": "CreditCardRecognizer",
    "US_SSN": "UsSsnRecognizer",
    "IBAN_CODE": "IbanRecognizer",
    "IP_ADDRESS": "IpRecognizer",
    "CRYPTO": "CryptoRecognizer",
    "URL": "UrlRecognizer",
    "MAC_ADDRESS": "MacAddressRecognizer",
    "DATE_TIME": "DateRecognizer",
    "US_PASSPORT": "UsPassportRecognizer",
    "US_DRIVER_LICENSE": "UsLicenseRecognizer",
    "US_BANK_NUMBER": "UsBankRecognizer",
    "US_ITIN": "UsItinRecognizer",
    "UK_NHS": "NhsRecognizer",
    "UK_NINO": "UkNinoRecognizer",
    "MEDICAL_LICENSE": "MedicalLicenseRecognizer",
}


class Guardrails(Model):
    """PII and secrets detection. Actions map an entity type (or `*`, or `SECRET`) to what happens."""

    #: Default actions for requests and responses, used when no policy sets them for a call.
    request: dict[str, GuardrailAction] = {}
    response: dict[str, GuardrailAction] = {}
    #: When the analyzer fails: `deny` the call if an action is `block` (fail closed), or `allow` it.
    on_error: Literal["deny", "allow"] = "deny"
    #: Built-in pattern recognizers to load (presidio entity names); see docs/guardrails.md.
    entities: tuple[str, ...] = (
        "EMAIL_ADDRESS",
        "PHONE_NUMBER",
        "CREDIT_CARD",
        "US_SSN",
        "IBAN_CODE",
        "IP_ADDRESS",
        "CRYPTO",
    )
    recognizers: tuple[CustomRecognizer, ...] = ()
    #: Detections scoring below this are ignored.
    score_threshold: float = Field(0.4, ge=0, le=1)
    #: An installed spaCy model (package name or directory) for PERSON, LOCATION, ...; never downloaded.
    spacy_model: str | None = None
    language: str = "en"
    #: Secrets (API keys, tokens, private keys, passwords in URLs) as the entity type `SECRET`.
    secrets: bool = True
    secrets_confidence: Literal["low", "medium", "high"] = "medium"
    #: Where kingfisher keeps its compiled rules (default: the OS cache directory).
    secrets_cache_dir: str | None = None
    #: Reversible redaction: sessions remembered, and values remembered per session (oldest go first).
    vault_sessions: int = Field(10000, ge=1)
    vault_values: int = Field(1000, ge=1)
    #: Texts whose analysis is remembered (by content hash), so re-sent history is not analysed again.
    cache_texts: int = Field(50000, ge=0)
    #: Streamed responses: the longest unbroken token or PEM block held back to be scanned whole
    #: (secrets, custom patterns); the agent waits for such a token until it ends or reaches this.
    stream_holdback_chars: int = Field(4096, ge=256)
    #: Key for the `hash` action (HMAC-SHA256); random per process when unset.
    hash_key: str | None = None

    @field_validator("request", "response")
    @classmethod
    def _entity_names(cls, table: dict[str, str]) -> dict[str, str]:

        for entity in table:
            if entity != "*" and not re.fullmatch(r"[A-Z][A-Z0-9_]*", entity):
                raise ValueError(f"entity {entity!r} must be `*` or an upper-case name like EMAIL_ADDRESS")
        return table

    @field_validator("entities")
    @classmethod
    def _known_entities(cls, entities: tuple[str, ...]) -> tuple[str, ...]:
        for entity in entities:
            if entity not in BUILTIN_RECOGNIZERS:
                raise ValueError(f"unknown entity {entity!r}; built in: {', '.join(sorted(BUILTIN_RECOGNIZERS))}")
        return entities

    @field_validator("spacy_model")
    @classmethod
    def _spacy_model_installed(cls, name: str | None) -> str | None:

        if name is None or Path(name).expanduser().is_dir():
            return name
        if importlib.util.find_spec(name.replace("-", "_")) is None:
            raise ValueError(f"spaCy model {name!r} is neither an installed package nor a directory (never downloaded)")
        return name


StateFailure = Literal["fail_open", "fail_closed"]


class StateOnFailure(Model):
    """What a limit does when the shared state cannot be reached (docs/policies.md, "Shared state").
    Open: the call passes, with a `limits error` decision on its record and a log line (never silent);
    closed: the call is refused with 503 `state_unavailable`. Money and token budgets default closed
    (an overspend cannot be taken back); rate and concurrency limits open (the provider enforces its
    own rate limits, and a lost minute window or slot count cannot run up a bill past the budgets)."""

    rate: StateFailure = "fail_open"
    concurrency: StateFailure = "fail_open"
    budget: StateFailure = "fail_closed"


class State(Model):
    """Shared state for a fleet (limits, budgets, concurrency slots, the redaction vault) on Redis or
    Valkey. Without `url`, all of it stays in this process (one replica: docs/policies.md)."""

    #: `redis://[user:password@]host:6379/0` (or `rediss://`); env `INTERLOCK_STATE_URL` when unset.
    url: str | None = None
    #: Prefix of every key interlock writes, so several fleets (or tests) can share one server.
    key_prefix: str = "interlock:"
    #: Seconds one round trip to Redis may take (connect included) before the concern's failure mode
    #: applies: a Redis that is down or stalled never hangs a call.
    timeout: float = Field(0.5, gt=0, le=30)
    on_failure: StateOnFailure = StateOnFailure()
    #: Seconds a replica's concurrency slots outlive it: each replica renews a lease every third of
    #: this; a replica that crashed stops renewing, and its slots are freed this long after.
    slot_lease: float = Field(30.0, ge=3)
    #: Seconds a session's vault lives in Redis after its last use (the embedded vault's bound is a
    #: count of sessions instead).
    vault_ttl: float = Field(86400.0, gt=0)
    #: Key for the vault's values at rest (AES-256-GCM; any string of 32+ characters, stretched by
    #: HKDF); env `INTERLOCK_VAULT_KEY` when unset. Required when guardrails run with `url` set.
    vault_key: str | None = Field(None, repr=False)

    @field_validator("url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        if url is not None and urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"{url.split(':', 1)[0]!r}: a state url is redis://, rediss:// or unix://")
        return url

    @field_validator("vault_key")
    @classmethod
    def _long_key(cls, key: str | None) -> str | None:
        if key is not None and len(key) < 32:
            raise ValueError("vault_key must be at least 32 characters (e.g. `openssl rand -base64 32`)")
        return key

    def resolved(self) -> State:
        """With the `INTERLOCK_STATE_URL` and `INTERLOCK_VAULT_KEY` environment variables applied (a
        Secret in Kubernetes; never written into interlock.yaml). The one rule for every variable that
        names a setting: set and non-empty, it wins over the file (docs/fleet.md, "Configuration")."""
        url = os.environ.get("INTERLOCK_STATE_URL") or self.url or None
        key = os.environ.get("INTERLOCK_VAULT_KEY") or self.vault_key or None
        if url == self.url and key == self.vault_key:
            return self
        return State.model_validate({**self.model_dump(), "url": url, "vault_key": key})


class Settings(Model):
    """The whole effective configuration."""

    listen: Listen = Listen()
    admin: Admin = Admin()
    store: Store = Store()
    #: Shared state on Redis for a fleet (None url: in this process).
    state: State = State()
    default_agent: str = "default"
    #: Largest request body accepted, in bytes.
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1)
    #: Largest non-streamed response body read from an upstream; past it the agent gets
    #: `502 response_too_large` and the call is recorded `truncated` with the body's head.
    max_response_bytes: int = Field(32 * 1024 * 1024, ge=1)
    #: Largest streamed response relayed; past it the stream ends with the protocol's error event
    #: (`stream_too_large`).
    max_stream_bytes: int = Field(1024 * 1024 * 1024, ge=1)
    #: Largest non-streamed response body once its content-encoding (gzip, br...) is undone: a bound
    #: on what a small compressed body may expand to. Past it the response is unreadable.
    max_decoded_bytes: int = Field(256 * 1024 * 1024, ge=1)
    timeouts: Timeouts = Timeouts()
    #: Agent-side bounds: request head and body deadlines, keep-alive, head size (both ports).
    server: HttpServer = HttpServer()
    #: Seconds SIGTERM waits for calls in flight before closing them.
    shutdown_grace: float = Field(30.0, ge=0)
    routes: dict[str, Route] = {}
    virtual_keys: dict[str, VirtualKey] = {}
    identity: Identity = Identity()
    #: Query parameters (case-insensitive) whose values are never recorded, logged or exported.
    secret_query_params: tuple[str, ...] = SECRET_QUERY_PARAMS
    policies: tuple[str, ...] = ()
    otel: Otel = Otel()
    escalation: Escalation = Escalation()
    kill_switch: KillSwitch = KillSwitch()
    mcp_pins: McpPins = McpPins()
    #: Guardrails (PII and secrets): engine settings and the default actions (policies may override).
    guardrails: Guardrails = Guardrails()
    #: Prices in USD per million tokens over the built-in catalogue (genai-prices; docs/policies.md,
    #: "Cost"): {model glob: {input, output, cached_input, cache_write}}.
    prices: dict[str, dict[str, float]] = {}
    #: USD per MCP tool call: {tool glob: USD}; other tool calls cost $0.
    tool_prices: dict[str, float] = {}
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("prices")
    @classmethod
    def _price_keys(cls, prices: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for model, price in prices.items():
            unknown = sorted(set(price) - set(PRICE_KEYS))
            if unknown:
                raise ValueError(f"prices for {model!r}: unknown key {unknown[0]!r} (known: {', '.join(PRICE_KEYS)})")
            if any(value < 0 for value in price.values()):
                raise ValueError(f"prices for {model!r}: a price cannot be negative")
        return prices

    @field_validator("tool_prices")
    @classmethod
    def _tool_prices(cls, prices: dict[str, float]) -> dict[str, float]:
        for tool, price in prices.items():
            if price < 0:
                raise ValueError(f"tool_prices for {tool!r}: a price cannot be negative")
        return prices

    @field_validator("routes")
    @classmethod
    def _route_names(cls, routes: dict[str, Route]) -> dict[str, Route]:
        for name in routes:
            if not name or "/" in name:
                raise ValueError(f"route name {name!r} must be one non-empty path segment")
        return routes

    @model_validator(mode="after")
    def _keys_for_required_routes(self) -> Settings:
        needing = [name for name, route in self.routes.items() if route.require_key]
        if needing and not self.virtual_keys:
            raise ValueError(f"route {needing[0]!r} has require_key: true but no virtual_keys are configured")
        return self

    #: Where the settings came from (a file path, or "<embedded default>").
    source: str = Field("<embedded default>", exclude=True)
    #: Processes serving these settings side by side (`serve --workers N` sets it for each worker):
    #: above 1 and without `state.url`, counters and the vault go to the store's SQLite file.
    workers: int = Field(1, ge=1, exclude=True)


DEFAULT_CONFIG = """\
# interlock's embedded default: what `interlock serve` runs with no --config.
listen: {host: 127.0.0.1, port: 4141}
admin: {host: 127.0.0.1, port: 4142}
store: {path: ./interlock.db}
default_agent: default
# Secure by default (docs/security.md): a credential in a request (an API key, a token, a private
# key an agent read from a file) reaches no provider: it is replaced by a placeholder, restored in
# the reply for the agent. Only the secrets scanner runs (no PII entities: nothing else is loaded).
guardrails: {request: {SECRET: redact}, entities: []}
routes:
  openai:
    protocol: openai
    upstream: https://api.openai.com/v1
    api_key: ${OPENAI_API_KEY:-}
  anthropic:
    protocol: anthropic
    upstream: https://api.anthropic.com
    api_key: ${ANTHROPIC_API_KEY:-}
  local:
    protocol: openai
    upstream: http://127.0.0.1:11434/v1
"""


def _blank_to_none(data: Any) -> Any:
    # `${OPENAI_API_KEY:-}` expands to "" when unset: treat an empty key as no key.
    if isinstance(data, dict):
        return {k: (None if k in ("api_key", "token") and v == "" else _blank_to_none(v)) for k, v in data.items()}
    if isinstance(data, list):
        return [_blank_to_none(v) for v in data]
    return data


def settings_from_document(document: Document) -> Settings:
    data = document.data if document.data is not None else {}
    if not isinstance(data, dict):
        raise document.error((), "the configuration must be a mapping")
    routes = data.get("routes")
    for name in routes if isinstance(routes, dict) else ():
        if not isinstance(name, str) or not name or "/" in name:
            message = f"route name {name!r} must be one non-empty path segment (agents call /{name}/...)"
            raise document.error(("routes", name), f"routes: {message}")
    store = data.get("store")
    if isinstance(store, dict) and store.get("url") is not None and "path" in store:
        # At the `url` line (the model's own check could only name the `store:` line).
        raise document.error(("store", "url"), f"store.url: {_BOTH_LOCATIONS}")
    data = _store_writer_from_environment(_store_url_from_environment(data))
    try:
        settings = Settings.model_validate({**_blank_to_none(data), "source": document.file})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        # pydantic reports tuple members and union branches in the path; keep the YAML part.
        path = tuple(p for p in loc if not (isinstance(p, str) and p in {"function-after[_one_upstream_form()]"}))
        where = ".".join(str(p) for p in path) or "(top level)"
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown field"
        raise document.error(path, f"{where}: {message}") from None
    _check_policy_paths(document, settings)
    _check_vault_key(document, settings)
    return settings


def _check_vault_key(document: Document, settings: Settings) -> None:
    """A vault on Redis keeps values encrypted, so it needs a key: without one, startup stops here
    (values are never written to a shared server in the clear, and a key made up per process would
    leave the other replicas unable to restore them). Guardrails could run: the config's actions, or
    any policy (a policy may turn redaction on)."""
    guardrails = settings.guardrails
    if not (guardrails.request or guardrails.response or settings.policies):
        return
    state = settings.state.resolved()
    if state.url and not state.vault_key:
        message = (
            "state: the redaction vault is on Redis (state.url) and needs state.vault_key (or the "
            "INTERLOCK_VAULT_KEY environment variable): 32+ characters, the same on every replica"
        )
        raise document.error(("state",), message)


def fleet_warnings(settings: Settings) -> list[str]:
    """What a store on a database server (`store.url`) does not make shared, as `file:line:col:
    message` (`config check` prints them, `serve` logs them at startup): without `state.url` the
    limits, budgets and concurrency caps count per process and the vault lives in it, so N
    replicas give N budgets; and the spill file defaults to a local path. Warnings, not errors: one
    interlock recording to PostgreSQL is a fine deployment; a fleet must be told (docs/fleet.md)."""
    store = settings.store
    if not store.url:
        return []
    from_env = os.environ.get("INTERLOCK_STORE_URL") == store.url
    named = "INTERLOCK_STORE_URL" if from_env else "store.url"
    document = load_yaml(settings.source, expand_env=True) if Path(settings.source).is_file() else None

    def at(path: tuple[str, ...], message: str) -> str:
        line, col = document.locate(path) if document is not None else (1, 1)
        return f"{settings.source}:{line}:{col}: {message}"

    found: list[str] = []
    guardrails = settings.guardrails
    if not settings.state.resolved().url:
        shared = []
        if settings.policies:
            shared.append(
                "limits, budgets and concurrency caps count per replica (day counters saved to the local"
                f" file {store.path}), so N replicas allow N times each limit"
            )
        if guardrails.request or guardrails.response or settings.policies:
            shared.append(
                "the redaction vault is per replica (a session's next turn on another replica cannot restore its placeholders)"
            )
        if shared:
            found.append(
                at(
                    ("store", "url"),
                    f"{named} shares the calls but not the state: without state.url (Redis), "
                    + "; ".join(shared)
                    + ". Set state.url for a fleet; for one replica this is expected",
                )
            )
    if store.spill_path is None:
        found.append(
            at(
                ("store", "url"),
                f"{named}: calls that cannot be written while the database is unreachable spill to the local"
                f" file {store.path}.spill (beside store.path, in the working directory): set store.spill_path"
                " to a persistent volume, or they are lost with the container",
            )
        )
    return found


def _store_url_from_environment(data: dict[str, Any]) -> dict[str, Any]:
    """`INTERLOCK_STORE_URL` names the store whatever the file says (a fleet's pods share one
    config and get the database from a Secret): it replaces the file's `store.url` and `path`."""
    url = os.environ.get("INTERLOCK_STORE_URL")
    store = data.get("store")
    if not url or not (store is None or isinstance(store, dict)):
        return data
    kept = {k: v for k, v in (store or {}).items() if k not in ("path", "url")}
    return {**data, "store": {**kept, "url": url}}


def _store_writer_from_environment(data: dict[str, Any]) -> dict[str, Any]:
    """`INTERLOCK_STORE_WRITER` names this instance's chain (docs/audit.md), whatever the file says
    (the environment wins, as for every setting it names): a fleet's pods share one config and take it
    from their own name (the downward API)."""
    writer = os.environ.get("INTERLOCK_STORE_WRITER")
    store = data.get("store")
    if not writer or not (store is None or isinstance(store, dict)):
        return data
    return {**data, "store": {**(store or {}), "writer": writer}}


def _check_policy_paths(document: Document, settings: Settings) -> None:
    """A policy path that does not exist stops startup (a typo must not run with no policy), so it is
    an error here, at the line of interlock.yaml that names it, for `config check` and `serve` alike.
    Relative paths are relative to the configuration file (as `policies.stage.policy_paths` reads them)."""
    base = Path(document.file).parent if Path(document.file).is_file() else Path.cwd()
    for i, entry in enumerate(settings.policies):
        resolved = Path(entry) if Path(entry).is_absolute() else base / entry
        if not resolved.exists():
            message = f"policies[{i}]: {entry!r} does not exist ({resolved}; relative to this file)"
            raise document.error(("policies", i), message)


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Load `path`, or the embedded default when `path` is None. Raises SourceError."""
    if path is None:
        return settings_from_document(parse_yaml(DEFAULT_CONFIG, "<embedded default>", expand_env=True))
    return settings_from_document(load_yaml(path, expand_env=True))


def mask_url_password(url: str) -> str:
    """`redis://:secret@host:6379/0` → `redis://:***@host:6379/0` (what `config show` and logs may print)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def settings_to_yaml(settings: Settings) -> str:
    """The effective configuration as YAML, with secrets masked: keys, tokens, the hash key, header
    values (they carry credentials), and virtual keys (the names are the credentials)."""
    data = settings.model_dump(mode="json", exclude_defaults=False)

    def mask_headers(section: dict[str, Any]) -> None:
        if section.get("headers"):
            section["headers"] = {name: "***" for name in section["headers"]}

    for route in data.get("routes", {}).values():
        route.pop("upstream", None)
        route.pop("api_key", None)
        for upstream in route.get("upstreams", []):
            if upstream.get("api_key"):
                upstream["api_key"] = "***"
            mask_headers(upstream)
    if data.get("admin", {}).get("token"):
        data["admin"]["token"] = "***"
    for section in ("otel", "escalation"):
        mask_headers(data.get(section) or {})
    if (data.get("guardrails") or {}).get("hash_key"):
        data["guardrails"]["hash_key"] = "***"
    state = data.get("state") or {}
    if state.get("vault_key"):
        state["vault_key"] = "***"
    if state.get("url"):
        state["url"] = mask_url_password(state["url"])
    data["virtual_keys"] = {f"***{key[-4:]}": value for key, value in (data.get("virtual_keys") or {}).items()}
    return str(yaml.safe_dump(data, sort_keys=False))


__all__ = ["Settings", "Route", "Upstream", "SourceError", "load_settings", "settings_to_yaml", "DEFAULT_CONFIG"]
