"""The playback stage: each request matched to a recorded call, and answered with its response.

A replay is interlock's own proxy app (`proxy.app.ProxyApp`, assembled by `server.ReplayApp`) with
this stage first in its pipeline. A request that matches a recorded call (`match.Matcher`) gets that
call's response supplied (`call.supplied`): status, headers and body; a stream as its recorded chunks,
at the recorded timing scaled by `speed` (None: as fast as possible). The proxy relays it as it
relays an upstream's, through every response hook: a stream keeps its chunk boundaries and reaches
the `chunk` hooks as whole events, and one that broke ends with the adapter's error event in the
agent's framing. This stage's own `chunk` and `response` hooks give the answer the incoming request's
values: placeholders restored (per text, through the adapter, by the guardrails' `StreamTextRewriter`)
and the JSON-RPC id (`Adapter.reply_with_id`, `Adapter.event_with_id`).

A request that matches nothing is a miss, explained by `diff.diverge`, then answered per `on_miss`:
`error` (a protocol-shaped 409 carrying the diff summary), `next` (the next recorded call of the
route, in order) or `live` (this request and every later one goes to a real upstream through
interlock's own runtime: the stage hands the request over, `Handoff`, and `server.ReplayApp` sends it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

from interlock.core.call import Call, Chunk, Reply, SuppliedResponse
from interlock.core.views import Event
from interlock.guardrails.redaction import placeholder_restorer
from interlock.guardrails.streamrewrite import StreamTextRewriter
from interlock.protocols import ADAPTERS, Adapter, BadRequest
from interlock.protocols.base import STREAM_USAGE, decoded_body
from interlock.protocols.mcp import json_rpc_error
from interlock.replay.diff import Divergence, diverge
from interlock.replay.match import Match, Matcher, Request, restore

log = logging.getLogger("interlock.replay")

OnMiss = Literal["error", "next", "live"]
ON_MISS: tuple[OnMiss, ...] = ("error", "next", "live")
#: Misses explained with a full diff; later ones only name the recorded call expected next.
DETAILED_MISSES = 100
#: Misses kept in the summary (each names the request and the recorded call expected); later ones are
#: only counted (`Summary.misses_left_out`): an agent that left the recording for good, run for hours,
#: would otherwise grow the list without bound.
KEPT_MISSES = 1000
#: The recorded outcomes of a stream the agent itself left open (an MCP GET event stream, a cancelled
#: answer): replayed held open, as the upstream held it, until the agent goes.
_LEFT_OPEN = frozenset({"aborted", "closed"})


@dataclass(slots=True)
class Summary:
    """What a replay did: calls served from the recording, misses, and recorded calls never used."""

    requests: int = 0
    served: int = 0  # answered by the recorded call they matched
    served_next: int = 0  # misses answered with the next recorded call (`--on-miss next`)
    live: int = 0  # sent to a real upstream (`--on-miss live`)
    misses: list[Divergence] = field(default_factory=list)  # the first KEPT_MISSES (add_miss)
    misses_left_out: int = 0  # misses past those, counted only
    unused: list[dict[str, Any]] = field(default_factory=list)
    unreplayable: int = 0  # recorded calls that never got a response (nothing to serve)
    recorded: int = 0

    @property
    def diverged(self) -> bool:
        return bool(self.misses)

    @property
    def missed(self) -> int:
        """Every miss, those left out of `misses` included."""
        return len(self.misses) + self.misses_left_out

    def add_miss(self, divergence: Divergence) -> None:
        """A miss kept, or past the first KEPT_MISSES counted only."""
        if len(self.misses) < KEPT_MISSES:
            self.misses.append(divergence)
        else:
            self.misses_left_out += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "recorded": self.recorded,
            "served": self.served,
            "served_next": self.served_next,
            "live": self.live,
            "misses": [m.to_json() for m in self.misses],
            "misses_left_out": self.misses_left_out,
            "unused": self.unused,
            "unreplayable": self.unreplayable,
            "diverged": self.diverged,
        }

    def text(self) -> str:
        lines = [
            f"replay: {self.requests} requests; {self.served} of {self.recorded} recorded calls served from the "
            f"recording, {self.missed} misses, {len(self.unused)} recorded calls unused"
            + (f", {self.served_next} served as next in order" if self.served_next else "")
            + (f", {self.live} sent live" if self.live else "")
        ]
        if self.misses:
            lines.append("first divergence:")
            lines += ["  " + line for line in self.misses[0].text().splitlines()]
            for miss in self.misses[1:]:
                lines.append("miss: " + miss.headline())
            if self.misses_left_out:
                lines.append(
                    f"... and {self.misses_left_out} more misses, left out (only the first {KEPT_MISSES} kept)"
                )
        if self.unused:
            lines.append("unused recorded calls:")
            for item in self.unused[:20]:
                lines.append(f"  step {item['step']}: {item['method']} /{item['route']}{item['path']} ({item['id']})")
            if len(self.unused) > 20:
                lines.append(f"  ... and {len(self.unused) - 20} more")
        return "\n".join(lines)


class Handoff:
    """One request's way out to the live runtime (`--on-miss live`): `server.ReplayApp` sets one for
    each request it passes to the replay's proxy app (`HANDOFF`), and the stage marks it `live` on a
    miss. The proxy app's answer is then dropped and the request goes to the live runtime's own
    proxy app, its pipeline whole (routes, keys, retries, policies, recording): a recorded answer is
    never touched by the live stages, and a live call is never the replay's."""

    __slots__ = ("live",)

    def __init__(self) -> None:
        self.live = False


