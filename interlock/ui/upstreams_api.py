"""`GET /api/upstreams`: per route and upstream, the circuit breaker's state and the calls in flight."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from interlock.server import Runtime


async def upstreams(request: Request) -> Response:
    """Routes → upstreams → {breaker: {state, consecutive_failures, ...}, inflight, ...}."""
    runtime: Runtime = request.app.state.runtime
    return JSONResponse(runtime.forwarder.snapshot())


def routes() -> list[BaseRoute]:
    return [Route("/api/upstreams", upstreams, methods=["GET"])]


__all__ = ["routes", "upstreams"]
