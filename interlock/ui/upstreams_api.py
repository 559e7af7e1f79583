"""`GET /api/upstreams`: per route and upstream, the calls in flight and both kinds of circuit breaker
(issue 21): the upstream-wide one (transport failures) and one per model (docs/routing.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from interlock.ui.state import AdminState


async def upstreams(request: Request) -> Response:
    """Routes → upstreams → {breaker: {state, consecutive_failures, ...}, models: {model: {state, ...}},
    inflight, ...}."""
    runtime: AdminState = request.app.state.runtime
    return JSONResponse(runtime.forwarder.snapshot())


def routes() -> list[BaseRoute]:
    return [Route("/api/upstreams", upstreams, methods=["GET"])]


__all__ = ["routes", "upstreams"]
