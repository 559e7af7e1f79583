"""The admin ASGI app: `/health`, `/ready`, the JSON API under `/api/`, and the UI under `/`."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from interlock import __version__

if TYPE_CHECKING:
    from interlock.server import Runtime


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok", "version": __version__})


async def ready(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    if not runtime.ready:
        return JSONResponse({"status": "starting"}, status_code=503)
    if warming := runtime.warming():  # e.g. the guardrails engine: the first call would wait for it
        return JSONResponse({"status": "starting", "warming": warming}, status_code=503)
    if runtime.settings.admin.token:  # answered without the token: the status alone
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "ready", "routes": sorted(runtime.settings.routes)})


#: Probes for orchestrators (Docker HEALTHCHECK, Kubernetes): answered without the admin token.
OPEN_PATHS = frozenset({"/health", "/ready"})


class TokenGuard:
    """When `admin.token` is set, every request but the probes (`OPEN_PATHS`) needs it (header, or
    `?token=` for the UI)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token and scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            request = Request(scope)
            given = request.headers.get("authorization", "")
            given = given[7:] if given.lower().startswith("bearer ") else request.query_params.get("token", "")
            if not given:
                given = request.cookies.get("interlock_token", "")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                response = JSONResponse({"error": {"code": "unauthorized", "message": "admin token required"}}, 401)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def admin_routes() -> list[BaseRoute]:
    """Every route of the admin port. Each feature lists its own routes in its own module."""
    routes: list[BaseRoute] = [Route("/health", health), Route("/ready", ready)]
    from interlock.ui.api import api_routes

    routes += api_routes()
    from interlock.ui import upstreams_api

    routes += upstreams_api.routes()
    from interlock.ui import policies_api

    routes += policies_api.routes()
    from interlock.ui import pages

    routes += pages.routes()  # the web UI (last: `/` and `/static`)
    return routes


def create_admin_app(runtime: Runtime) -> Any:
    app = Starlette(routes=admin_routes())
    app.state.runtime = runtime
    return TokenGuard(app, runtime.settings.admin.token)
