"""The upstream HTTP client: httpx over the aiohttp transport, and the request interlock sends.

Plain httpx's pool collapses under concurrency (measured: about 5x fewer requests a second at 32
concurrent requests, 20x slower first bytes at 32 concurrent streams), hence httpx-aiohttp.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

import aiohttp
import httpx
import yarl
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import AiohttpResponseStream, map_aiohttp_exceptions

from interlock.config import Settings, Timeouts, Upstream
from interlock.core.call import Call, Headers
from interlock.protocols import Adapter
from interlock.protocols.encoding import KNOWN
from interlock.proxy.relay_rules import HOP_BY_HOP, connection_tokens

#: interlock's own request headers: read by interlock, never sent upstream (nor is any other
#: `x-interlock-*` header: `upstream_headers` drops the whole prefix).
INTERLOCK_HEADERS = frozenset({"x-interlock-agent", "x-interlock-session", "x-interlock-workflow"})


def make_client(settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> UpstreamClient:
    """The pooled upstream client; tests may pass another transport (e.g. httpx.MockTransport)."""
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200, keepalive_expiry=30)
    return UpstreamClient(
        transport=transport or LeanAiohttpTransport(limits=limits, trust_env=False, client=_session_factory(limits)),
        timeout=httpx_timeout(settings.timeouts),
        follow_redirects=False,
        trust_env=False,
    )


def _session_factory(limits: httpx.Limits) -> Any:
    def session() -> aiohttp.ClientSession:
        # Created on first use, inside the running loop. No cookie jar: a proxy relays cookies, and a
        # shared jar would hand one agent's cookies to the next. No automatic User-Agent or Accept:
        # the upstream gets the agent's headers, not aiohttp's.
        connector = aiohttp.TCPConnector(
            limit=limits.max_connections or 0,
            keepalive_timeout=limits.keepalive_expiry,
            ssl=httpx.create_ssl_context(trust_env=False),
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept"),
        )

    return session


class DrainingResponseStream(AiohttpResponseStream):
    """httpx-aiohttp's response body, but the bytes that arrived before a connection error are yielded
    before the error is raised.

    aiohttp's `StreamReader.read` raises a stored error (the upstream's reset, a body cut short) before
    it looks at its buffer: when the last bytes and the reset both arrive while the relay is busy (it
    was writing the previous chunk to the agent), those bytes were dropped. In a stream they can hold
    the event that decides what happens next (a tool call: the stream rescue must not continue it),
    so the relay must see them. The buffer is aiohttp's private `_buffer`/`_read_nowait` (no public
    call reads past a stored error); tests/proxy/test_upstream_client.py pins the behaviour."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._aiohttp_response.content
        with map_aiohttp_exceptions():
            while True:
                try:
                    chunk = await content.read(self.CHUNK_SIZE)
                except Exception:
                    while content._buffer:  # bounded: aiohttp stops reading past its high-water mark
                        yield content._read_nowait(self.CHUNK_SIZE)
                    raise
                if not chunk:
                    return
                yield chunk


class LeanAiohttpTransport(AiohttpTransport):
    """httpx-aiohttp's transport, with a lean path for the proxy's own requests (`UpstreamClient.open`):
    the headers go to aiohttp as the plain list the forwarder built, not through an `httpx.Request`.

    Through httpx, each header was normalised and encoded into `httpx.Headers`, then read back and
    decoded by aiohttp (`CIMultiDict(headers)` walks it as a mapping), and the URL was parsed twice
    (httpx, then yarl). What the upstream gets is the same (`tests/proxy/test_upstream_client.py`
    compares the bytes): the Host header httpx would have put first, then the headers in order,
    names in lower case, a name sent twice joined with ", " (as `httpx.Headers.items` does).
    Measured with callgrind (bench.instructions, non-streamed, c8): 2.76 M → 2.35 M instructions per
    call (docs/bench.md)."""

    _CACHE_SIZE = 1024

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: Per upstream URL string: the URL as aiohttp gets it (httpx's normalisation, then yarl's) and
        #: the Host header httpx would have added (None: the URL has no host). The same few repeat.
        self._urls: dict[str, tuple[yarl.URL, str | None]] = {}
        self._timeouts: dict[tuple[float | None, float | None, float | None], aiohttp.ClientTimeout] = {}

    def _session(self) -> aiohttp.ClientSession:
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        return self.client

    def _url(self, url: str) -> tuple[yarl.URL, str | None]:
        found = self._urls.get(url)
        if found is None:
            if len(self._urls) >= self._CACHE_SIZE:
                self._urls.clear()
            parsed = httpx.URL(url)
            host = parsed.netloc.decode("ascii") if parsed.host else None
            found = self._urls[url] = (yarl.URL(str(parsed)), host)
        return found

    def _timeout(self, timeouts: dict[str, float | None]) -> aiohttp.ClientTimeout:
        key = (timeouts.get("connect"), timeouts.get("read"), timeouts.get("pool"))
        found = self._timeouts.get(key)
        if found is None:
            if len(self._timeouts) >= self._CACHE_SIZE:
                self._timeouts.clear()
            found = self._timeouts[key] = aiohttp.ClientTimeout(sock_connect=key[0], sock_read=key[1], connect=key[2])
        return found

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """The plain httpx path (`post`, `stream`), with the same body reading as the lean one."""
        response = await super().handle_async_request(request)
        stream = response.stream
        if isinstance(stream, AiohttpResponseStream) and not isinstance(stream, DrainingResponseStream):
            response.stream = DrainingResponseStream(stream._aiohttp_response)
        return response

    async def open(
        self, method: str, url: str, headers: Headers, content: bytes, timeouts: dict[str, float | None]
    ) -> httpx.Response:
        """Send a request and return the response as soon as its head arrived (its body streams)."""
        target, host = self._url(url)
        merged: dict[str, str] = {}
        for name, value in headers:
            key = name.lower()
            if key in merged:
                merged[key] += ", " + value
            else:
                merged[key] = value
        if host is not None and "host" not in merged:  # (a route may set its own)
            merged = {"host": host, **merged}
        with map_aiohttp_exceptions():
            response = await self._session().request(
                method,
                target,
                headers=merged,
                data=content or None,
                allow_redirects=False,
                auto_decompress=False,
                compress=False,
                timeout=self._timeout(timeouts),
            )
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=DrainingResponseStream(response),
            extensions=extensions,
        )


