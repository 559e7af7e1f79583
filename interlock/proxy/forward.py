"""Sending a call upstream: choose a target, try it, retry or fail over, and hand back the response
head and first bytes.

Nothing has reached the agent while `Forwarder.open` runs, so this is the only place where retries
and fallbacks happen; once it returns, the response is committed. A non-streamed body is read whole
here (the app buffers it anyway), so a connection that breaks mid-body is retried too. Every attempt
is an `Attempt` on `call.attempts`; `call.upstream` is the one that answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from interlock.config import Route, Settings, Upstream
from interlock.proxy.breaker import CLOSED, OPEN, CircuitBreaker
from interlock.proxy.escalation import Escalator
from interlock.proxy.protocols import Adapter
from interlock.proxy.protocols.base import dump_body
from interlock.proxy.protocols.encoding import Decoder, Unreadable
from interlock.proxy.retry import (
    DEADLINE,
    TIMEOUT,
    UPSTREAM_ERRORS,
    Failure,
    backoff_delay,
    classify,
    describe_error,
    may_resend,
    retry_after_seconds,
)
from interlock.proxy.routing import Router, Target, UpstreamState
from interlock.proxy.upstream import recorded_url, route_timeouts, upstream_headers, upstream_url
from interlock.tracing.call import Attempt, Call

log = logging.getLogger("interlock.proxy")


class UpstreamFailure(Exception):
    """No upstream gave an answer; `status` and `code` shape the error the agent gets."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _Nothing:
    """An exhausted async iterator: the `rest` of a body that was read whole."""

    def __aiter__(self) -> _Nothing:
        return self

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration


_NOTHING = _Nothing()

#: Compressed bodies longer than this are decoded in a worker thread.
_DECODE_ON_LOOP = 64 * 1024


@dataclass(slots=True)
class Opened:
    """An upstream response whose head (and first body bytes; all of them unless it is a stream) arrived."""

    response: httpx.Response
    upstream: Upstream
    first: bytes
    rest: AsyncIterator[bytes]
    state: UpstreamState | None = None
    call: Call | None = None
    closed: bool = False
    #: A non-streamed body past `max_response_bytes`: `first` is its head, the rest was not read.
    too_large: bool = False
    #: The content-encoding undone by `Forwarder.decoded` (`first` and `rest` are plain), if any.
    encoding: str | None = None
    #: Why the body cannot be read (an unknown content-encoding, bytes that do not decode), if so.
    unreadable: str | None = None

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.state is not None:
            self.state.inflight -= 1
            if self.call is not None and self.call.error_code == "stream_broken":
                self.state.breaker.failure()
        await self.response.aclose()


def _breaker_failure(status: int) -> bool:
    # 429 is the upstream working as designed (Retry-After says when to come back), not ill health.
    return status >= 500 or status == 408


