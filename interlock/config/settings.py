"""`Settings`, the whole effective configuration, and the small sections only it holds (identity,
OpenTelemetry, escalation, the kill switch, MCP pins, prices)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from interlock.config.guardrails import Guardrails
from interlock.config.model import Model
from interlock.config.ports import Admin, HttpServer, Listen
from interlock.config.routes import Route, Timeouts
from interlock.config.store import State, Store

#: The keys a `prices:` entry may have, USD per million tokens (`interlock.prices`).
PRICE_KEYS = ("input", "output", "cached_input", "cache_write")


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
    #: Which of them this process is (0 for a single process): worker i > 0 spills to a side file of
    #: its own, worker 0 also writes those of workers an earlier run had (tracing/side_file.py).
    worker: int = Field(0, ge=0, exclude=True)
