"""The kill switch over JSON (issue 22; `admin.token` applies as to every admin request):

- `GET /api/stops`: every stopped session and agent (`{"stops": [{kind, name, reason, stopped_at}]}`).
- `POST /api/sessions/{id}/stop` with an optional JSON body `{"reason": "..."}`: the session's new
  calls are refused with `session_stopped`, its calls in flight ended; `POST .../resume` lifts it.
- `POST /api/agents/{name}/stop` and `.../resume`: the same for every call of an agent (`agent_stopped`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from interlock.ui.state import AdminState

#: Longest stop reason kept (it is shown to agents and people, and stored).
MAX_REASON = 500
DEFAULT_REASON = "stopped by an operator"


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def list_stops(request: Request) -> Response:
    runtime: AdminState = request.app.state.runtime
    return JSONResponse({"stops": sorted(runtime.stops.stopped.values(), key=lambda r: r["stopped_at"])})


async def _reason(request: Request) -> str | JSONResponse:
    body = await request.body()
    if len(body) > 4 * MAX_REASON:
        return _error(413, "body_too_large", f"a stop's body is at most {4 * MAX_REASON} bytes")
    if not body.strip():
        return DEFAULT_REASON
    try:
        data = json.loads(body)
    except ValueError:
        return _error(400, "bad_json", 'the body must be JSON: {"reason": "..."}')
    reason = data.get("reason") if isinstance(data, dict) else None
    if reason is None:
        return DEFAULT_REASON
    if not isinstance(reason, str) or not reason.strip():
        return _error(400, "bad_parameter", "reason must be a non-empty string")
    return reason.strip()[:MAX_REASON]


def _endpoint(kind: str, action: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        runtime: AdminState = request.app.state.runtime
        name = request.path_params["name"]
        if action == "resume":
            resumed = await runtime.stops.resume(kind, name)
            return JSONResponse({"kind": kind, "name": name, "resumed": resumed})
        reason = await _reason(request)
        if isinstance(reason, JSONResponse):
            return reason
        return JSONResponse(await runtime.stops.stop(kind, name, reason))

    return endpoint


def routes() -> list[BaseRoute]:
    """Before `/api/sessions/{id:path}`: these paths end in `/stop` or `/resume`."""
    found: list[BaseRoute] = [Route("/api/stops", list_stops, methods=["GET"])]
    for kind in ("session", "agent"):
        for action in ("stop", "resume"):
            path = f"/api/{kind}s/{{name:path}}/{action}"
            found.append(Route(path, _endpoint(kind, action), methods=["POST"]))
    return found


__all__ = ["routes"]