HANDOFF: ContextVar[Handoff | None] = ContextVar("interlock_replay_handoff", default=None)


class _Restorer(StreamTextRewriter):
    """Placeholders restored in a recorded stream's events, per logical text, as the guardrails'
    `StreamGuard` restores a live one (the same `StreamTextRewriter`): a model writes
    `<EMAIL_ADDRESS_1>` over several deltas, so each text's tail that could still be a placeholder
    waits for the next delta, and is released before the next event without a delta."""

    def __init__(self, adapter: Adapter, values: dict[str, str]) -> None:
        super().__init__(adapter, entities=False)
        self.values = values

    def processor(self, key: str, json_text: bool, record: bool = True) -> Callable[[str], str]:
        return placeholder_restorer(self.values.get, json_text)

    def untexted(self, event: Event) -> Event:
        # No text the adapter knows (an MCP message it does not read, a line that is not JSON):
        # placeholders are restored in the raw bytes.
        data = restore(event.data.encode(), self.values).decode("utf-8", "replace")
        return Event(restore(event.raw, self.values), event.event, data)


@dataclass(slots=True)
class _Served:
    """What a supplied answer needs on its way out: the incoming request's values."""

    values: dict[str, str]
    rpc: bool  # a JSON-RPC request: the answer gets its id
    rpc_id: Any
    restorer: _Restorer | None