class UpstreamClient(httpx.AsyncClient):
    """httpx's client with a lean path for what the proxy sends (`build_request`, `send(stream=True)`).

    A proxy relays cookies, credentials and redirects as they are, so this path skips the client's
    cookie jar (which would also carry one agent's cookies into the next agent's calls), auth flow,
    redirect handling, event hooks and default headers (the upstream gets no `User-Agent:
    python-httpx` the agent never sent), and hands the request straight to the transport. Parsed URLs
    are cached: the same few upstream paths repeat on every call. Anything else (`post`, `get`,
    `send` without `stream=True`) is plain httpx. Measured with callgrind (bench/, c8): 1.70 M → 1.12 M
    instructions per proxied call.
    """

    _URL_CACHE_SIZE = 1024

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._urls: dict[str, httpx.URL] = {}
        self._timeout_extension = self.timeout.as_dict()

    def build_request(  # type: ignore[override]
        self,
        method: str,
        url: httpx.URL | str,
        *,
        content: bytes | None = None,
        headers: list[tuple[str, str]] | None = None,
        timeout: Any = httpx.USE_CLIENT_DEFAULT,
        **kwargs: Any,
    ) -> httpx.Request:
        if kwargs or not isinstance(url, str) or not isinstance(content, bytes | None):
            return super().build_request(method, url, content=content, headers=headers, timeout=timeout, **kwargs)
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= self._URL_CACHE_SIZE:
                self._urls.clear()
            parsed = self._urls[url] = httpx.URL(url)
        if isinstance(timeout, httpx.Timeout):
            timeouts = timeout.as_dict()
        elif timeout is httpx.USE_CLIENT_DEFAULT:
            timeouts = self._timeout_extension
        else:
            timeouts = httpx.Timeout(timeout).as_dict()
        return httpx.Request(method, parsed, headers=headers, content=content, extensions={"timeout": timeouts})

    async def open(
        self, method: str, url: str, headers: Headers, content: bytes, timeout: Any = httpx.USE_CLIENT_DEFAULT
    ) -> httpx.Response:
        """The forwarder's request: `send(build_request(...), stream=True)`, without building an
        `httpx.Request` when the transport is interlock's own (`LeanAiohttpTransport`)."""
        transport = self._transport
        if type(transport) is not LeanAiohttpTransport or self._mounts:
            request = self.build_request(method, url, headers=headers, content=content, timeout=timeout)
            return await self.send(request, stream=True)
        if self.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        if timeout is httpx.USE_CLIENT_DEFAULT:
            timeouts = self._timeout_extension
        elif isinstance(timeout, httpx.Timeout):
            timeouts = timeout.as_dict()
        else:
            timeouts = httpx.Timeout(timeout).as_dict()
        return await transport.open(method, url, headers, content, timeouts)

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        if not stream or self._mounts or auth is not httpx.USE_CLIENT_DEFAULT or follow_redirects is True:
            return await super().send(request, stream=stream, auth=auth, follow_redirects=follow_redirects)
        if self.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        response = await self._transport.handle_async_request(request)
        response.request = request
        return response


def httpx_timeout(timeouts: Timeouts) -> httpx.Timeout:
    # `read` bounds the wait for the first byte, and then each gap between chunks: the longer of
    # `first_token` and `idle`; the forwarder cuts the shorter one itself (issue 21).
    read = max(timeouts.first_token, timeouts.idle)
    return httpx.Timeout(connect=timeouts.connect, read=read, write=timeouts.total, pool=timeouts.connect)


