"""Routes (`routes:`): a route's protocol, upstreams and model aliases, and how a call to them is
timed, retried, failed over and broken off (docs/routing.md)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from interlock.config.model import Model
from interlock.protocols import ADAPTERS, known_protocol


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
    #: Whether interlock asks this upstream for a stream's token usage when the agent did not
    #: (`inject`: OpenAI chat streams get `stream_options.include_usage`, the extra usage chunk is
    #: not relayed; `off`: for an OpenAI-compatible server that rejects `stream_options`, whose
    #: streams are then priced on an estimate). openai and azure_openai routes only (docs/policies.md, Cost).
    stream_usage: Literal["inject", "off"] = "inject"

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
        for upstream in self.upstreams:
            # The value, not whether it was given: `serve --port/--workers/--store` validate a dump of the
            # settings (`cli.apply_overrides`), in which every field is given, the default `inject` too.
            if upstream.stream_usage != "inject" and not adapter.asks_stream_usage:
                able = ", ".join(name for name, a in ADAPTERS.items() if a.asks_stream_usage)
                raise ValueError(
                    f"upstream {upstream.name or upstream.url!r}: stream_usage applies to {able} routes only"
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
