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
from interlock.config import Admin
from interlock.proxy.admission import HostAllowList
from interlock.tracing.schema import StoreUnavailable
from interlock.ui import agents, metrics, pages, policies_api, render, stops_api, upstreams_api
from interlock.ui.api import api_routes
from interlock.ui.audit import audit_routes

if TYPE_CHECKING:
    from interlock.ui.state import AdminState


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok", "version": __version__})


def readiness(runtime: AdminState) -> tuple[int, dict[str, Any]]:
    """This process's readiness: (HTTP status, body) of its `/ready`."""
    if not runtime.ready:
        return 503, {"status": "starting"}
    recorder = runtime.recorder
    recording: dict[str, Any] | None = None
    if recorder is not None and (holding := recorder.holding).fault is not None:
        # Calls are answered but cannot be recorded: held, spilled, counted (docs/store.md).
        reason = f"recording: {holding.fault}" if not runtime.settings.admin.token else "recording"
        # A store of this replica's own (a SQLite file) that fails is this replica's fault: unready,
        # so a load balancer sends calls to a replica that records them. A shared store (PostgreSQL)
        # fails for every replica at once: unready everywhere would leave a Service no endpoint while
        # each replica still serves and keeps every call (held, then spilled), so it stays ready with
        # the fault in its body, until calls are being lost (docs/fleet.md).
        if runtime.settings.store.url is None or holding.losing:
            return 503, {"status": "not_ready", "reason": reason, "unrecorded": holding.unrecorded}
        recording = {"fault": reason, "unrecorded": holding.unrecorded}
    if warming := runtime.warming():  # e.g. the guardrails engine: the first call would wait for it
        return 503, {"status": "starting", "warming": warming}
    body: dict[str, Any] = {"status": "ready"}
    if recording is not None:
        body["recording"] = recording
    if not runtime.settings.admin.token:  # answered without the token: the status alone
        body["routes"] = sorted(runtime.settings.routes)
    return 200, body


async def ready(request: Request) -> Response:
    runtime: AdminState = request.app.state.runtime
    status, body = readiness(runtime)
    board = runtime.services.get("workers")  # `serve --workers N`: ready only when every worker is
    if board is not None:
        body["workers"] = board.summary()
        if status == 200 and not board.all_ready():
            status, body["status"] = 503, "starting"
    return JSONResponse(body, status_code=status)


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


class EdgeGuard:
    """Who may reach the admin port at all (docs/security.md). A `Host` it does not answer is refused
    (DNS rebinding: without a token only loopback names and addresses, plus `admin.allowed_hosts`);
    so is every request another site's page makes (an `Origin` other than the port's own, or
    `Sec-Fetch-Site: cross-site`/`same-site`), except following a link to a page (a top-level GET:
    the page that linked cannot read the answer). The probes (`OPEN_PATHS`) answer any Host, as
    orchestrators call them by address."""

    def __init__(self, app: ASGIApp, admin: Admin) -> None:
        self.app = app
        self.hosts = HostAllowList(admin.host, admin.allowed_hosts, loopback_only=not admin.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope["path"] not in OPEN_PATHS:
            problem = self.refusal(scope)
            if problem is not None:
                code, message = problem
                await JSONResponse({"error": {"code": code, "message": message}}, 403)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> tuple[str, str] | None:
        host = origin = site = mode = None
        for key, value in scope["headers"]:
            if key == b"host":
                host = value.decode("latin-1")
            elif key == b"origin":
                origin = value.decode("latin-1").strip()
            elif key == b"sec-fetch-site":
                site = value.decode("latin-1").strip().lower()
            elif key == b"sec-fetch-mode":
                mode = value.decode("latin-1").strip().lower()
        if not self.hosts.allows(host):
            return "host_refused", f"host {host!r} is not one the admin port answers; see admin.allowed_hosts"
        navigation = mode == "navigate" and scope.get("method", "GET") in ("GET", "HEAD")
        if origin is not None and origin != "null" and host is not None:
            if origin.partition("://")[2].lower() != host.lower():
                return "origin_refused", f"requests from origin {origin!r} are refused (another site's page)"
        elif origin == "null":
            return "origin_refused", "requests from an opaque origin are refused"
        if site in ("cross-site", "same-site") and not navigation:
            return "origin_refused", "requests made by another site's page are refused"
        return None


def admin_routes() -> list[BaseRoute]:
    """Every route of the admin port. Each feature lists its own routes in its own module."""
    routes: list[BaseRoute] = [Route("/health", health), Route("/ready", ready)]

    routes += stops_api.routes()  # before api_routes: `/api/sessions/{id:path}` would take `.../stop`

    routes += api_routes()

    routes += metrics.routes()

    routes += upstreams_api.routes()

    routes += policies_api.routes()

    routes += audit_routes()

    routes += agents.routes()
    routes += pages.routes()  # the web UI (last: `/` and `/static`)
    return routes


#: Paths read by programs, not people: a store outage is JSON there, a readable page elsewhere.
MACHINE_PATHS = ("/api/", "/metrics")


async def store_unavailable(request: Request, exc: Exception) -> Response:
    """A page or API call whose store cannot be reached now (a database server down): 503, not 500
    (nor a 200 page with the outage inside it)."""
    if request.url.path.startswith(MACHINE_PATHS):
        return JSONResponse({"error": {"code": "store_unavailable", "message": str(exc)}}, status_code=503)
    return await render.outage_page(request, str(exc))


def create_admin_app(runtime: AdminState) -> Any:

    app = Starlette(routes=admin_routes(), exception_handlers={StoreUnavailable: store_unavailable})
    app.state.runtime = runtime
    return EdgeGuard(TokenGuard(app, runtime.settings.admin.token), runtime.settings.admin)
