"""The recorded calls over JSON: `/api/calls`, `/api/calls/{id}`, `/api/sessions`, `/api/sessions/{id}`,
`/api/stats`. Every store read runs in a worker thread, never on the event loop.

Paging: `/api/calls` returns newest first, `limit` rows (default 50, at most 1000) and `next`, the
`before=` value for the following page (null on the last page). `/api/sessions` pages with `offset`
and filters like the UI's sessions page: `agent`, `route`, `outcome` (or `problems`), `q` (full-text),
`since`/`until` (the calls summed), `active_since` (the session's last call), and `order`
(`recent`, the default, or `cost`: the costliest first). `/api/workflows`
pages the same way (filters `agent`, `since`, `until`, `active_since`); `/api/workflows/{id}` is one
workflow's lanes, handoffs, incidents and totals (`tracing/workflow.py`, docs/workflows.md).
`/api/agents` lists every agent with what its calls cost. `/api/sessions/{id}` also has `caps`: each run
cap that applies to the session, its limit and use (`caps_unavailable`: why they cannot be read now).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from interlock.core.call import OUTCOMES
from interlock.tracing.backend import Store, StoreError, StoreUnavailable
from interlock.tracing.rows import SESSION_ORDERS
from interlock.tracing.views import call_detail
from interlock.tracing.workflow import workflow_view
from interlock.ui.policies_api import session_caps

if TYPE_CHECKING:
    from interlock.ui.state import AdminState

MAX_LIMIT = 1000


class BadParameter(Exception):
    pass


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _number(request: Request, name: str, kind: Callable[[str], Any] = float) -> Any:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    try:
        return kind(value)
    except ValueError:
        raise BadParameter(f"{name} must be a number, not {value!r}") from None


def _limit(request: Request, default: int = 50) -> int:
    limit = _number(request, "limit", int)
    if limit is None:
        return default
    if limit < 1:
        raise BadParameter("limit must be at least 1")
    return int(min(limit, MAX_LIMIT))


async def _with_store(
    request: Request, read: Callable[[Store], Any], then: Callable[[Any], Awaitable[Any]] | None = None
) -> Response:
    """`read` in a worker thread, its store errors as JSON errors; `then` adds to a result (on the loop)."""
    runtime: AdminState = request.app.state.runtime
    store: Store | None = getattr(runtime, "store", None)
    if store is None:
        return _error(503, "recording_off", "recording is off (store.enabled: false)")
    try:
        result = await run_in_threadpool(read, store)
    except BadParameter as exc:
        return _error(400, "bad_parameter", str(exc))
    except StoreUnavailable as exc:  # a database server down: the reader may retry
        return _error(503, "store_unavailable", str(exc))
    except StoreError as exc:
        return _error(400, "bad_query", str(exc))
    if isinstance(result, Response):
        return result
    return JSONResponse(result if then is None else await then(result))


async def list_calls(request: Request) -> Response:
    params = request.query_params
    try:
        outcome = params.get("outcome") or None
        if outcome is not None and outcome not in OUTCOMES:
            raise BadParameter(f"outcome must be one of {', '.join(OUTCOMES)}")
        filters: dict[str, Any] = {
            key: params.get(key) or None
            for key in ("session", "workflow", "agent", "route", "model", "trace_id", "q", "before")
        }
        filters.update(outcome=outcome, since=_number(request, "since"), until=_number(request, "until"))
        limit = _limit(request)
    except BadParameter as exc:
        return _error(400, "bad_parameter", str(exc))

    def read(store: Store) -> dict[str, Any]:
        rows = store.list_calls(limit=limit + 1, **filters)
        more = len(rows) > limit
        rows = rows[:limit]
        return {"calls": rows, "next": rows[-1]["id"] if more and rows else None}

    return await _with_store(request, read)


async def get_call(request: Request) -> Response:
    call_id = request.path_params["call_id"]

    def read(store: Store) -> Any:
        detail = call_detail(store, call_id)
        if detail is None:
            return _error(404, "not_found", f"no call {call_id!r}")
        return detail

    return await _with_store(request, read)


async def list_sessions(request: Request) -> Response:
    params = request.query_params
    try:
        outcome = params.get("outcome") or None
        if outcome is not None and outcome not in (*OUTCOMES, "problems"):
            raise BadParameter(f"outcome must be one of {', '.join(OUTCOMES)} or problems")
        filters: dict[str, Any] = {key: params.get(key) or None for key in ("agent", "route", "q")}
        filters.update(
            outcome=outcome,
            since=_number(request, "since"),
            until=_number(request, "until"),
            active_since=_number(request, "active_since"),
        )
        limit = _limit(request)
        offset = _number(request, "offset", int) or 0
        if offset < 0:
            raise BadParameter("offset must be 0 or more")
        order = params.get("order") or "recent"
        if order not in SESSION_ORDERS:
            raise BadParameter(f"order must be one of {', '.join(SESSION_ORDERS)}")
    except BadParameter as exc:
        return _error(400, "bad_parameter", str(exc))

    def read(store: Store) -> dict[str, Any]:
        rows = store.sessions(**filters, limit=limit + 1, offset=offset, order=order)
        more = len(rows) > limit
        return {"sessions": rows[:limit], "next_offset": offset + limit if more else None}

    return await _with_store(request, read)


async def get_session(request: Request) -> Response:
    session_id = request.path_params["session_id"]

    def read(store: Store) -> Any:
        session = store.session(session_id)
        if session is None:
            return _error(404, "not_found", f"no session {session_id!r}")
        return session

    async def with_caps(session: dict[str, Any]) -> dict[str, Any]:
        return {**session, **await session_caps(request.app.state.runtime, session_id, session)}

    return await _with_store(request, read, with_caps)


async def list_workflows(request: Request) -> Response:
    try:
        filters: dict[str, Any] = {
            "agent": request.query_params.get("agent") or None,
            "since": _number(request, "since"),
            "until": _number(request, "until"),
            "active_since": _number(request, "active_since"),
        }
        limit = _limit(request)
        offset = _number(request, "offset", int) or 0
        if offset < 0:
            raise BadParameter("offset must be 0 or more")
    except BadParameter as exc:
        return _error(400, "bad_parameter", str(exc))

    def read(store: Store) -> dict[str, Any]:
        rows = store.workflows(**filters, limit=limit + 1, offset=offset)
        more = len(rows) > limit
        return {"workflows": rows[:limit], "next_offset": offset + limit if more else None}

    return await _with_store(request, read)


async def get_workflow(request: Request) -> Response:
    workflow = request.path_params["workflow"]

    def read(store: Store) -> Any:
        view = workflow_view(store, workflow)
        if view is None:
            return _error(404, "not_found", f"no workflow {workflow!r}")
        return view

    return await _with_store(request, read)


async def list_agents(request: Request) -> Response:
    """Every agent seen, with its calls, sessions, problems and what its calls cost."""
    return await _with_store(request, lambda store: {"agents": store.agents()})


async def stats(request: Request) -> Response:
    runtime: AdminState = request.app.state.runtime
    recorder = getattr(runtime, "recorder", None)
    counters = recorder.counters() if recorder is not None else None
    # Requests each port refused before they became a call (serving.ServerRejects): never recorded.
    rejects = {name: dict(r.counts) for name, r in runtime.services.get("server_rejects", {}).items()}

    def read(store: Store) -> dict[str, Any]:
        try:
            about: dict[str, Any] = {"path": store.path, **store.stats()}
            agents = store.agents()
        except StoreUnavailable as exc:
            # The recorder's counters say how the outage goes: they must answer while the store cannot.
            about, agents = {"path": store.path, "unavailable": str(exc)}, []
        return {"store": about, "recorder": counters, "server": {"rejected": rejects}, "agents": agents}

    return await _with_store(request, read)


def api_routes() -> list[BaseRoute]:
    return [
        Route("/api/calls", list_calls),
        Route("/api/calls/{call_id}", get_call),
        Route("/api/sessions", list_sessions),
        Route("/api/sessions/{session_id:path}", get_session),
        Route("/api/workflows", list_workflows),
        Route("/api/workflows/{workflow:path}", get_workflow),
        Route("/api/agents", list_agents),
        Route("/api/stats", stats),
    ]
