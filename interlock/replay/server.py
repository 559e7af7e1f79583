"""The replay server: the recording's routes, answered from the recording by interlock's own proxy.

`ReplayApp` is interlock's proxy app (`proxy.app.ProxyApp`) with the playback stage first in its
pipeline (`playback.Playback`): each request is matched to a recorded call and gets its response as
the agent received it, relayed through the response hooks as an upstream's is. What the proxy app
does not do, this app does around it: the summary endpoint (`GET /__replay__/summary`), a route the
recording never used (a miss), and `--on-miss live`, where the first miss and every later request go
to the live runtime's own proxy app (`playback.Handoff`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from interlock.config import Route, Settings
from interlock.core.call import Call
from interlock.protocols import ADAPTERS
from interlock.proxy.app import ProxyApp
from interlock.proxy.hooks import Pipeline
from interlock.replay.diff import Divergence
from interlock.replay.match import Matcher, MatchOptions, Recorded
from interlock.replay.playback import HANDOFF, ON_MISS, Handoff, OnMiss, Playback, Summary

#: The replay server's own endpoint; route names are one path segment, so it cannot shadow one.
SUMMARY_PATH = "/__replay__/summary"
#: The whole of a replayed call may take this long past its recorded duration (divided by the speed)
#: before the proxy's total timeout ends it (a stream the agent left open is held until it goes).
TIMEOUT_SLACK = 600.0

Scope = dict[str, Any]
Receive = Any
Send = Any


def replay_settings(
    calls: Sequence[Call], matcher: Matcher, speed: float | None, host: str, allowed_hosts: Sequence[str] = ()
) -> Settings:
    """The replay's proxy settings: the recording's routes (served by the playback stage: no
    upstream), a total timeout that lets the longest recorded call replay at `speed`, a response
    bound that lets the largest recorded body through, and the `Host` names it answers besides
    localhost, IP addresses and `host` (`listen.allowed_hosts`, docs/security.md)."""
    longest = max((call.duration_ms or 0.0 for call in calls), default=0.0) / 1000.0
    largest = max((len(call.agent_body() or b"") for call in calls if not call.stream), default=0)
    base = Settings.model_validate(
        {
            "listen": {"host": host, "port": 0, "allowed_hosts": list(allowed_hosts)},
            "timeouts": {"total": TIMEOUT_SLACK + (longest / speed if speed is not None else 0.0)},
            "max_response_bytes": max(Settings.model_fields["max_response_bytes"].default, largest),
        }
    )
    # Built unvalidated: a route of the recording has no upstream (the stage answers every call).
    routes = {name: Route.model_construct(protocol=protocol) for name, protocol in matcher.routes.items()}
    return base.model_copy(update={"routes": routes})


class ReplayApp:
    """The replay server as an ASGI app: interlock's proxy app playing the recording back."""

    def __init__(
        self,
        calls: Sequence[Call],
        *,
        options: MatchOptions | None = None,
        speed: float | None = 1.0,
        on_miss: OnMiss = "error",
        live: Any = None,
        stages: Sequence[object] = (),
        host: str = "127.0.0.1",
        allowed_hosts: Sequence[str] = (),
    ) -> None:
        """`live`: the live runtime's proxy app (`on_miss` live); `stages`: stages of your own, after
        the playback (they see every replayed answer go by, as a live call's); `host`: the address it
        listens on, and `allowed_hosts` the other `Host` names it answers (`listen.allowed_hosts`)."""
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
        self.stats = Summary(recorded=len(self.matcher.recorded), unreplayable=len(self.matcher.unreplayable))
        self.playback = Playback(self.matcher, self.stats, speed=speed, on_miss=on_miss)
        settings = replay_settings(calls, self.matcher, speed, host, allowed_hosts)
        self.proxy = ProxyApp(settings, Pipeline([self.playback, *stages]), None)
        self._route_list = ", ".join(f"/{r}/" for r in self.matcher.routes) or "(none)"

    @property
    def going_live(self) -> bool:
        return self.playback.going_live

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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.proxy(scope, receive, send)  # lifespan
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        if raw_path == SUMMARY_PATH.encode() and scope["method"] == "GET":
            await _send_json(send, 200, self.summary().to_json())
            return
        if self.playback.going_live:
            await self.forward_live(scope, receive, send)
            return
        name_bytes, _, rest = raw_path[1:].partition(b"/")
        name = name_bytes.decode("latin-1")
        if name not in self.matcher.routes:
            await self.unknown_route(scope, name, rest, receive, send)
        elif self.live_app is None:
            await self.proxy(scope, receive, send)
        else:
            await self.play_or_hand_over(scope, receive, send)

    async def play_or_hand_over(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Play the request back; on a miss the stage hands it over (`Handoff`): the proxy app's
        answer is dropped and the request, its body as read, goes to the live runtime."""
        handoff = Handoff()
        token = HANDOFF.set(handoff)
        body: list[bytes] = []

        async def kept_receive() -> dict[str, Any]:
            message = dict(await receive())
            if message["type"] == "http.request":
                body.append(message.get("body", b""))
            return message

        async def held_send(message: dict[str, Any]) -> None:
            if not handoff.live:
                await send(message)

        try:
            await self.proxy(scope, kept_receive, held_send)
        finally:
            HANDOFF.reset(token)
        if handoff.live:
            await self.forward_live(scope, receive, send, b"".join(body))

    async def unknown_route(self, scope: Scope, name: str, rest: bytes, receive: Receive, send: Send) -> None:
        """A route the recording never used: the agent did something it did not do then."""
        body = await _read_body(receive)
        if body is None:
            return  # the agent left before sending its request
        self.stats.requests += 1
        path = "/" + rest.decode("latin-1")
        reason = f"the recording has no route named {name!r}; routes: {self._route_list}"
        self.stats.add_miss(Divergence(self.stats.requests, name, scope["method"], path, reason=reason))
        if self.on_miss == "live":
            self.playback.going_live = True
            self.stats.requests -= 1  # counted again as live
            await self.forward_live(scope, receive, send, body)
            return
        reply = ADAPTERS["http"].error_reply(404, "unknown_route", f"interlock replay: {reason}", retryable=False)
        await _send_whole(send, reply.status, reply.headers, reply.body)

    async def forward_live(self, scope: Scope, receive: Receive, send: Send, body: bytes | None = None) -> None:
        """The request to the live runtime's proxy app (`body`: what was read of it already)."""
        self.stats.requests += 1
        self.stats.live += 1
        if body is None:
            await self.live_app(scope, receive, send)
            return
        sent = False

        async def replayed_receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return dict(await receive())

        await self.live_app(scope, replayed_receive, send)


async def _send_whole(send: Send, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    head = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers if k.lower() != "content-length"]
    head.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": head})
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


__all__ = ["ReplayApp", "Summary", "OnMiss", "ON_MISS", "Recorded", "replay_settings"]