class Forwarder:
    """Routes each call to its upstreams, with retries, fallbacks and circuit breakers."""

    def __init__(self, settings: Settings, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.client = client
        self.escalator = Escalator(settings.escalation, client)
        self.routers: dict[str, Router] = {name: self._router(name, route) for name, route in settings.routes.items()}

    def _router(self, name: str, route: Route) -> Router:
        timeouts = route_timeouts(self.settings, route)
        return Router(name, route, self._breaker_changed, first_byte=timeouts.connect + timeouts.first_byte)

    def router(self, name: str, route: Route) -> Router:
        router = self.routers.get(name)
        if router is None or router.route is not route:
            router = self.routers[name] = self._router(name, route)
        return router

    async def open(self, call: Call, route: Route, adapter: Adapter) -> Opened:
        """The first acceptable response (head and first bytes), after retries and fallbacks.

        Raises `UpstreamFailure` when no attempt got a response; when the last one got a retryable
        status, that response is returned (and `call.meta["retries_exhausted"]` says interlock gave up).
        """
        if call.request_changed and call.request_json is not None:
            call.upstream_body = dump_body(call.request_json)
        plain = call.upstream_body
        router = self.router(call.route, route)
        plan = router.plan(call.model)
        target = router.pick(plan)
        if target is None:
            raise self._circuit_open(call, router, plan)
        if router.first_attempt_limit is None:
            result = await self.attempt(call, adapter, router, target, plain)
        else:
            result = await self._cut_attempt(call, adapter, router, target, plain, router.first_attempt_limit)
        if type(result) is Opened and result.response.status_code not in router.statuses:
            return await self.decoded(result)
        return await self.decoded(await self._retry(call, adapter, router, plan, target, result, plain))

    async def decoded(self, opened: Opened) -> Opened:
        """The response with its content-encoding undone: the one place a body is decoded, so every
        reader (usage, tool-call policy, guardrails, the record, search) and the agent get the same
        plain bytes (issue 16). A stream is decoded piece by piece as it arrives; a whole body here,
        bounded by `max_decoded_bytes`. What cannot be decoded (an unknown coding, bytes that do not
        decode) stays as it came, with `unreadable` saying why: the app then fails the call closed
        when a rule must read it, or relays it untouched when none does."""
        coding = opened.response.headers.get("content-encoding")
        if not coding or opened.too_large:  # a body cut at max_response_bytes is refused as it is
            return opened
        try:
            decoder = Decoder.for_headers([("content-encoding", coding)])
        except Unreadable as exc:
            opened.unreadable = str(exc)
            return opened
        if decoder is None:
            return opened
        if opened.rest is _NOTHING:
            body = opened.first
            limit = self.settings.max_decoded_bytes
            try:
                if len(body) > _DECODE_ON_LOOP:  # about 1 ms of inflating per 100 KB: not on the loop
                    opened.first = await asyncio.to_thread(decoder.decode, body, limit)
                else:
                    opened.first = decoder.decode(body, limit)
            except Unreadable as exc:
                opened.unreadable = str(exc)
                return opened
        else:
            try:
                first = b"".join(decoder.feed(opened.first))
            except Unreadable as exc:
                opened.unreadable = str(exc)
                return opened
            opened.first = first
            opened.rest = decoder.stream(opened.rest)
        opened.encoding = decoder.encoding
        return opened

    async def attempt(
        self,
        call: Call,
        adapter: Adapter,
        router: Router,
        target: Target,
        plain: bytes | None,
        *,
        backoff_ms: float = 0.0,
    ) -> Opened | Failure:
        """One try at one target; a transport failure comes back as a `Failure`, never raised."""
        state = target.state
        upstream = state.upstream
        body = self._body(call, target, plain)
        headers = upstream_headers(call, adapter, upstream, body_len=len(body))
        url = upstream_url(upstream, call)
        attempt = Attempt(
            upstream=state.name,
            url=url if call.upstream_query is None and "@" not in url else recorded_url(upstream, call),
            model=target.model or call.model,
            started_ms=call.elapsed_ms(),
            backoff_ms=backoff_ms,
        )
        call.attempts.append(attempt)
        call.upstream = state.name
        breaker = state.breaker
        probe = breaker.acquire()
        state.inflight += 1
        if router.timeout is None:
            request = self.client.build_request(call.method, url, headers=headers, content=body)
        else:
            request = self.client.build_request(call.method, url, headers=headers, content=body, timeout=router.timeout)
        response: httpx.Response | None = None
        too_large = False
        try:
            response = await self.client.send(request, stream=True)
            attempt.status = status = response.status_code
            raw = response.aiter_raw()
            first = b""
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                # An open-ended stream (MCP's GET) may stay silent for long: its head is enough.
                if not adapter.open_ended(call):
                    async for first in raw:
                        if first:
                            break
                attempt.ttfb_ms = call.elapsed_ms() - attempt.started_ms
                rest: AsyncIterator[bytes] = raw
            else:
                parts: list[bytes] = []
                size, limit = 0, self.settings.max_response_bytes
                async for part in raw:
                    if not parts:
                        attempt.ttfb_ms = call.elapsed_ms() - attempt.started_ms
                    size += len(part)
                    if size > limit:  # held whole, so bounded: the head is kept, the rest never read
                        too_large = True
                        break
                    parts.append(part)
                first = parts[0] if len(parts) == 1 else b"".join(parts)
                attempt.duration_ms = call.elapsed_ms() - attempt.started_ms
                if attempt.ttfb_ms is None:
                    attempt.ttfb_ms = attempt.duration_ms
                rest = _NOTHING
        except UPSTREAM_ERRORS as exc:
            failure = classify(exc)
            attempt.error = f"{failure.kind}: {failure.detail}"
            attempt.duration_ms = call.elapsed_ms() - attempt.started_ms
            state.inflight -= 1
            breaker.failure(probe)
            if response is not None:
                await _close_quietly(response)
            return failure
        except BaseException:  # cancelled: the agent left, or the retry deadline passed
            attempt.error = "cancelled"
            attempt.duration_ms = call.elapsed_ms() - attempt.started_ms
            state.inflight -= 1
            breaker.release(probe)
            if response is not None:
                await _close_quietly(response)
            raise
        if _breaker_failure(status):
            breaker.failure(probe)
        else:
            breaker.success(probe)
        opened = Opened(response, upstream, first, rest, state, call)
        opened.too_large = too_large
        return opened

    async def _cut_attempt(
        self,
        call: Call,
        adapter: Adapter,
        router: Router,
        target: Target,
        plain: bytes | None,
        seconds: float,
        *,
        backoff_ms: float = 0.0,
    ) -> Opened | Failure:
        """An attempt cut when the route's retry deadline passes (`seconds` from now)."""
        try:
            async with asyncio.timeout(seconds):
                return await self.attempt(call, adapter, router, target, plain, backoff_ms=backoff_ms)
        except TimeoutError:
            message = f"the route's retry deadline of {router.route.retry.deadline}s passed"
            call.attempts[-1].error = f"{DEADLINE}: {message}"
            return Failure(DEADLINE, message, sent=True)

    def _body(self, call: Call, target: Target, plain: bytes | None) -> bytes:
        """What this attempt sends: the request, with `model` rewritten when the target asks for
        another model (from `request_json`, so other stages' edits are kept)."""
        model = target.model
        if model is not None:
            data = call.request_json
            if isinstance(data, dict) and data.get("model") != model:
                body = dump_body({**data, "model": model})
                call.upstream_body = body
                return body
        call.upstream_body = plain
        return plain if plain is not None else call.request_body

    async def _retry(
        self,
        call: Call,
        adapter: Adapter,
        router: Router,
        plan: tuple[Target, ...],
        target: Target,
        result: Opened | Failure,
        plain: bytes | None,
    ) -> Opened:
        """The slow path, after a first attempt that failed: more attempts until one succeeds or the
        budget, the deadline, the breakers or idempotency say stop."""
        retry = router.route.retry
        first_index = len(call.attempts) - 1
        deadline_ms = call.attempts[first_index].started_ms + retry.deadline * 1000.0
        resend = may_resend(router.route, call.method, getattr(call.view, "operation", None))
        first_target = target
        tries: dict[Target, int] = {target: 1}
        retry_after: dict[Target, float] = {}
        while True:
            stop = ""
            if isinstance(result, Opened):
                seconds = retry_after_seconds(result.response.headers.get("retry-after"))
                if seconds is not None:
                    retry_after[target] = seconds
                if not resend:
                    stop = "not_idempotent"
            elif result.kind == DEADLINE:
                stop = "deadline"
            elif result.sent and not resend:
                stop = "not_idempotent"
            wait = 0.0
            following: Target | None = None
            if not stop and len(call.attempts) - first_index >= retry.attempts:
                stop = "attempts"
            if not stop:
                following = router.pick(plan, tries)
                if following is None:
                    stop = "circuit_open"
            if following is not None and not stop:
                done = tries.get(following, 0)
                if done:
                    seconds = retry_after.get(following)
                    wait = min(seconds, retry.retry_after_max) if seconds is not None else backoff_delay(retry, done)
                if call.elapsed_ms() + wait * 1000.0 >= deadline_ms:
                    stop = "deadline"
            if stop or following is None:
                return self._give_up(call, router, result, stop, first_index)
            if isinstance(result, Opened):
                await result.aclose()
            if wait > 0.0:
                await asyncio.sleep(wait)
            target = following
            tries[target] = tries.get(target, 0) + 1
            left = (deadline_ms - call.elapsed_ms()) / 1000.0
            result = await self._cut_attempt(call, adapter, router, target, plain, left, backoff_ms=wait * 1000.0)
            if isinstance(result, Opened) and result.response.status_code not in router.statuses:
                if target is not first_target:
                    call.meta["fallback"] = True
                return result

    def _give_up(self, call: Call, router: Router, result: Opened | Failure, reason: str, first_index: int) -> Opened:
        """No more attempts: return the last response, or raise with what every attempt met."""
        retried = len(call.attempts) - first_index > 1
        call.meta["retry_stop"] = reason
        if retried:
            call.meta["retries_exhausted"] = True
            if self.escalator.enabled:
                self.escalator.emit(
                    "retries_exhausted",
                    route=router.name,
                    call_id=call.id,
                    agent=call.agent,
                    session=call.session,
                    model=call.model,
                    reason=reason,
                    attempts=[
                        {
                            "upstream": a.upstream,
                            "model": a.model,
                            "status": a.status,
                            "error": a.error,
                            "backoff_ms": round(a.backoff_ms, 1),
                        }
                        for a in call.attempts[first_index:]
                    ],
                )
        if isinstance(result, Opened):
            return result
        attempts = call.attempts[first_index:]
        summary = "; ".join(f"{a.upstream}: {a.error or a.status}" for a in attempts)
        count = f"{len(attempts)} attempts" if len(attempts) > 1 else "1 attempt"
        message = f"route {router.name!r}: no upstream answered ({count}, stopped: {_STOPS[reason]}): {summary}"
        if result.kind in (TIMEOUT, DEADLINE):
            raise UpstreamFailure(504, "upstream_timeout", message)
        raise UpstreamFailure(502, "upstream_unreachable", message)

    def _circuit_open(self, call: Call, router: Router, plan: tuple[Target, ...]) -> UpstreamFailure:
        call.meta["retry_stop"] = "circuit_open"
        seen: set[str] = set()
        parts: list[str] = []
        for target in plan:
            state = target.state
            if state.name in seen:
                continue
            seen.add(state.name)
            breaker = state.breaker
            wait = breaker.retry_in()
            when = f", retry in {wait:.1f}s" if wait else ", a probe is in flight" if breaker.probing else ""
            parts.append(f"{state.name}: {breaker.reason or breaker.state}{when}")
        message = f"route {router.name!r}: every upstream's circuit breaker is open ({'; '.join(parts)})"
        return UpstreamFailure(503, "circuit_open", message)

    def _breaker_changed(self, breaker: CircuitBreaker, old: str) -> None:
        if breaker.state == OPEN and old == CLOSED:
            log.warning(
                "circuit breaker for upstream %s of route %s opened: %s",
                breaker.upstream,
                breaker.route,
                breaker.reason,
            )
            self.escalator.emit(
                "breaker_open",
                route=breaker.route,
                upstream=breaker.upstream,
                reason=breaker.reason,
                consecutive_failures=breaker.consecutive_failures,
                failure_ratio=round(breaker.failure_ratio, 4),
                cooldown=breaker.config.cooldown,
            )
        elif breaker.state == CLOSED:
            log.warning("circuit breaker for upstream %s of route %s closed", breaker.upstream, breaker.route)
            self.escalator.emit("breaker_closed", route=breaker.route, upstream=breaker.upstream)

    def snapshot(self) -> dict[str, Any]:
        """Routes, upstreams, breakers and calls in flight: what `GET /api/upstreams` shows."""
        return {
            "routes": {name: router.snapshot() for name, router in self.routers.items()},
            "escalation": self.escalator.snapshot(),
        }

    async def aclose(self) -> None:
        await self.escalator.aclose()
        await self.client.aclose()


_STOPS = {
    "attempts": "attempt budget used",
    "deadline": "retry deadline reached",
    "circuit_open": "remaining upstreams have open circuit breakers",
    "not_idempotent": "the request is not idempotent and may have been received",
    "": "no retry",
}


async def _close_quietly(response: httpx.Response) -> None:
    with contextlib.suppress(*UPSTREAM_ERRORS):
        await response.aclose()


__all__ = ["Forwarder", "Opened", "UpstreamFailure", "describe_error"]
