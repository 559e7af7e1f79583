"""Sending a call upstream: choose an upstream, try it, and hand back the response head and first bytes.

Nothing has reached the agent while `Forwarder.open` runs, so this is where retries and fallbacks
may happen; once it returns, the response is committed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from interlock.config import Route, Settings, Upstream
from interlock.proxy.protocols import Adapter
from interlock.proxy.upstream import upstream_headers, upstream_url
from interlock.tracing.call import Attempt, Call


class UpstreamFailure(Exception):
    """No upstream gave an answer; `status` and `code` shape the error the agent gets."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(slots=True)
class Opened:
    """An upstream response whose head (and first body bytes) arrived."""

    response: httpx.Response
    upstream: Upstream
    first: bytes
    rest: AsyncIterator[bytes]

    async def aclose(self) -> None:
        await self.response.aclose()


def describe_error(exc: BaseException) -> str:
    name = type(exc).__name__
    text = str(exc)
    return f"{name}: {text}" if text else name


class Forwarder:
    """One attempt at the route's first upstream. (Routing and retries extend `open`.)"""

    def __init__(self, settings: Settings, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.client = client

    async def open(self, call: Call, route: Route, adapter: Adapter, *, inject_key: bool) -> Opened:
        if call.request_changed and call.request_json is not None:
            call.upstream_body = json.dumps(call.request_json, ensure_ascii=False, separators=(",", ":")).encode()
        upstream = route.upstreams[0]
        return await self.attempt(call, adapter, upstream, inject_key=inject_key)

    async def attempt(
        self,
        call: Call,
        adapter: Adapter,
        upstream: Upstream,
        *,
        inject_key: bool,
        backoff_ms: float = 0.0,
        model: str | None = None,
    ) -> Opened:
        body = call.upstream_body if call.upstream_body is not None else call.request_body
        headers = upstream_headers(call, adapter, upstream, inject_key=inject_key, body_len=len(body))
        url = upstream_url(upstream, call)
        attempt = Attempt(
            upstream=upstream.name or upstream.url,
            url=url,
            model=model or call.model,
            started_ms=call.elapsed_ms(),
            backoff_ms=backoff_ms,
        )
        call.attempts.append(attempt)
        call.upstream = attempt.upstream
        request = self.client.build_request(call.method, url, headers=headers, content=body)
        response: httpx.Response | None = None
        try:
            response = await self.client.send(request, stream=True)
            attempt.status = response.status_code
            raw = response.aiter_raw()
            first = b""
            async for first in raw:
                if first:
                    break
            attempt.ttfb_ms = call.elapsed_ms() - attempt.started_ms
            return Opened(response, upstream, first, raw)
        except (httpx.HTTPError, OSError) as exc:
            attempt.error = describe_error(exc)
            attempt.duration_ms = call.elapsed_ms() - attempt.started_ms
            if response is not None:
                await response.aclose()
            if isinstance(exc, httpx.TimeoutException):
                message = f"upstream {attempt.upstream} timed out: {attempt.error}"
                raise UpstreamFailure(504, "upstream_timeout", message) from None
            message = f"upstream {attempt.upstream} failed: {attempt.error}"
            raise UpstreamFailure(502, "upstream_unreachable", message) from None

    async def aclose(self) -> None:
        await self.client.aclose()
