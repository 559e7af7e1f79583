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
from interlock.core.call import ATTEMPT_CANCELLED, Attempt, Call
from interlock.protocols import Adapter
from interlock.protocols.base import STREAM_USAGE, USAGE_ASKED, dump_body
from interlock.protocols.encoding import Decoder, Unreadable
from interlock.proxy.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from interlock.proxy.deadline import Deadline
from interlock.proxy.escalation import Escalator
from interlock.proxy.relay_rules import UpstreamFailure, route_timeouts
from interlock.proxy.retry import (
    CONNECT,
    DEADLINE,
    MALFORMED,
    RESET,
    TIMEOUT,
    UPSTREAM_ERRORS,
    Failure,
    backoff_delay,
    classify,
    failover_code,
    may_resend,
    retry_after_seconds,
)
from interlock.proxy.routing import Router, Slot, Target, UpstreamState
from interlock.proxy.upstream import UpstreamClient, recorded_url, upstream_headers, upstream_url

log = logging.getLogger("interlock.proxy")


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
    #: The (upstream, model) slot that answered.
    slot: Slot | None = None
    #: The stream went silent for longer than `timeouts.idle`.
    stalled: bool = False
    #: `decoded` ran (it must run once).
    decode_done: bool = False
    #: A 400 with one of `retry.failover_codes`: the call moves on to a larger context window.
    failover: bool = False
    #: The stream broke mid-way (and was continued elsewhere, `stream_rescue`): a breaker failure.
    broken: bool = False

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.state is not None:
            self.state.inflight -= 1
            if self.broken or (self.call is not None and self.call.error_code == "stream_broken"):
                # A stall is the model's (its slot); a broken connection is the upstream's.
                if self.stalled and self.slot is not None:
                    self.slot.breaker.failure()
                else:
                    self.state.breaker.failure()
        await self.response.aclose()


class _IdleBounded:
    """A stream's remaining chunks, each within `timeouts.idle` of the last (issue 21): a silence
    longer than that raises `httpx.ReadTimeout`, which ends the stream with the protocol's error event."""

    __slots__ = ("_chunks", "_seconds", "_opened")

    def __init__(self, chunks: AsyncIterator[bytes], seconds: float, opened: Opened) -> None:
        self._chunks, self._seconds, self._opened = chunks, seconds, opened

    def __aiter__(self) -> _IdleBounded:
        return self

    async def __anext__(self) -> bytes:
        try:
            with Deadline(self._seconds):
                return await self._chunks.__anext__()
        except TimeoutError:
            self._opened.stalled = True
            raise httpx.ReadTimeout(f"no stream data for {self._seconds}s (timeouts.idle)") from None


#: Failures that say the connection to the upstream is broken (not the model): they feed the
#: upstream-wide breaker; every other failure feeds the (upstream, model) slot's.
_TRANSPORT = frozenset({CONNECT, RESET, MALFORMED})


def _breaker_failure(status: int) -> bool:
    # 429 is the upstream working as designed (Retry-After says when to come back), not ill health.
    return status >= 500 or status == 408


