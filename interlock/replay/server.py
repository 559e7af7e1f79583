"""The replay server: the recording's routes, answered from the recording.

Each request is matched (`match.Matcher`) to a recorded call and gets its response as the agent
received it: same status, headers and body; a stream with the same chunk boundaries, at the
recorded timing scaled by `speed` (None: as fast as possible). MCP responses get the incoming
JSON-RPC id. A request that matches nothing is a miss, explained by `diff.diverge`, and then
answered per `on_miss`: `error` (a protocol-shaped 409 carrying the diff summary), `next` (the next
recorded call of the route, in order) or `live` (this and every later request goes to a real
upstream through interlock's own proxy app).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from interlock.config import SECRET_QUERY_PARAMS
from interlock.core.call import Call, Chunk
from interlock.core.views import Event
from interlock.guardrails.redaction import placeholder_restorer
from interlock.guardrails.streamrewrite import StreamTextRewriter
from interlock.protocols import ADAPTERS
from interlock.protocols.base import decoded_body, dump_body
from interlock.protocols.mcp import json_rpc_error
from interlock.proxy.admission import public_query, upstream_path
from interlock.replay.diff import Divergence, diverge
from interlock.replay.match import _RAW, Match, Matcher, MatchOptions, Recorded, Request, restore

log = logging.getLogger("interlock.replay")

#: RFC 9110 connection-specific fields, as in `interlock.proxy.upstream` (not imported from there:
#: that module loads the HTTP client stack, which only `--on-miss live` needs).
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)

OnMiss = Literal["error", "next", "live"]
ON_MISS: tuple[OnMiss, ...] = ("error", "next", "live")
#: The replay server's own endpoint; route names are one path segment, so it cannot shadow one.
SUMMARY_PATH = "/__replay__/summary"

#: Recorded queries have these parameters' values masked (`***`): so are the agent's, to match.
_SECRET_PARAMS = frozenset(SECRET_QUERY_PARAMS)
#: Misses explained with a full diff; later ones only name the recorded call expected next.
DETAILED_MISSES = 100

Scope = dict[str, Any]
Receive = Any
Send = Any


@dataclass(slots=True)
class Summary:
    """What a replay did: calls served from the recording, misses, and recorded calls never used."""

    requests: int = 0
    served: int = 0  # answered by the recorded call they matched
    served_next: int = 0  # misses answered with the next recorded call (`--on-miss next`)
    live: int = 0  # sent to a real upstream (`--on-miss live`)
    misses: list[Divergence] = field(default_factory=list)
    unused: list[dict[str, Any]] = field(default_factory=list)
    unreplayable: int = 0  # recorded calls that never got a response (nothing to serve)
    recorded: int = 0

    @property
    def diverged(self) -> bool:
        return bool(self.misses)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "recorded": self.recorded,
            "served": self.served,
            "served_next": self.served_next,
            "live": self.live,
            "misses": [m.to_json() for m in self.misses],
            "unused": self.unused,
            "unreplayable": self.unreplayable,
            "diverged": self.diverged,
        }

    def text(self) -> str:
        lines = [
            f"replay: {self.requests} requests; {self.served} of {self.recorded} recorded calls served from the "
            f"recording, {len(self.misses)} misses, {len(self.unused)} recorded calls unused"
            + (f", {self.served_next} served as next in order" if self.served_next else "")
            + (f", {self.live} sent live" if self.live else "")
        ]
        if self.misses:
            lines.append("first divergence:")
            lines += ["  " + line for line in self.misses[0].text().splitlines()]
            for miss in self.misses[1:]:
                lines.append("miss: " + miss.headline())
        if self.unused:
            lines.append("unused recorded calls:")
            for item in self.unused[:20]:
                lines.append(f"  step {item['step']}: {item['method']} /{item['route']}{item['path']} ({item['id']})")
            if len(self.unused) > 20:
                lines.append(f"  ... and {len(self.unused) - 20} more")
        return "\n".join(lines)


class ReplayApp:
    """The replay server as a raw ASGI app (like the proxy: it needs raw paths and body control)."""

    def __init__(
        self,
        calls: Sequence[Call],
        *,
        options: MatchOptions | None = None,
        speed: float | None = 1.0,
        on_miss: OnMiss = "error",
        live: Any = None,
    ) -> None:
        if on_miss not in ON_MISS:
            raise ValueError(f"on_miss must be one of {', '.join(ON_MISS)}")
        if on_miss == "live" and live is None:
            raise ValueError("on_miss='live' needs an app to forward to (a ProxyApp)")
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive (or None for as fast as possible)")
        self.matcher = Matcher(calls, options)
        self.speed = speed
        self.on_miss = on_miss
        self.live_app = live
        self.going_live = False
        self.stats = Summary(recorded=len(self.matcher.recorded), unreplayable=len(self.matcher.unreplayable))
        routes = ", ".join(f"/{r}/" for r in self.matcher.routes) or "(none)"
        self._route_list = routes

    # -- summary ------------------------------------------------------------------------------------

    def summary(self) -> Summary:
        self.stats.unused = [
            {
                "step": r.step,
                "id": r.call.id,
                "route": r.call.route,
                "method": r.call.method,
                "path": r.call.path,
                "session": r.call.session,
            }
            for r in self.matcher.unused()
        ]
        return self.stats

    # -- ASGI ---------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        if raw_path == SUMMARY_PATH.encode() and scope["method"] == "GET":
            await _send_json(send, 200, self.summary().to_json())
            return
        name_bytes, _, rest = raw_path[1:].partition(b"/")
        name = name_bytes.decode("latin-1")
        body = await _read_body(receive)
        if body is None:
            return  # the agent left before sending its request
        protocol = self.matcher.routes.get(name)
        if self.going_live:
            await self.forward_live(scope, body, receive, send)
            return
        if protocol is None:
            # A route the recording never used: the agent did something it did not do then.
            self.stats.requests += 1
            path = "/" + rest.decode("latin-1")
            reason = f"the recording has no route named {name!r}; routes: {self._route_list}"
            self.stats.misses.append(Divergence(self.stats.requests, name, scope["method"], path, reason=reason))
            if self.on_miss == "live":
                self.going_live = True
                self.stats.requests -= 1
                await self.forward_live(scope, body, receive, send)
                return
            reply = ADAPTERS["http"].error_reply(404, "unknown_route", f"interlock replay: {reason}", retryable=False)
            await _send_whole(send, reply.status, reply.headers, reply.body)
            return
        self.stats.requests += 1
        session = None
        for key, value in scope["headers"]:
            if key == b"x-interlock-session":
                session = value.decode("latin-1").strip() or None
                break
        request = Request(
            name,
            protocol,
            scope["method"],
            upstream_path(rest),  # as the proxy recorded it
            public_query(scope["query_string"].decode("latin-1"), _SECRET_PARAMS),  # recorded masked
            body,
            session,
        )
        key, data = self.matcher.key_of(request)
        found = self.matcher.match(request, key, data)
        if found is not None:
            self.stats.served += 1
            await self.serve(found, data, receive, send)
            return
        # Only the first misses get a full diff: past that, a run has long left the recording.
        detailed = len(self.stats.misses) < DETAILED_MISSES
        divergence = diverge(self.stats.requests, request, key, data, self.matcher, detailed=detailed)
        self.stats.misses.append(divergence)
        if len(self.stats.misses) == 1:
            log.warning("replay diverged:\n%s", divergence.text())
        if self.on_miss == "live":
            self.going_live = True
            self.stats.requests -= 1  # counted again as live
            await self.forward_live(scope, body, receive, send)
            return
        if self.on_miss == "next":
            entry = self.matcher.next_in_order(name)
            if entry is not None:
                self.stats.served_next += 1
                await self.serve(Match(entry, dict(self.matcher.values)), data, receive, send)
                return
        message = "interlock replay: " + divergence.summary()
        reply = ADAPTERS[protocol].error_reply(409, "replay_divergence", message, retryable=False)
        if ADAPTERS[protocol].is_jsonrpc and isinstance(data, dict) and data is not _RAW and "id" in data:
            # A JSON-RPC request gets its error as a 200 carrying its own id, whether or not this miss
            # was diffed (the MCP SDK 1.x client tears the session down on any other status).
            await _send_whole(send, 200, reply.headers, json_rpc_error(data["id"], "replay_divergence", message))
            return
        await _send_whole(send, reply.status, reply.headers, reply.body)

    async def forward_live(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        self.stats.requests += 1
        self.stats.live += 1
        sent = False

        async def replayed_receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return dict(await receive())

        await self.live_app(scope, replayed_receive, send)

    # -- serving a recorded call --------------------------------------------------------------------

    async def serve(self, found: Match, data: Any, receive: Receive, send: Send) -> None:
        call = found.recorded.call
        assert call.status is not None
        started = time.perf_counter()
        rpc = ADAPTERS[call.protocol].is_jsonrpc and isinstance(data, dict) and "id" in data
        values = found.values
        chunks = call.agent_chunks if call.agent_chunks is not None else call.chunks
        content_type = next((v for k, v in call.response_headers if k.lower() == "content-type"), "")
        streamed = bool(chunks) or content_type.startswith("text/event-stream")
        if not streamed:
            body = (call.agent_response_body if call.agent_response_body is not None else call.response_body) or b""
            headers = call.response_headers
            if (rpc or values) and body:
                decoded = decoded_body(body, headers)
                if decoded != body:  # rewriting needs the plain body; the encoding header goes
                    headers = [(k, v) for k, v in headers if k.lower() != "content-encoding"]
                body = restore(decoded, values)
                if rpc:
                    body = _with_rpc_id(body, data)
            await self.wait(started, call.ttfb_ms if call.ttfb_ms is not None else call.duration_ms)
            await _send_whole(send, call.status, headers, body)
            return
        chunks = list(chunks)
        if call.error_code == "stream_broken" and call.agent_chunks is None:
            # The agent got an error event that only the adapter wrote, never an upstream chunk.
            adapter = ADAPTERS[call.protocol]
            event = adapter.stream_error_event("stream_broken", call.error or "stream broken")
            framer = adapter.stream_framer(call)
            if framer is not None:  # in the framing the agent asked for, after what it got before
                framer.frame(list(adapter.iter_events(b"".join(chunk.data for chunk in chunks))), False)
                event = b"".join(e.raw for e in framer.frame([Event(event, None, "")], True))
            chunks.append(Chunk(chunks[-1].t_ms if chunks else 0.0, event))
        rewrite = _StreamRewriter(call.protocol, data if rpc else None, values) if (rpc or values) else None
        head = _agent_headers(call.response_headers, length=None)
        head_sent = False
        for chunk in chunks:
            await self.wait(started, chunk.t_ms)
            piece = rewrite.feed(chunk.data) if rewrite else chunk.data
            if not head_sent:
                await send({"type": "http.response.start", "status": call.status, "headers": head})
                head_sent = True
            if piece:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
        if not head_sent:
            await send({"type": "http.response.start", "status": call.status, "headers": head})
        tail = rewrite.close() if rewrite else b""
        if call.outcome in ("aborted", "closed"):
            # The agent itself left this stream open (an MCP GET event stream, a cancelled answer):
            # hold it open, as the upstream did, until the agent goes.
            if tail:
                await send({"type": "http.response.body", "body": tail, "more_body": True})
            await _wait_disconnect(receive)
            return
        await send({"type": "http.response.body", "body": tail})

    async def wait(self, started: float, at_ms: float | None) -> None:
        if self.speed is None or not at_ms:
            return
        delay = started + at_ms / 1000.0 / self.speed - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)


class _StreamRewriter(StreamTextRewriter):
    """Rewrites SSE events on their way out without regrouping chunks: complete events leave with
    the chunk that completed them. MCP events get the incoming JSON-RPC id. Placeholders are restored
    per logical text, as the guardrails' `StreamGuard` restores them (the same `StreamTextRewriter`):
    a model writes `<EMAIL_ADDRESS_1>` over several deltas, so each text's tail that could still be a
    placeholder waits for the next delta, and is released before the next event without a delta."""

    def __init__(self, protocol: str, rpc_request: Any, values: dict[str, str]) -> None:
        super().__init__(ADAPTERS[protocol], entities=False)
        self.rpc_request = rpc_request
        self.values = values
        self.splitter = self.adapter.event_splitter()

    def feed(self, data: bytes) -> bytes:
        return b"".join(self._rewrite(e) for e in self.splitter.feed(data))

    def close(self) -> bytes:
        return b"".join(self._rewrite(e) for e in self.splitter.close()) + b"".join(e.raw for e in self.flush())

    def _rewrite(self, event: Event) -> bytes:
        raw = event.raw
        if self.values:
            raw = b"".join(e.raw for e in self.event(event))
        if self.rpc_request is None or b'"id"' not in raw:
            return raw
        lines = raw.split(b"\n")
        for i, line in enumerate(lines):
            if line.startswith(b"data:"):
                payload = line[5:].strip()
                rewritten = _with_rpc_id(payload, self.rpc_request)
                if rewritten is not payload:
                    lines[i] = b"data: " + rewritten
        return b"\n".join(lines)

    def processor(self, key: str, json_text: bool, record: bool = True) -> Callable[[str], str]:
        return placeholder_restorer(self.values.get, json_text)

    def untexted(self, event: Event) -> Event:
        # No text the adapter knows (an MCP message it does not read, a line that is not JSON):
        # placeholders are restored in the raw bytes.
        data = restore(event.data.encode(), self.values).decode("utf-8", "replace")
        return Event(restore(event.raw, self.values), event.event, data)


def _with_rpc_id(body: bytes, request: Any) -> bytes:
    """A JSON-RPC response body carrying the incoming request's id."""
    if not isinstance(request, dict) or request is _RAW or "id" not in request:
        return body
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return body
    if not isinstance(message, dict) or ("result" not in message and "error" not in message):
        return body
    message["id"] = request["id"]
    return dump_body(message)


def _agent_headers(headers: list[tuple[str, str]], length: int | None) -> list[tuple[bytes, bytes]]:
    out = [
        (k.encode("latin-1"), v.encode("latin-1"))
        for k, v in headers
        if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"
    ]
    if length is not None:
        out.append((b"content-length", str(length).encode()))
    return out


async def _send_whole(send: Send, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _agent_headers(headers, len(body))})
    await send({"type": "http.response.body", "body": body})


async def _send_json(send: Send, status: int, data: Any) -> None:
    await _send_whole(send, status, [("content-type", "application/json")], json.dumps(data).encode())


async def _read_body(receive: Receive) -> bytes | None:
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


__all__ = ["ReplayApp", "Summary", "OnMiss", "ON_MISS", "Recorded"]
