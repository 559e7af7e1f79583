"""The relay's rules that the agent-facing app and the upstream client share, kept apart from the
client stack: which headers are hop-by-hop and what the agent gets of a response's, a route's
timeouts, and how an upstream that failed is told.

Apart because `proxy/app.py` needs them without the HTTP client (httpx, aiohttp): a proxy app whose
stages answer every call has no upstream (replay's: `replay/server.py`), and importing that stack
cost a replay's start about a second under shared load (measured: 2.1 -> 4.7 s ready).
"""

from __future__ import annotations

from interlock.config import Route, Settings, Timeouts
from interlock.core.call import Headers

#: RFC 9110 §7.6.1 connection-specific fields, never forwarded in either direction.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)


class UpstreamFailure(Exception):
    """No upstream gave an answer; `status` and `code` shape the error the agent gets."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def describe_error(exc: BaseException) -> str:
    name = type(exc).__name__
    text = " ".join(str(exc).split())  # aiohttp's parse errors span lines
    return f"{name}: {text}" if text else name


def connection_tokens(headers: Headers) -> frozenset[str]:
    """Header names listed in `Connection`, which are hop-by-hop too."""
    tokens: set[str] = set()
    for name, value in headers:
        if name == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return frozenset(tokens)


def response_headers_for_agent(headers: Headers, *, streamed: bool, body_changed: bool) -> list[tuple[bytes, bytes]]:
    drop = HOP_BY_HOP | connection_tokens(headers)
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        if name in drop:
            continue
        if name == "content-length" and (streamed or body_changed):
            continue
        if name == "content-encoding" and body_changed:
            continue
        out.append((name.encode("latin-1"), value.encode("latin-1")))
    return out


def route_timeouts(settings: Settings, route: Route) -> Timeouts:
    return route.timeouts or settings.timeouts


__all__ = [
    "HOP_BY_HOP",
    "UpstreamFailure",
    "connection_tokens",
    "describe_error",
    "response_headers_for_agent",
    "route_timeouts",
]
