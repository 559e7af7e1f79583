"""The agent-facing ASGI app: `/<route>/<upstream path>` → stages → upstream → agent.

Written against raw ASGI rather than a framework's request objects: this is the hot path, and the
proxy needs the raw path, the raw headers and control of every body message anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from interlock.config import Route, Settings
from interlock.core.call import Call, Chunk, Decision, Outcome, SuppliedResponse, new_id
from interlock.core.views import STREAM_READ_MAX, Event, StreamRead
from interlock.protocols import ADAPTERS, Adapter
from interlock.protocols.base import StreamFramer
from interlock.protocols.encoding import Unreadable
from interlock.protocols.rescue import StreamRescue, stream_rescue
from interlock.protocols.sse import EventSplitter, UnsplittableStream, last_events
from interlock.proxy.admission import ProxyEdge, upstream_path
from interlock.proxy.capture import StreamCapture
from interlock.proxy.deadline import Deadline
from interlock.proxy.hooks import Pipeline
from interlock.proxy.relay_rules import UpstreamFailure, describe_error, response_headers_for_agent, route_timeouts

if TYPE_CHECKING:
    # Only the forwarder it is handed, never imported to run: the upstream client stack (httpx,
    # aiohttp) loads with the forwarder, so a proxy app without one (replay's) starts without it.
    from interlock.proxy.forward import Forwarder, Opened

log = logging.getLogger("interlock.proxy")

Scope = dict[str, Any]

#: How a stream may end that a `stream_rescue` route continues elsewhere: broken (a reset, a stall
#: past `timeouts.idle`) or closed without its terminator (an upstream's mid-stream error event).
_RESCUABLE = frozenset({"stream_broken", "stream_truncated"})

#: Response headers that describe the body as the upstream encoded it, dropped once it is decoded.
_ENCODING_HEADERS = frozenset({"content-encoding", "content-length"})
Receive = Any
Send = Any


#: Header names as interlock reads them (str, lower case), by the bytes they arrived as: the same few
#: dozen names come with every call, and a dict lookup costs less than decoding and lowering each.
#: Bounded: names come from clients.
_HEADER_NAMES: dict[bytes, str] = {}


def decoded_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Headers as (lower-case name, value) strings, each byte as the Latin-1 character it is."""
    names = _HEADER_NAMES
    return [(names.get(k) or _header_name(k), v.decode("latin-1")) for k, v in raw]


def _header_name(raw: bytes) -> str:
    name = raw.decode("latin-1").lower()
    if len(_HEADER_NAMES) < 1024:
        _HEADER_NAMES[raw] = name
    return name


class ClientGone(Exception):
    """The agent disconnected before its answer was complete."""


