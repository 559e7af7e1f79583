"""The agents page (issue 22): every agent with its calls, sessions, problems and what its calls
cost, and the kill switch for each (stop: its calls in flight end, new ones are refused)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from interlock.ui.render import _no_store, _page, _stopped, _store, _token_cookie


async def agents_page(request: Request) -> Response:
    if (redirect := _token_cookie(request)) is not None:
        return redirect
    store = _store(request)
    if store is None:
        return await _no_store(request)
    rows = await run_in_threadpool(store.agents)
    for row in rows:
        row["stop"] = _stopped(request, "agent", row["agent"])
    return await _page(request, "agents.html", {"agents": rows})


def routes() -> list[BaseRoute]:
    return [Route("/agents", agents_page, methods=["GET"])]


__all__ = ["routes"]