class Playback:
    """The stage that answers each request from the recording (see the module's docstring)."""

    name = "replay"

    def __init__(
        self, matcher: Matcher, stats: Summary, *, speed: float | None = 1.0, on_miss: OnMiss = "error"
    ) -> None:
        self.matcher = matcher
        self.stats = stats
        self.speed = speed
        self.on_miss = on_miss
        #: Set by the first miss with `on_miss` live: every later request goes to the live runtime.
        self.going_live = False
        self._calls: dict[str, _Served] = {}  # by call id, while a call with values to give is relayed

    # -- hooks --------------------------------------------------------------------------------------

    async def request(self, call: Call) -> None:
        """Match the request; supply the recorded answer, or answer the miss per `on_miss`."""
        adapter = ADAPTERS[call.protocol]
        stats = self.stats
        stats.requests += 1
        request = Request(
            call.route,
            call.protocol,
            call.method,
            call.path,  # as the proxy recorded it
            call.query,  # credentials masked as on record (`secret_query_params`)
            call.request_body,
            _session(call.request_headers),
        )
        key, data = self.matcher.key_of(request)
        found = self.matcher.match(request, key, data)
        if found is not None:
            stats.served += 1
            self.supply(call, adapter, found, data)
            return
        # Only the first misses get a full diff: past that, a run has long left the recording.
        detailed = len(stats.misses) < DETAILED_MISSES
        divergence = diverge(stats.requests, request, key, data, self.matcher, detailed=detailed)
        stats.add_miss(divergence)
        if stats.missed == 1:
            log.warning("replay diverged:\n%s", divergence.text())
        if self.on_miss == "live":
            self.hand_over(call)
            return
        if self.on_miss == "next":
            entry = self.matcher.next_in_order(call.route)
            if entry is not None:
                stats.served_next += 1
                self.supply(call, adapter, Match(entry, dict(self.matcher.values)), data)
                return
        message = "interlock replay: " + divergence.summary()
        reply = adapter.error_reply(409, "replay_divergence", message, retryable=False)
        if adapter.is_jsonrpc and isinstance(data, dict) and "id" in data:
            # A JSON-RPC request gets its error as a 200 carrying its own id, whether or not this miss
            # was diffed (the MCP SDK 1.x client tears the session down on any other status).
            reply = Reply(200, json_rpc_error(data["id"], "replay_divergence", message), reply.headers)
        call.answer(reply, "denied", "replay_divergence", message)

    async def chunk(self, call: Call, events: list[Event], last: bool) -> list[Event]:
        """A recorded stream's events with the incoming request's placeholder values and JSON-RPC id."""
        served = self._calls.get(call.id)
        if served is None:
            return events
        restorer = served.restorer
        if restorer is not None:
            events = [out for event in events for out in restorer.event(event)]
            if last:
                events += restorer.flush()
        if served.rpc:
            adapter = ADAPTERS[call.protocol]
            events = [adapter.event_with_id(event, served.rpc_id) for event in events]
        return events

    async def response(self, call: Call) -> None:
        """A recorded body with the incoming request's placeholder values and JSON-RPC id: what the
        agent gets (`agent_response_body`); the call keeps the recorded one."""
        served = self._calls.get(call.id)
        if served is None or call.stream or not call.response_body:
            return
        body = restore(call.response_body, served.values)
        if served.rpc:
            body = ADAPTERS[call.protocol].reply_with_id(body, served.rpc_id)
        if body != call.response_body:
            call.agent_response_body = body

    async def seal(self, call: Call) -> None:
        self._calls.pop(call.id, None)

    # -- answering -----------------------------------------------------------------------------------

    def hand_over(self, call: Call) -> None:
        """This request, and every later one, to the live runtime (`Handoff`)."""
        handoff = HANDOFF.get()
        if handoff is None:  # `ReplayApp` sets one whenever it has a live runtime: a bug if not
            raise RuntimeError("on_miss is live, but this request has no way to the live runtime")
        self.going_live = True
        self.stats.requests -= 1  # counted again as live
        handoff.live = True
        # Never sent (the app drops it and forwards the request): it ends the request phase.
        call.answer(Reply(502, b""), "aborted", "replay_live", "handed to the live runtime")

    def supply(self, call: Call, adapter: Adapter, found: Match, data: Any) -> None:
        """The recorded call's response, as the agent received it, supplied for the proxy to relay."""
        recorded = found.recorded.call
        assert recorded.status is not None
        call.model = recorded.model
        rpc = adapter.is_jsonrpc and isinstance(data, dict) and "id" in data
        values = found.values
        chunks = recorded.agent_chunks if recorded.agent_chunks is not None else recorded.chunks
        headers = recorded.response_headers
        content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
        streamed = bool(chunks) or content_type.startswith("text/event-stream")
        if streamed:
            try:
                # As the parse stage reads a live request: the relay asks the adapter whether the
                # answer is a stream (Gemini's JSON array: if the request asked for one) and whether
                # it is open-ended (MCP's `subscriptions/listen`), which the view says. A body answered
                # whole needs neither, and its parse would cost a tenth of a replayed call.
                view = adapter.parse(call)
                call.view, call.stream = view, view.stream
            except BadRequest:
                pass  # a body the live parse refused: its recorded answer is that refusal, matched by its bytes
        if rpc or values:
            restorer = _Restorer(adapter, values) if values and streamed else None
            self._calls[call.id] = _Served(values, rpc, data["id"] if rpc else None, restorer)
        if not streamed:
            agent_body = recorded.agent_response_body
            body = (agent_body if agent_body is not None else recorded.response_body) or b""
            if any(k.lower() == "content-encoding" for k, _ in headers):
                body = decoded_body(body, headers)  # a supplied body is plain (the proxy states its length)
            at_ms = recorded.ttfb_ms if recorded.ttfb_ms is not None else recorded.duration_ms
            timed = self._later(call, at_ms, body) if self.speed is not None and at_ms else body
            call.supplied = SuppliedResponse(recorded.status, headers, timed, self.name)
            return
        if STREAM_USAGE in recorded.meta:
            # interlock asked the recorded upstream for the usage the agent did not ask for: the
            # recorded stream holds its answer, which the agent was not sent (nor is now).
            call.meta[STREAM_USAGE] = recorded.meta[STREAM_USAGE]
        broken = None
        code = recorded.error_code
        if (
            recorded.agent_chunks is None
            and code
            and (recorded.truncated or code == "stream_broken")
            and recorded.outcome not in _LEFT_OPEN
        ):
            # interlock ended this stream with the protocol's error event (it broke, or was cut short;
            # `truncated` says so, and a record from before it did says `stream_broken`): only the
            # adapter wrote that event, never an upstream chunk, so the proxy writes it again, after
            # the recorded events, in the agent's framing.
            broken = (code, recorded.error or code)
        call.supplied = SuppliedResponse(
            recorded.status,
            headers,
            self._played(call, chunks, hold_open=recorded.outcome in _LEFT_OPEN),
            self.name,
            end_checked=False,  # the recorded chunks are the whole stream the agent got
            broken=broken,
        )

    async def _played(self, call: Call, chunks: Sequence[Chunk], *, hold_open: bool) -> AsyncIterator[bytes]:
        """The recorded chunks, each at its recorded offset divided by `speed` (the call's start is
        the recording's). `hold_open`: the agent left this stream open; it stays open until the agent
        goes (the proxy then cancels the call) or the route's total timeout."""
        speed = self.speed
        for chunk in chunks:
            if speed is not None and chunk.t_ms:
                await _until(call.started + chunk.t_ms / 1000.0 / speed)
            yield chunk.data
        if hold_open:
            await asyncio.get_running_loop().create_future()

    async def _later(self, call: Call, at_ms: float, body: bytes) -> AsyncIterator[bytes]:
        """A body at its recorded time to first byte divided by `speed`."""
        assert self.speed is not None
        await _until(call.started + at_ms / 1000.0 / self.speed)
        yield body


async def _until(when: float) -> None:
    delay = when - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


def _session(headers: Sequence[tuple[str, str]]) -> str | None:
    for name, value in headers:
        if name == "x-interlock-session":
            return value.strip() or None
    return None


__all__ = ["HANDOFF", "ON_MISS", "Handoff", "OnMiss", "Playback", "Summary"]