class Forwarder:
    """Routes each call to its upstreams, with retries, fallbacks and circuit breakers."""

    #: What the client raises when an upstream fails mid-stream (the relay ends that stream for it).
    errors = UPSTREAM_ERRORS

    def __init__(self, settings: Settings, client: UpstreamClient) -> None:
        self.settings = settings
        self.client = client
        self.escalator = Escalator(settings.escalation, client)
        self.routers: dict[str, Router] = {name: self._router(name, route) for name, route in settings.routes.items()}

    def _router(self, name: str, route: Route) -> Router:
        return Router(name, route, self._breaker_changed, timeouts=route_timeouts(self.settings, route))

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
        target = router.pick(plan, call.model)
        if target is None:
            raise self._circuit_open(call, router, plan)
        if not router.cut_first:
            result = await self.attempt(call, adapter, router, target, plain)
        else:
            result = await self._cut_attempt(call, adapter, router, target, plain, route.retry.deadline)
        if type(result) is Opened and await self._final(router, result):
            return self._bounded(router, await self.decoded(result))
        return self._bounded(
            router, await self.decoded(await self._retry(call, adapter, router, plan, target, result, plain))
        )

    async def _final(self, router: Router, opened: Opened) -> bool:
        """Whether a response is the call's answer: not a status the route retries, nor a 400 that
        fails over to a larger context window."""
        status = opened.response.status_code
        return status not in router.statuses and (status != 400 or not await self._fails_over(router, opened))

    async def _fails_over(self, router: Router, opened: Opened) -> bool:
        """Whether a 400 carries one of `retry.failover_codes` (its body read decoded, issue 21)."""
        if not router.failover_codes or opened.rest is not _NOTHING:
            return False
        await self.decoded(opened)
        if opened.unreadable is not None or opened.too_large:
            return False
        code = failover_code(opened.first, router.failover_codes)
        if code is not None and opened.call is not None:
            opened.call.meta["failover_code"] = code
        opened.failover = code is not None
        return opened.failover

    @staticmethod
    def _bounded(router: Router, opened: Opened) -> Opened:
        if router.idle is not None and opened.rest is not _NOTHING:
            opened.rest = _IdleBounded(opened.rest, router.idle, opened)
        return opened

    async def decoded(self, opened: Opened) -> Opened:
        """The response with its content-encoding undone: the one place a body is decoded, so every
        reader (usage, tool-call policy, guardrails, the record, search) and the agent get the same
        plain bytes (issue 16). A stream is decoded piece by piece as it arrives; a whole body here,
        bounded by `max_decoded_bytes`. What cannot be decoded (an unknown coding, bytes that do not
        decode) stays as it came, with `unreadable` saying why: the app then fails the call closed
        when a rule must read it, or relays it untouched when none does."""
        if opened.decode_done:
            return opened
        opened.decode_done = True
        coding = opened.response.headers.get("content-encoding")
        if not coding or opened.too_large:  # a body cut at max_response_bytes is refused as it is
            return opened
        try:
            decoder = Decoder.for_headers([("content-encoding", coding)])
            if decoder is None:
                return opened
            if opened.rest is _NOTHING:
                body, limit = opened.first, self.settings.max_decoded_bytes
                if len(body) > _DECODE_ON_LOOP:  # about 1 ms of inflating per 100 KB: not on the loop
                    opened.first = await asyncio.to_thread(decoder.decode, body, limit)
                else:
                    opened.first = decoder.decode(body, limit)
            else:
                opened.first = b"".join(decoder.feed(opened.first))
                opened.rest = decoder.stream(opened.rest)
        except Unreadable as exc:
            opened.unreadable = str(exc)
            return opened
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
        body: bytes | None = None,
    ) -> Opened | Failure:
        """One try at one target; a transport failure comes back as a `Failure`, never raised.
        `body`: send this instead of the call's request (a stream rescue's continuation)."""
        state = target.state
        upstream = state.upstream
        path = call.path
        if body is None:
            body, path = self._body(call, adapter, target, plain)
        else:
            call.upstream_body = body = self._usage_asked(call, adapter, target, body)
        headers = upstream_headers(call, adapter, upstream, body_len=len(body))
        url = upstream_url(upstream, call, path, adapter.key_query_params)
        headers = adapter.sign(call.method, url, headers, body, upstream)
        attempt = Attempt(
            upstream=state.name,
            url=url if call.upstream_query is None and "@" not in url else recorded_url(upstream, call, path),
            model=target.model or call.model,
            started_ms=call.elapsed_ms(),
            backoff_ms=backoff_ms,
        )
        call.attempts.append(attempt)
        call.upstream = state.name
        slot = router.slot_of(target, call.model)
        breaker = slot.breaker
        probe = breaker.acquire()
        link_probe = state.breaker.acquire()
        state.inflight += 1
        timeout = httpx.USE_CLIENT_DEFAULT if router.timeout is None else router.timeout
        response: httpx.Response | None = None
        too_large = False
        try:
            response = await self.client.open(call.method, url, headers, body, timeout)
            attempt.status = status = response.status_code
            raw = response.aiter_raw()
            first = b""
            if adapter.is_stream(response.headers.get("content-type", ""), call, status):
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
            if failure.kind in _TRANSPORT:  # the connection, not the model: the upstream-wide breaker
                state.breaker.failure(link_probe)
                breaker.release(probe)
            else:
                breaker.failure(probe)
                state.breaker.release(link_probe)
            if response is not None:
                await _close_quietly(response)
            return failure
        except BaseException:  # cancelled: the agent left, or the retry deadline passed
            attempt.error = ATTEMPT_CANCELLED
            attempt.duration_ms = call.elapsed_ms() - attempt.started_ms
            state.inflight -= 1
            breaker.release(probe)
            state.breaker.release(link_probe)
            if response is not None:
                await _close_quietly(response)
            raise
        state.breaker.success(link_probe)  # an HTTP response: the connection works
        if _breaker_failure(status):
            breaker.failure(probe)
        else:
            breaker.success(probe)
        opened = Opened(response, upstream, first, rest, state, call)
        opened.too_large = too_large
        opened.slot = slot
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
        body: bytes | None = None,
    ) -> Opened | Failure:
        """An attempt cut when the route's retry deadline passes (`seconds` from now), or at
        `timeouts.first_token` when that is sooner (a timeout: the next target is tried)."""
        first_token = router.first_token
        slow = first_token is not None and first_token < seconds
        try:
            with Deadline(first_token if slow else seconds):
                return await self.attempt(call, adapter, router, target, plain, backoff_ms=backoff_ms, body=body)
        except TimeoutError:
            if slow:
                message = f"no response and first bytes within timeouts.first_token ({first_token}s)"
                call.attempts[-1].error = f"{TIMEOUT}: {message}"
                breaker = router.slot_of(target, call.model).breaker
                # The cut released a half-open probe; its failure re-opens the breaker, so the next
                # call does not wait first_token on a probe again.
                breaker.failure(breaker.state == HALF_OPEN and not breaker.probing)
                return Failure(TIMEOUT, message, sent=True)
            message = f"the route's retry deadline of {router.route.retry.deadline}s passed"
            call.attempts[-1].error = f"{DEADLINE}: {message}"
            return Failure(DEADLINE, message, sent=True)

    def _body(self, call: Call, adapter: Adapter, target: Target, plain: bytes | None) -> tuple[bytes, str]:
        """What this attempt sends, and to which path: the request, with the model rewritten by the
        adapter (in the body or the URL) when the target asks for another model (from
        `request_json`, so other stages' edits are kept)."""
        model = target.model
        path = call.path
        if model is not None and (rewritten := adapter.rewrite_model(call.request_json, path, model)) is not None:
            data, path = rewritten
            body = dump_body(data) if data is not call.request_json else self._plain(call, plain)
            call.upstream_body = body
        else:
            call.upstream_body = plain
            body = self._plain(call, plain)
        if adapter.asks_stream_usage:
            body = self._usage_asked(call, adapter, target, body)
        return body, path

    @staticmethod
    def _usage_asked(call: Call, adapter: Adapter, target: Target, body: bytes) -> bytes:
        """`body` asking this target for the stream's usage when the agent did not and the upstream
        lets us (`stream_usage: inject`), said in `meta.stream_usage` (per attempt: the one that
        answers decides what the agent is not sent). The record keeps what the agent sent; an
        `upstream_body` another change made is what went upstream, the ask included."""
        if target.state.upstream.stream_usage == "inject":
            asked = adapter.with_stream_usage(call, body)
            if asked is not None:
                call.meta[STREAM_USAGE] = USAGE_ASKED
                if call.upstream_body is not None:
                    call.upstream_body = asked
                return asked
        call.meta.pop(STREAM_USAGE, None)
        return body

    @staticmethod
    def _plain(call: Call, plain: bytes | None) -> bytes:
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
        budget, the deadline, the breakers or idempotency say stop.

        Each target is tried `same_target` times (waiting its backoff or `Retry-After` in between)
        before the next is asked for; a `Retry-After` past `retry_after_max` or the deadline moves on
        at once; a `failover_codes` error moves on to a target with a larger context window (issue 21).
        """
        retry = router.route.retry
        model = call.model
        first_index = len(call.attempts) - 1
        deadline_ms = call.attempts[first_index].started_ms + retry.deadline * 1000.0
        resend = may_resend(router.route, call.method, getattr(call.view, "operation", None))
        first_slot = router.slot_of(target, model)
        tries: dict[Slot, int] = {first_slot: 1}
        retry_after: dict[Slot, float] = {}
        skip: set[Slot] = set()
        waited_out = False  # a target was skipped because its Retry-After was too long
        min_window: int | None = None
        while True:
            stop = ""
            slot = router.slot_of(target, model)
            failover = False
            if isinstance(result, Opened):
                if result.failover:
                    failover = True
                    skip.add(slot)
                    min_window = max(min_window or 0, target.context_window or 0)
                else:
                    seconds = retry_after_seconds(result.response.headers.get("retry-after"))
                    if seconds is not None:
                        retry_after[slot] = seconds
                    if not resend:
                        stop = "not_idempotent"
            elif result.kind == DEADLINE:
                stop = "deadline"
            elif result.sent and not resend:
                stop = "not_idempotent"
            # A refused connection (nothing was sent) says nothing a second try would change: move on.
            refused = isinstance(result, Failure) and result.kind == CONNECT
            wait = 0.0
            following: Target | None = None
            if not stop and len(call.attempts) - first_index >= retry.attempts:
                stop = "attempts"
            while not stop:
                if (
                    not failover
                    and not refused
                    and slot not in skip
                    and tries.get(slot, 0) < target.same_target
                    and slot.available()
                ):
                    candidate: Target | None = target  # stay: `same_target` tries before moving on
                else:
                    candidate = router.pick(plan, model, tries, skip=skip, min_window=min_window)
                if candidate is None:
                    stop = (
                        "no_larger_context"
                        if failover or min_window is not None
                        else ("retry_after" if waited_out else "circuit_open")
                    )
                    break
                chosen = router.slot_of(candidate, model)
                done = tries.get(chosen, 0)
                wait = 0.0
                if done:
                    seconds = retry_after.get(chosen)
                    if seconds is not None:
                        if seconds > retry.retry_after_max or call.elapsed_ms() + seconds * 1000.0 >= deadline_ms:
                            skip.add(chosen)  # longer than interlock would wait: the next target, now
                            waited_out = True
                            continue
                        wait = seconds
                    else:
                        wait = backoff_delay(retry, done)
                if call.elapsed_ms() + wait * 1000.0 >= deadline_ms:
                    stop = "deadline"
                    break
                following = candidate
                break
            if stop or following is None:
                return self._give_up(call, router, result, stop, first_index)
            if isinstance(result, Opened):
                await result.aclose()
            if wait > 0.0:
                await asyncio.sleep(wait)
            target = following
            slot = router.slot_of(target, model)
            tries[slot] = tries.get(slot, 0) + 1
            left = (deadline_ms - call.elapsed_ms()) / 1000.0
            result = await self._cut_attempt(call, adapter, router, target, plain, left, backoff_ms=wait * 1000.0)
            if isinstance(result, Opened) and await self._final(router, result):
                if slot is not first_slot:
                    call.meta["fallback"] = True
                return result

    def _give_up(self, call: Call, router: Router, result: Opened | Failure, reason: str, first_index: int) -> Opened:
        """No more attempts: return the last response, or raise with what every attempt met."""
        retried = len(call.attempts) - first_index > 1
        call.meta["retry_stop"] = reason
        if reason != "no_larger_context" and (retried or reason != "attempts"):
            # A retryable failure interlock chose not to retry (any further): the agent's SDK must not
            # retry it either (`x-should-retry: false`), or retries multiply (issue 21). A route of
            # one attempt (`retry.attempts: 1`) leaves retrying to the agent.
            call.meta["retry_declined"] = True
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
        seen: set[int] = set()
        parts: list[str] = []
        for target in plan:
            slot = router.slot_of(target, call.model)
            for breaker, name in (
                (target.state.breaker, target.state.name),
                (slot.breaker, f"{target.state.name} {slot.model}"),
            ):
                if id(breaker) in seen or breaker.available():
                    continue
                seen.add(id(breaker))
                wait = breaker.retry_in()
                when = f", retry in {wait:.1f}s" if wait else ", a probe is in flight" if breaker.probing else ""
                parts.append(f"{name}: {breaker.reason or breaker.state}{when}")
        message = f"route {router.name!r}: every target's circuit breaker is open ({'; '.join(parts)})"
        return UpstreamFailure(503, "circuit_open", message)

    def _breaker_changed(self, breaker: CircuitBreaker, old: str) -> None:
        if breaker.state == OPEN and old == CLOSED:
            log.warning(
                "circuit breaker for upstream %s%s of route %s opened: %s",
                breaker.upstream,
                f" model {breaker.model}" if breaker.model else "",
                breaker.route,
                breaker.reason,
            )
            self.escalator.emit(
                "breaker_open",
                route=breaker.route,
                upstream=breaker.upstream,
                model=breaker.model or None,
                reason=breaker.reason,
                consecutive_failures=breaker.consecutive_failures,
                failure_ratio=round(breaker.failure_ratio, 4),
                cooldown=breaker.config.cooldown,
            )
        elif breaker.state == CLOSED:
            log.warning(
                "circuit breaker for upstream %s%s of route %s closed",
                breaker.upstream,
                f" model {breaker.model}" if breaker.model else "",
                breaker.route,
            )
            self.escalator.emit(
                "breaker_closed", route=breaker.route, upstream=breaker.upstream, model=breaker.model or None
            )

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
    "retry_after": "the upstream's Retry-After is longer than retry_after_max or the deadline",
    "no_larger_context": "no target with a larger context window",
    "": "no retry",
}


async def _close_quietly(response: httpx.Response) -> None:
    with contextlib.suppress(*UPSTREAM_ERRORS):
        await response.aclose()


__all__ = ["Forwarder", "Opened"]
