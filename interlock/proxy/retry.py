"""When to try an upstream again, and how long to wait first.

The forwarder asks three questions after a failed attempt: is this failure worth another attempt
(`Failure`, and the route's retry statuses in `Router.statuses`), may this request be sent twice (`may_resend`), and how long to
wait before going back to an upstream that already failed (`backoff_delay`, `retry_after_seconds`).
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from dataclasses import dataclass

import aiohttp
import httpx

from interlock.config import REFUSAL_WORDS, Retry, Route
from interlock.protocols import ADAPTERS
from interlock.proxy.relay_rules import describe_error

#: Failure kinds: `connect` (nothing reached the upstream), `timeout` (no first byte in time),
#: `reset` (the connection broke before the first byte), `deadline` (the call's retry deadline hit),
#: `malformed` (the response was not valid HTTP: a bad status line, an invalid header, a body longer
#: than its Content-Length): an upstream failure like a reset, never interlock's own error.
CONNECT, TIMEOUT, RESET, DEADLINE, MALFORMED = "connect", "timeout", "reset", "deadline", "malformed"

#: What the upstream client raises: httpx's errors, the socket's, and aiohttp's own for a response it
#: could not parse (httpx-aiohttp maps only aiohttp's connection and payload errors to httpx's).
UPSTREAM_ERRORS: tuple[type[BaseException], ...] = (
    httpx.HTTPError,
    OSError,
    aiohttp.ClientError,
    aiohttp.http_exceptions.HttpProcessingError,
)


@dataclass(slots=True)
class Failure:
    """An attempt that got no usable response head and first byte."""

    kind: str
    detail: str
    #: True when the request may have reached the upstream (so resending it is not always safe).
    sent: bool


def classify(exc: BaseException) -> Failure:
    """What kind of failure an upstream exception is.

    httpx-aiohttp maps every `aiohttp.ClientConnectionError` to `httpx.ConnectTimeout` (a refused
    connection and a server that hung up alike), so the aiohttp cause decides where there is one.
    """
    malformed = (aiohttp.ClientResponseError, aiohttp.http_exceptions.HttpProcessingError)
    for error in (exc, exc.__cause__):
        if isinstance(error, malformed):
            return Failure(MALFORMED, describe_error(error), sent=True)
    cause = exc.__cause__ if isinstance(exc.__cause__, aiohttp.ClientError) else None
    if cause is None and isinstance(exc, aiohttp.ClientError):
        cause = exc
    detail = describe_error(cause or exc)
    if cause is not None:
        if isinstance(cause, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
            return Failure(CONNECT, detail, sent=False)
        if isinstance(cause, aiohttp.ServerTimeoutError):
            return Failure(TIMEOUT, detail, sent=True)
        return Failure(RESET, detail, sent=True)
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return Failure(CONNECT, detail, sent=False)
    if isinstance(exc, httpx.TimeoutException):
        return Failure(TIMEOUT, detail, sent=True)
    if isinstance(exc, ConnectionRefusedError):
        return Failure(CONNECT, detail, sent=False)
    return Failure(RESET, detail, sent=True)


def may_resend(route: Route, method: str, operation: str | None) -> bool:
    """Whether a request that may have reached the upstream can be sent again.

    Model calls are retried (a failed generation has no side effect worth protecting). Tool calls
    may act on the world: POST and PATCH on `http` routes, and MCP `tools/call`, are resent only
    when the route says `retry.non_idempotent: true`. A request that never left (connect error) is
    always safe to send elsewhere.
    """
    if route.retry.non_idempotent:
        return True
    return ADAPTERS[route.protocol].may_resend(method, operation)


def backoff_delay(retry: Retry, tries: int) -> float:
    """Seconds to wait before trying an upstream for the `tries`+1-th time: exponential, capped,
    with full jitter (uniform in [0, cap]), which spreads synchronised retries best (AWS
    Architecture Blog, "Exponential Backoff And Jitter")."""
    cap = min(retry.backoff_max, retry.backoff_initial * (2.0 ** max(0, tries - 1)))
    return random.uniform(0.0, cap)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        seconds = float(value)  # not in the RFC, but some providers send "1.5"
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def failover_code(body: bytes, codes: tuple[str, ...]) -> str | None:
    """The entry of `retry.failover_codes` that an error body matches, if any (issue 21).

    An entry matches the error's `code` or `type` (OpenAI: `{"error": {"code":
    "context_length_exceeded", ...}}`), or, written `type: prefix`, its `type` with a message that
    starts with the prefix (Anthropic has no code: `{"type": "error", "error": {"type":
    "invalid_request_error", "message": "prompt is too long: 208656 tokens > 200000 maximum"}}`).
    A content-policy refusal never matches, whatever the list says.
    """
    if not codes or len(body) > 65536:
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None
    code, kind, message = (str(error.get(k) or "").lower() for k in ("code", "type", "message"))
    if any(word in code or word in kind for word in REFUSAL_WORDS):
        return None
    for entry in codes:
        name, colon, prefix = entry.partition(":")
        name, prefix = name.strip().lower(), prefix.strip().lower()
        if colon:
            if name in (code, kind) and message.startswith(prefix):
                return entry
        elif name in (code, kind):
            return entry
    return None


__all__ = [
    "Failure",
    "failover_code",
    "classify",
    "may_resend",
    "backoff_delay",
    "retry_after_seconds",
    "CONNECT",
    "TIMEOUT",
    "RESET",
    "DEADLINE",
    "MALFORMED",
    "UPSTREAM_ERRORS",
]