#: Request headers never relayed as the agent sent them: hop-by-hop, interlock's own, and those the
#: client or interlock sets (Host, Content-Length, the trace context). One set, built once.
_NOT_RELAYED = HOP_BY_HOP | INTERLOCK_HEADERS | {"host", "content-length", "traceparent", "tracestate"}


def upstream_headers(call: Call, adapter: Adapter, upstream: Upstream, *, body_len: int) -> Headers:
    """The headers sent upstream: hop-by-hop and interlock's own removed, Host and key set."""
    tokens = connection_tokens(call.request_headers)
    drop = _NOT_RELAYED | tokens if tokens else _NOT_RELAYED
    key_headers = adapter.agent_key_headers
    out: Headers = []
    agent_key: str | None = None
    agent_key_header: str | None = None
    has_accept_encoding = False
    for name, value in call.request_headers:
        if name in drop:
            continue
        if name[:12] == "x-interlock-":  # interlock's own (X-Interlock-Debug, ...): never the upstream's
            continue
        if name in key_headers:
            if agent_key is None:
                agent_key = value[7:] if name == "authorization" and value[:7].lower() == "bearer " else value
                agent_key_header = name
                if name == "authorization" and value[:7].lower() != "bearer ":
                    out.append((name, value))  # some other scheme: relay untouched
            continue
        if name == "accept-encoding":
            has_accept_encoding = True
            value = decodable_accept_encoding(value)
        out.append((name, value))
    if agent_key is None and adapter.key_query_params:
        agent_key = query_key(call, adapter.key_query_params)
    # A route's own key always wins (agents then only need a placeholder or a virtual key), and so
    # does a credential header the route sets itself (`headers:`, e.g. an Entra ID token on an
    # azure_openai route); without either, the agent's key passes through — unless it is a virtual
    # key, never sent upstream.
    if upstream.api_key:
        out.append(adapter.upstream_key(upstream.api_key))
    elif agent_key and not call.meta.get("virtual_key") and not _sets_credential(upstream, adapter):
        out.append(adapter.upstream_key(agent_key, agent_key_header))
    if not has_accept_encoding:
        # Otherwise the HTTP client would ask for gzip that the agent never asked for.
        out.append(("accept-encoding", "identity"))
    if call.trace_id and call.span_id:
        out.append(("traceparent", f"00-{call.trace_id}-{call.span_id}-01"))
    for name, value in upstream.headers.items():
        out.append((name.lower(), value))
    if body_len or call.method in ("POST", "PUT", "PATCH"):
        out.append(("content-length", str(body_len)))
    return out


def query_key(call: Call, key_params: frozenset[str]) -> str | None:
    """The agent's key from the first of these query parameters it sent, or None."""
    query = call.query if call.upstream_query is None else call.upstream_query
    for part in query.split("&") if query else ():
        if _param_name(part) in key_params:
            return unquote_plus(part.partition("=")[2]) or None
    return None


def _param_name(part: str) -> str:
    return unquote_plus(part.partition("=")[0]).lower()


def _sets_credential(upstream: Upstream, adapter: Adapter) -> bool:
    """Whether the route's own `headers:` carry a credential header of this protocol."""
    return any(n.lower() in adapter.agent_key_headers or n.lower() == adapter.key_header for n in upstream.headers)


@functools.lru_cache(maxsize=256)
def decodable_accept_encoding(value: str) -> str:
    """The agent's Accept-Encoding without the codings interlock cannot decode (issue 16: it reads
    every response), so an upstream that honours it never answers in one; `identity` if none is left.
    Values repeat from call to call: each is worked out once."""
    kept = []
    for token in value.split(","):
        coding = token.split(";")[0].strip().lower()
        if coding in KNOWN or coding == "identity":  # not `*`: it would let the upstream choose any
            kept.append(token.strip())
    return ", ".join(kept) or "identity"


def upstream_url(
    upstream: Upstream, call: Call, path: str | None = None, key_params: frozenset[str] = frozenset()
) -> str:
    """The URL sent upstream: the route's base and exactly the path policies saw (dot segments were
    refused at the edge, so the HTTP client has nothing to normalise), with the agent's query.
    `path`: another (the adapter's model rewrite for a provider with the model in the URL);
    `key_params`: query parameters that carry a key (`Adapter.key_query_params`), left out (the
    key goes in the adapter's key header)."""
    url = upstream.url + (call.path if path is None else path)
    query = call.query if call.upstream_query is None else call.upstream_query
    if key_params and query:
        query = "&".join(p for p in query.split("&") if _param_name(p) not in key_params)
    return f"{url}?{query}" if query else url


def recorded_url(upstream: Upstream, call: Call, path: str | None = None) -> str:
    """The URL as recorded on an attempt: no credentials (a masked query, no user:password@)."""
    base = _public_base(upstream.url) + (call.path if path is None else path)
    return f"{base}?{call.query}" if call.query else base


@functools.lru_cache(maxsize=256)
def _public_base(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