class ProxyApp:
    """The proxy as an ASGI application. Without a `forwarder` it has no upstream: its stages answer
    or supply every call (replay's playback), and a call none does is refused (502 `no_upstream`)."""

    def __init__(self, settings: Settings, pipeline: Pipeline, forwarder: Forwarder | None) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.forwarder = forwarder
        #: What the upstream client raises when a stream breaks (none without an upstream).
        self.upstream_errors: tuple[type[BaseException], ...] = forwarder.errors if forwarder is not None else ()
        self.routes: dict[str, Route] = dict(settings.routes)
        self.inflight = 0
        self.edge = ProxyEdge(settings)
        self._route_list = ", ".join(f"/{name}/" for name in self.routes) or "(none configured)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        elif scope["type"] == "lifespan":
            await _lifespan(receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        route_name, _, rest = raw_path[1:].partition(b"/")
        name = route_name.decode("latin-1")
        route = self.routes.get(name)
        headers = decoded_headers(scope["headers"])
        query = scope["query_string"].decode("latin-1")
        public = self.edge.public_query(query)  # credentials in the query are never recorded
        call = Call(
            id=new_id(),
            route=name,
            protocol=route.protocol if route else "http",
            method=scope["method"],
            path=upstream_path(rest),  # as the HTTP client will send it: policies judge that
            query=public,
            request_headers=headers,
        )
        if public != query:
            call.upstream_query = query
        adapter = ADAPTERS[call.protocol]
        state = _Watch()
        self.inflight += 1
        try:
            # Who may call at all, and which paths and bodies: before any stage (docs/security.md).
            refusal, cors_origin = self.edge.check(
                headers, rest if route else None, route is not None and not ADAPTERS[route.protocol].opaque
            )
            if cors_origin is not None:
                send = _with_cors(send, cors_origin)
                preflight = any(k == "access-control-request-method" for k, _ in headers)
                if scope["method"] == "OPTIONS" and preflight and refusal is None:
                    await _drain(receive, self.settings.server.body_timeout)
                    await _preflight(call, send, headers)
                    return
            if refusal is not None:
                status, code, message = refusal
                outcome: Outcome = "denied" if status == 403 else "bad_request"
                call.answer(adapter.error_reply(status, code, message, retryable=False), outcome, code, message)
                await _drain(receive, self.settings.server.body_timeout)
                await self.send_reply(call, send)
                return
            if route is None:
                message = f"no route named {name!r}; routes: {self._route_list}"
                call.answer(adapter.error_reply(404, "unknown_route", message), "bad_request", "unknown_route", message)
                await _drain(receive, self.settings.server.body_timeout)
                await self.send_reply(call, send)
                return
            try:
                call.request_body = await self.read_body(scope, receive)
            except _TooLarge as exc:
                message = f"request body over the limit of {self.settings.max_body_bytes} bytes"
                call.request_body = exc.head
                call.answer(
                    adapter.error_reply(413, "body_too_large", message), "bad_request", "body_too_large", message
                )
                assert call.reply is not None
                call.reply.headers.append(("connection", "close"))  # the rest of the body is never read
                await self.send_reply(call, send)
                return
            except _BodyTimeout as exc:
                timeout = self.settings.server.body_timeout
                message = f"the request body did not arrive within {timeout}s ({exc.size} bytes did)"
                call.request_body = exc.head
                call.answer(adapter.error_reply(408, "body_timeout", message), "bad_request", "body_timeout", message)
                assert call.reply is not None
                call.reply.headers.append(("connection", "close"))
                await self.send_reply(call, send)
                return
            except ClientGone:
                call.outcome, call.error = "aborted", "client disconnected while sending the request"
                return
            await self.run(call, route, adapter, receive, send, state)
        except Exception as exc:  # a bug in a stage: answer clearly, record it, never leave the agent hanging
            log.exception("call %s failed inside interlock", call.id)
            await self.internal_error(call, adapter, send, state, exc)
        finally:
            call.duration_ms = call.elapsed_ms()
            _finish_capture(call, state)  # a timeout or an internal error may have ended the stream
            try:
                await self.pipeline.finish(call)  # seal the record, then record and export it
            except Exception:
                log.exception("recording call %s failed", call.id)
            finally:
                # In flight until it is handed to the recorder, not until its answer is sent: the agent
                # may have its answer before this runs, and `Recorder.flush` waits for what is in flight.
                self.inflight -= 1

    async def read_body(self, scope: Scope, receive: Receive) -> bytes:
        """The whole request body, within `server.body_timeout` (`_BodyTimeout` past it) and
        `max_body_bytes` (`_TooLarge`: at once when the Content-Length says so, nothing read; the
        reply then closes the connection rather than reading a body no one wants)."""
        limit = self.settings.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise _TooLarge(b"")
        parts: list[bytes] = []
        size = 0
        try:
            with Deadline(self.settings.server.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ClientGone()
                    body = message.get("body", b"")
                    if body:
                        size += len(body)
                        if size > limit:
                            raise _TooLarge(b"".join(parts)[:65536])
                        parts.append(body)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise _BodyTimeout(b"".join(parts)[:65536], size) from None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def internal_error(self, call: Call, adapter: Adapter, send: Send, state: _Watch, exc: Exception) -> None:
        """interlock itself failed on this call (a bug): the agent gets the protocol's error, a 500
        before the response started or the stream's error event after, and the record says so."""
        message = f"interlock failed on this call (id {call.id}): {describe_error(exc)}"
        try:
            await self.fail(call, adapter, send, state, 500, "internal_error", "internal_error", message)
        except Exception:  # noqa: BLE001 - the agent's connection is gone too: nothing more to send
            log.debug("could not answer call %s after an internal error", call.id, exc_info=True)
        call.outcome, call.error_code, call.error = "internal_error", "internal_error", message
        try:
            await self.pipeline.error(call, exc)
        except Exception:
            log.exception("the error hooks failed for call %s", call.id)

    async def fail(
        self,
        call: Call,
        adapter: Adapter,
        send: Send,
        state: _Watch,
        status: int,
        outcome: Outcome,
        code: str,
        message: str,
        *,
        tail: Sequence[Event] = (),
    ) -> None:
        """End the call with interlock's error: the protocol's error reply before the response
        started; after, the stream ends with its error event (after `tail`, text stages still held),
        which is kept on record as what the agent got."""
        if not state.started:
            call.answer(adapter.error_reply(status, code, message, retryable=False), outcome, code, message)
            await self.send_reply(call, send)
            return
        call.outcome, call.error_code, call.error = outcome, code, message
        call.truncated = call.stream
        if state.responded:
            return
        events = [*tail, Event(adapter.stream_error_event(code, message), None, "")] if call.stream else [*tail]
        framed = _framed(events, True, state)
        event = _joined(framed)
        if state.sent_capture is not None:
            state.sent_capture.add(Chunk(call.elapsed_ms(), event))
            _finish_capture(call, state)
            _keep_sent(call, state.sent)
        await _safe_send(send, _relayed(framed, event, state), state)

    async def run(
        self, call: Call, route: Route, adapter: Adapter, receive: Receive, send: Send, state: _Watch
    ) -> None:
        task = asyncio.current_task()
        try:
            await self.pipeline.request(call)
        except asyncio.CancelledError:
            if call.halted is None:
                raise
            _uncancel(task)  # stopped while the request stages ran (the kill switch): answered below
            code, message = call.halted
            call.answer(adapter.error_reply(403, code, message, retryable=False), "denied", code, message)
        if call.reply is not None:
            await self.send_reply(call, send)
            return
        # Watch for the agent leaving: a disconnect cancels the upstream request (or a supplied answer
        # still to come). A supplied body already in memory has nothing to cancel: what is left is
        # sent at once (uvicorn's `send` returns when the agent is gone), so it goes without the
        # watcher's task (a task, two loop steps and a cancel: a tenth of a replayed call, measured).
        supplied = call.supplied
        watcher = (
            asyncio.create_task(_watch_disconnect(receive, state, task))
            if supplied is None or not isinstance(supplied.body, bytes)
            else None
        )
        total = route_timeouts(self.settings, route).total
        try:
            with Deadline(None if adapter.open_ended(call) else total):
                await self.relay(call, route, adapter, send, state)
        except asyncio.CancelledError:
            if call.halted is not None and not state.disconnected:
                # Stopped from outside (the kill switch, `proxy/stops.py`): the agent is told why,
                # mid-stream with the protocol's error event; the upstream request is abandoned.
                _uncancel(task)
                code, message = call.halted
                outcome: Outcome = "blocked" if state.started else "denied"
                await self.fail(call, adapter, send, state, 403, outcome, code, message)
                if state.started:
                    # What the upstream produced before the stop is billed: the stream's end runs as
                    # for a broken one (the stages' held text is dropped, not sent), so the usage
                    # stage prices it as far as known and the limits count it (proxy/usage.py).
                    if self.pipeline.has_chunk_hooks:
                        await self.pipeline.chunk(call, [], True)
                    _finish_capture(call, state)
                    _hand_over_read(call, adapter, state)
                    await self.pipeline.response(call)
                return
            if not state.disconnected:
                raise
            _uncancel(task)
            call.outcome, call.error = "aborted", "client disconnected"
            call.truncated = call.stream and state.started
            _finish_capture(call, state)
            _keep_sent(call, state.sent)  # what the agent got before it left, if stages changed it
        except TimeoutError:
            message = f"the call exceeded its total timeout of {total}s"
            await self.fail(call, adapter, send, state, 504, "upstream_error", "upstream_timeout", message)
        finally:
            state.done = True
            if watcher is not None:
                watcher.cancel()

    async def relay(self, call: Call, route: Route, adapter: Adapter, send: Send, state: _Watch) -> None:
        opened: Opened | _Supplied
        if call.supplied is not None:
            # A stage supplied the response (a cache, a playback): relayed like the upstream's, through
            # every response hook, with no upstream attempt.
            opened = await _Supplied.of(call.supplied, self.settings.max_response_bytes, adapter, call)
            call.meta["supplied_by"] = call.supplied.source
        else:
            try:
                if self.forwarder is None:
                    raise UpstreamFailure(502, "no_upstream", "no stage answered this call, and there is no upstream")
                opened = await self.forwarder.open(call, route, adapter)
            except UpstreamFailure as exc:
                call.answer(
                    adapter.error_reply(exc.status, exc.code, exc.message, retryable=False),
                    "upstream_error",
                    exc.code,
                    exc.message,
                )
                await self.pipeline.error(call, exc)
                await self.send_reply(call, send)
                return
        try:
            if isinstance(opened, _Supplied):
                call.status, call.response_headers, content_type = opened.status, opened.headers, opened.content_type
            else:
                response = opened.response
                call.status = response.status_code
                call.response_headers = decoded_headers(response.headers.raw)
                content_type = response.headers.get("content-type", "")
            if opened.encoding is not None:
                # The forwarder decoded the body: every stage, the record and the agent get it plain.
                call.response_headers = [h for h in call.response_headers if h[0] not in _ENCODING_HEADERS]
                call.meta["content_encoding"] = opened.encoding
            if call.status >= 400:
                call.outcome, call.error_code = "upstream_error", f"http_{call.status}"
                if call.meta.get("retries_exhausted") or call.meta.get("retry_declined"):
                    # interlock retried and gave up: the agent's SDK must not retry again (the
                    # OpenAI and Anthropic SDKs honour this), or retries multiply.
                    call.response_headers = [h for h in call.response_headers if h[0] != "x-should-retry"]
                    call.response_headers.append(("x-should-retry", "false"))
            await self.pipeline.response_head(call)
            if opened.unreadable is not None and await self.unreadable(call, adapter, send, state, opened.unreadable):
                return
            if adapter.is_stream(content_type, call, call.status or 0):
                call.stream = True
                await self.relay_stream(call, adapter, opened, send, state, route)
            else:
                await self.relay_body(call, opened, send, state)
        finally:
            await opened.aclose()

    async def unreadable(self, call: Call, adapter: Adapter, send: Send, state: _Watch, reason: str) -> bool:
        """The upstream's body cannot be decoded. A rule or guardrail must read it: the call ends with
        `unreadable_response` (True; fail closed). None does: it is relayed untouched, and the record
        says it went unread (no usage, no scan)."""
        if not call.readers:
            message = f"response relayed unread ({reason}): no rule or guardrail reads it; no token usage"
            call.decide(Decision("proxy", "skip", None, message))
            log.warning("call %s: %s", call.id, message)
            return False
        message = (
            f"the upstream's response cannot be read ({reason}) and {', '.join(call.readers)} must read it:"
            " refused (fail closed)"
        )
        call.decide(Decision("proxy", "deny", None, message, {"readers": list(call.readers)}))
        log.warning("call %s: %s", call.id, message)
        await self.fail(call, adapter, send, state, 502, "upstream_error", "unreadable_response", message)
        return True

    async def relay_body(self, call: Call, opened: Opened | _Supplied, send: Send, state: _Watch) -> None:
        # The forwarder read the whole (non-streamed) body already, retrying if it broke off.
        call.ttfb_ms = call.elapsed_ms()
        call.response_body = opened.first
        if opened.too_large:  # the head is on record; the agent gets an error, not a cut body
            limit = self.settings.max_response_bytes
            message = f"the upstream's response body passed max_response_bytes ({limit} bytes)"
            reply = ADAPTERS[call.protocol].error_reply(502, "response_too_large", message, retryable=False)
            call.answer(reply, "upstream_error", "response_too_large", message)
            call.truncated = True
            await self.send_reply(call, send, keep_upstream=True)
            return
        await self.pipeline.response(call)
        if call.reply is not None:  # a response stage blocked it
            await self.send_reply(call, send, keep_upstream=True)
            return
        body = call.agent_response_body if call.agent_response_body is not None else call.response_body
        headers = response_headers_for_agent(
            call.response_headers, streamed=False, body_changed=call.agent_response_body is not None
        )
        if call.agent_response_body is not None or opened.encoding is not None:
            headers.append((b"content-length", str(len(body)).encode()))
        state.started = True
        await send({"type": "http.response.start", "status": call.status, "headers": headers})
        state.responded = True
        await send({"type": "http.response.body", "body": body})

    async def relay_stream(
        self, call: Call, adapter: Adapter, opened: Opened | _Supplied, send: Send, state: _Watch, route: Route
    ) -> None:
        headers = response_headers_for_agent(call.response_headers, streamed=True, body_changed=False)
        pipeline = self.pipeline
        transform = pipeline.has_chunk_hooks
        sent: list[Chunk] | None = [] if transform else None
        state.sent = sent
        # What is kept for the record is bounded (head and tail, `store.record_max_bytes`); an
        # error status's stream is not held to the protocol's terminator.
        keep = self.settings.store.record_max_bytes
        markers = adapter.stream_end_markers if (call.status or 0) < 400 and not adapter.open_ended(call) else ()
        last_line = adapter.last_line_ends_stream if markers and adapter.ends_by_last_line else None
        capture = state.capture = StreamCapture(call.chunks, keep, markers, adapter.markers_at_line_start, last_line)
        if sent is not None:
            state.sent_capture = StreamCapture(sent, keep)
        if route.stream_rescue and not isinstance(opened, _Supplied) and (call.status or 0) < 400:
            # Followed event by event, so that a break can be continued elsewhere (issue 21).
            state.rescue = stream_rescue(call.protocol, getattr(call.view, "operation", None))
        # Split into events once, here: the usage is summed from them as they pass, the stages'
        # `chunk` hooks and the rescue read them, and the agent gets whole events only (an SSE client
        # acts on an event once its blank line arrives, so holding back the unfinished one costs it
        # nothing, and a stream interlock must end gets its error event as an event, not glued to
        # half of one). A plain `http` route's stream may not frame its events as SSE: relayed as it
        # comes, unless a stage reads it.
        if transform or state.rescue is not None or not adapter.opaque:
            state.splitter = adapter.event_splitter()
            # (Its events are kept no longer than the record keeps the stream's bytes.)
            state.read, state.fold = StreamRead(limit=min(STREAM_READ_MAX, keep)), adapter.fold_usage
        state.framer = adapter.stream_framer(call)
        state.unasked = adapter.unasked(call)
        await send({"type": "http.response.start", "status": call.status, "headers": headers})
        state.started = True
        outcome = call.outcome
        # A supplied stream may be the whole of what an agent got, ending where it ends (a recording).
        check_end = not isinstance(opened, _Supplied) or opened.end_checked
        source = opened
        continuation: Opened | None = None
        try:
            while True:
                try:
                    await self._relay_chunks(call, source, send, state, outcome)
                    if transform and call.outcome != outcome:
                        call.truncated = True  # the upstream's stream was not read to its end
                    elif check_end and not capture.ended:
                        # Closed without its terminator (`[DONE]`, `message_stop`): the answer was cut
                        # short, and the agent must not take it for a whole one.
                        raise _StreamEnd(
                            "stream_truncated",
                            f"the upstream's stream ended after {capture.total} bytes without its end-of-stream event",
                        )
                    break
                except _StreamEnd as end:
                    code, message = end.code, end.message
                except self.upstream_errors as exc:  # a reset or a malformed chunk mid-stream, or a stall
                    code = "stream_broken"
                    message = f"the upstream stream broke after {capture.total} bytes: {describe_error(exc)}"
                except Unreadable as exc:  # the forwarder's decoder met bytes that do not decode
                    message = f"the upstream's stream stopped decoding after {capture.total} bytes: {exc}"
                    call.decide(Decision("proxy", "deny", None, message, {"readers": list(call.readers)}))
                    log.warning("call %s: %s", call.id, message)
                    await self._stream_failed(call, adapter, send, state, "unreadable_response", message)
                    return
                rescue = state.rescue
                if rescue is not None and continuation is None and code in _RESCUABLE:
                    assert not isinstance(source, _Supplied) and self.forwarder is not None
                    source.broken = code == "stream_broken"  # a breaker failure, as without a rescue
                    # Startup: the rescue needs the upstream client stack, which only a proxy app with
                    # a forwarder has loaded (replay's has none: about a second of its start under
                    # shared load, measured).
                    from interlock.proxy.rescue import open_continuation

                    continuation = await open_continuation(
                        self.forwarder, call, route, adapter, source, rescue, message, capture.total
                    )
                    if continuation is not None:
                        state.splitter = adapter.event_splitter()  # the broken stream's unfinished event is dropped
                        state.splicing = True
                        source = continuation
                        continue
                if rescue is not None:
                    state.rescue = None
                    if rescue.held_error is not None and not state.splicing:
                        # The upstream's own error event, held back while a rescue was possible
                        # (split on its own: what followed it was never relayed).
                        state.splitter = adapter.event_splitter()
                        await self._forward_chunk(call, rescue.held_error, send, state)
                await self._stream_failed(call, adapter, send, state, code, message)
                return
        finally:
            if continuation is not None:
                await continuation.aclose()
        if state.splicing and state.rescue is not None and not call.truncated:
            call.rescued = True
            record = call.meta["rescue"]
            record["outcome"] = "rescued"
            if state.rescue.usage_estimated:
                record["usage_estimated"] = True
        if call.attempts:
            call.attempts[-1].duration_ms = call.elapsed_ms() - call.attempts[-1].started_ms
        tail = b""
        if state.splitter is not None:
            last = self._take(last_events(state.splitter), state)
            events = _framed(await pipeline.chunk(call, last, True) if transform else last, True, state)
            tail = _joined(events)
            if tail and state.sent_capture is not None:
                state.sent_capture.add(Chunk(call.elapsed_ms(), tail))
            tail = _relayed(events, tail, state)
        _finish_capture(call, state)
        _hand_over_read(call, adapter, state)
        await pipeline.response(call)
        _keep_sent(call, sent)
        state.responded = True
        await send({"type": "http.response.body", "body": tail})

    async def _relay_chunks(
        self, call: Call, opened: Opened | _Supplied, send: Send, state: _Watch, outcome: Outcome
    ) -> None:
        """Relay a stream's chunks until it ends, or a stage ends the agent's stream (a refused tool
        call, blocked PII: it sets the outcome): then reading stops, so the upstream connection closes
        and the model stops."""
        transform = self.pipeline.has_chunk_hooks
        data = opened.first
        if data:
            await self._forward_chunk(call, data, send, state)
        if transform and call.outcome != outcome:
            return
        async for data in opened.rest:
            if data:
                await self._forward_chunk(call, data, send, state)
                if transform and call.outcome != outcome:
                    return

    async def _stream_failed(
        self, call: Call, adapter: Adapter, send: Send, state: _Watch, code: str, message: str
    ) -> None:
        """The upstream's stream ended badly mid-way: truncated, recorded as `upstream_error` with
        `code` (set before the stages' last chunk), and ended with the protocol's error event."""
        call.truncated = True
        call.outcome, call.error_code = "upstream_error", code
        # The broken stream's unfinished event is dropped (the error event follows whole events).
        tail = await self.pipeline.chunk(call, [], True) if self.pipeline.has_chunk_hooks else []
        await self.fail(call, adapter, send, state, 502, "upstream_error", code, message, tail=tail)
        _finish_capture(call, state)
        _hand_over_read(call, adapter, state)
        await self.pipeline.response(call)

    async def _forward_chunk(self, call: Call, data: bytes, send: Send, state: _Watch) -> None:
        t = call.elapsed_ms()
        if call.ttfb_ms is None:
            call.ttfb_ms = t
        capture = state.capture
        assert capture is not None
        if capture.total + len(data) > self.settings.max_stream_bytes:
            limit = self.settings.max_stream_bytes
            raise _StreamEnd("stream_too_large", f"the upstream's stream passed max_stream_bytes ({limit} bytes)")
        splitter = state.splitter
        if splitter is None:  # an opaque stream no stage reads: relayed as it comes
            capture.add(Chunk(t, data))
            await send({"type": "http.response.body", "body": data, "more_body": True})
            return
        try:
            events = list(splitter.feed(data))
        except UnsplittableStream as exc:  # past the framing's own bound (an over-long NDJSON line)
            raise _StreamEnd(exc.code, exc.message) from None
        if state.rescue is not None:
            events = self._follow(events, state)
            data = _joined(events)
            if not data:
                return
        capture.add(Chunk(t, data))  # the upstream's bytes as they came (its record keeps their timing)
        if not events:
            return  # no event is whole yet
        self._take(events, state)
        if state.sent_capture is not None:
            events = _framed(await self.pipeline.chunk(call, events, False), False, state)
            data = _joined(events)
            if not data:
                return
            state.sent_capture.add(Chunk(t, data))
        else:
            events = _framed(events, False, state)
            data = _joined(events)
        if state.unasked is not None:
            data = _relayed(events, data, state)
            if not data:
                return
        await send({"type": "http.response.body", "body": data, "more_body": True})

    @staticmethod
    def _take(events: list[Event], state: _Watch) -> list[Event]:
        """The upstream's events (after the rescue's splice), read as they pass: the usage folded,
        the events kept (bounded) for the readers after the relay (`StreamRead`)."""
        if state.read is not None and state.fold is not None:
            state.read.take(events, state.fold)
        return events

    @staticmethod
    def _follow(events: list[Event], state: _Watch) -> list[Event]:
        """A `stream_rescue` stream's whole events: the original's as they are (an upstream error event
        held back), a continuation's rewritten into the original stream (`splice`)."""
        rescue = state.rescue
        assert rescue is not None
        out = []
        for event in events:
            if state.splicing:
                spliced = rescue.splice(event)
                if spliced is not None:
                    out.append(spliced)
            elif rescue.held_error is None and rescue.observe(event):
                # (After an upstream error event nothing more is relayed, a terminator included: the
                # stream failed, and ends as a failed one, continued or with that error.)
                out.append(event)
        return out

    async def send_reply(self, call: Call, send: Send, *, keep_upstream: bool = False) -> None:
        """Send interlock's own reply. With `keep_upstream`, the upstream's body (already in
        `call.response_body`) stays on the record and the reply is recorded as what the agent got."""
        reply = call.reply
        assert reply is not None
        call.status = reply.status
        if keep_upstream:
            call.agent_response_body = reply.body
        else:
            call.response_headers = list(reply.headers)
            call.response_body = reply.body
        call.stream = False
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
        headers.append((b"content-length", str(len(reply.body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})


@dataclass(slots=True)
class _Supplied:
    """A stage's `SuppliedResponse` as `relay` reads it (an upstream's comes as `Opened`): its head
    kept as plain values, since building an httpx response for it cost a fifth of a replayed call."""

    status: int
    headers: list[tuple[str, str]]  # names in lower case, as `decoded_headers` gives an upstream's
    content_type: str
    first: bytes
    rest: AsyncIterator[bytes]
    too_large: bool = False
    encoding: str | None = None
    unreadable: str | None = None
    end_checked: bool = True  # `SuppliedResponse.end_checked`

    @classmethod
    async def of(cls, supplied: SuppliedResponse, limit: int, adapter: Adapter, call: Call) -> _Supplied:
        """A stream (as the adapter tells one: `is_stream`) has its chunks relayed as they come; a
        body that is not a stream is read whole first (past `limit`, `max_response_bytes`, it is
        refused as an upstream's would be)."""
        # A supplied body is plain (as the forwarder hands an upstream's on, decoded); its length is
        # interlock's to state.
        headers = [(name, v) for k, v in supplied.headers if (name := k.lower()) not in _ENCODING_HEADERS]
        body = supplied.body
        status = supplied.status
        content_type = next((v for k, v in headers if k == "content-type"), "")
        if adapter.is_stream(content_type, call, status):
            first, rest = (body, _NO_CHUNKS) if isinstance(body, bytes) else (b"", body)
            if supplied.broken is not None:
                rest = _then_broken(rest, *supplied.broken)
            return cls(status, headers, content_type, first, rest, end_checked=supplied.end_checked)
        too_large = False
        if not isinstance(body, bytes):
            parts: list[bytes] = []
            size = 0
            async for part in body:
                parts.append(part)
                size += len(part)
                if size > limit:
                    too_large = True
                    aclose = getattr(body, "aclose", None)  # the rest is never read
                    if aclose is not None:
                        await aclose()
                    break
            body = b"".join(parts)
        too_large = too_large or len(body) > limit
        headers.append(("content-length", str(len(body))))
        return cls(status, headers, content_type, body[:limit] if too_large else body, _NO_CHUNKS, too_large=too_large)

    async def aclose(self) -> None:
        aclose = getattr(self.rest, "aclose", None)  # a generator the relay stopped early
        if aclose is not None:
            await aclose()


class _NoChunks:
    """No more chunks: a supplied body that came whole. One shared instance (it holds no state): an
    async generator made and closed for each supplied body cost a twentieth of a replayed call."""

    __slots__ = ()

    def __aiter__(self) -> _NoChunks:
        return self

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration


_NO_CHUNKS: AsyncIterator[bytes] = _NoChunks()


async def _then_broken(chunks: AsyncIterator[bytes], code: str, message: str) -> AsyncIterator[bytes]:
    """A supplied stream's chunks, then its break (`SuppliedResponse.broken`): the relay ends it as it
    ends an upstream's broken stream."""
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        aclose = getattr(chunks, "aclose", None)  # stopped early (the agent left): the supplier's too
        if aclose is not None:
            await aclose()
    raise _StreamEnd(code, message)


class _TooLarge(Exception):
    def __init__(self, head: bytes) -> None:
        self.head = head


class _BodyTimeout(Exception):
    def __init__(self, head: bytes, size: int) -> None:
        self.head, self.size = head, size


class _StreamEnd(Exception):
    """A stream that interlock ends with the protocol's error event (too large, or cut short)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class _Watch:
    __slots__ = (
        "disconnected",
        "started",
        "responded",
        "done",
        "sent",
        "capture",
        "sent_capture",
        "rescue",
        "splitter",
        "read",
        "fold",
        "splicing",
        "framer",
        "unasked",
    )

    def __init__(self) -> None:
        self.disconnected = False
        self.started = False  # the response head went to the agent
        self.responded = False  # the last body message is being sent
        self.done = False
        self.sent: list[Chunk] | None = None  # a stream's chunks as the agent got them (chunk hooks ran)
        self.capture: StreamCapture | None = None  # what is kept of the upstream's stream
        self.sent_capture: StreamCapture | None = None  # ... and of the agent's, when stages change it
        self.rescue: StreamRescue | None = None  # follows a `stream_rescue` route's stream
        self.splitter: EventSplitter | None = None  # splits the stream into whole events, once
        self.read: StreamRead | None = None  # what is read of the events as they pass
        self.fold: Callable[[Event, Any], Any] | None = None  # the adapter's `fold_usage`
        self.splicing = False  # the continuation is being relayed
        self.framer: StreamFramer | None = None  # the agent's framing, where interlock's events need it
        #: What the agent is sent of an event when interlock asked the upstream for more than the agent
        #: did (`Adapter.unasked`): what only the ask brought is read and recorded, never relayed.
        self.unasked: Callable[[Event], Event | None] | None = None


async def _watch_disconnect(receive: Receive, state: _Watch, task: asyncio.Task[Any] | None) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            # SDKs hang up as soon as they read the protocol's end-of-stream event (`data: [DONE]`,
            # `message_stop`), which may be before the upstream closed: that agent got everything.
            capture = state.capture
            if capture is not None and capture.markers and capture.ended:
                return
            if not (state.responded or state.done) and task is not None:
                state.disconnected = True
                task.cancel()
            return


def _hand_over_read(call: Call, adapter: Adapter, state: _Watch) -> None:
    """Hand what was read of the stream as it passed (its usage, its events) to the call's response
    view, where the usage stage and every later reader find it: the stream is not split again."""
    if state.read is not None:
        adapter.response_view(call).stream_read = state.read


def _framed(events: list[Event], last: bool, state: _Watch) -> list[Event]:
    """The events the agent gets, in the framing it asked for (`Adapter.stream_framer`)."""
    return events if state.framer is None else state.framer.frame(events, last)


def _joined(events: list[Event]) -> bytes:
    """Events as the bytes the agent gets."""
    return b"".join([event.raw for event in events]) if len(events) != 1 else events[0].raw


def _relayed(events: list[Event], data: bytes, state: _Watch) -> bytes:
    """What the agent is sent of these events (`data`, their bytes): without what it did not ask
    for (`_Watch.unasked`). The record keeps that, on both sides (the agent's side of a stream is not
    stored twice for it); replay leaves it out again (`meta.stream_usage`)."""
    unasked = state.unasked
    if unasked is None:
        return data
    out: list[Event] = []
    changed = False
    for event in events:
        kept = unasked(event)
        if kept is not event:
            changed = True
        if kept is not None:
            out.append(kept)
    return _joined(out) if changed else data


def _finish_capture(call: Call, state: _Watch) -> None:
    """Put the kept tails of the streams back on the record, with the marker of what was dropped."""
    if state.capture is not None:
        state.capture.finish(call, "upstream")
    if state.sent_capture is not None:
        state.sent_capture.finish(call, "agent")


def _keep_sent(call: Call, sent: list[Chunk] | None) -> None:
    """Record the agent's side of a stream when it differs from the upstream's."""
    chunks = call.chunks
    if sent is not None and (
        len(sent) != len(chunks) or any(a.data != b.data for a, b in zip(sent, chunks, strict=True))
    ):
        call.agent_chunks = sent


def _uncancel(task: asyncio.Task[Any] | None) -> None:
    if task is not None:
        while task.uncancel():
            pass


async def _safe_send(send: Send, data: bytes, state: _Watch) -> None:
    state.responded = True
    await send({"type": "http.response.body", "body": data})


def _with_cors(send: Send, origin: str) -> Send:
    """`send` that answers an allowed browser origin (`listen.cors`) on the response head."""

    async def cors_send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            extra = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"origin")]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return cors_send


async def _preflight(call: Call, send: Send, headers: list[tuple[str, str]]) -> None:
    """Answer a CORS preflight from an allowed origin: any method, the headers it asks for."""
    asked = next((v for k, v in headers if k == "access-control-request-headers"), "")
    reply = [
        (b"access-control-allow-methods", b"GET, POST, PUT, PATCH, DELETE, OPTIONS"),
        (b"access-control-max-age", b"600"),
    ]
    if asked:
        reply.append((b"access-control-allow-headers", asked.encode("latin-1")))
    reply.append((b"content-length", b"0"))
    call.status = 204
    await send({"type": "http.response.start", "status": 204, "headers": reply})
    await send({"type": "http.response.body", "body": b""})


async def _drain(receive: Receive, seconds: float) -> None:
    """Read and discard the rest of the request body, so the connection stays usable; for at most
    `seconds` (`server.body_timeout`: a trickled body must not hold a refused call open)."""
    with contextlib.suppress(TimeoutError):
        with Deadline(seconds):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect" or not message.get("more_body", False):
                    return


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


__all__ = ["ProxyApp"]
