"""The web UI: server-rendered pages on the admin port (Jinja2, autoescaped; no build step).

`/` sessions, `/calls` every call, `/session?id=S` a session's waterfall, `/call/{id}` one call, `/bundle?session=S`
a session as a replay bundle; `routes()` adds the other page groups: `/policies`, `/upstreams`, `/pins` (what is in
force: `config_pages.py`), `/workflows` (`workflow_pages.py`), `/live` server-sent events (`live.py`). What every
page shares (templates, rendering, the token cookie) is in `render.py`.
Every store read runs in a worker thread. Every route is GET: nothing here can change a policy file.
"""

from __future__ import annotations

import functools
import os
import shlex
import tempfile
import time
from typing import Any
from urllib.parse import urlencode

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from interlock.core.call import OUTCOMES
from interlock.protocols import recorded_adapter
from interlock.protocols.conversation import ChatMessage
from interlock.tracing.backend import Store, StoreError, StoreUnavailable
from interlock.tracing.views import detail_of, stored_answer
from interlock.ui import queries
from interlock.ui.config_pages import pins_page, policies_page, upstreams_page
from interlock.ui.live import live
from interlock.ui.policies_api import session_caps
from interlock.ui.render import (
    HERE,
    MAX_CHUNKS,
    TIME_WINDOWS,
    _no_store,
    _offset,
    _open_store,
    _page,
    _runtime,
    _safe_name,
    _stopped,
    _store,
    _ticks,
    highlight,
)
from interlock.ui.workflow_pages import workflow_page, workflows_page


async def sessions_page(request: Request) -> Response:
    store = await _open_store(request)
    if isinstance(store, Response):
        return store
    params = request.query_params
    filters = queries.SessionFilters(
        agent=params.get("agent") or None,
        route=params.get("route") or None,
        outcome=params.get("outcome") if params.get("outcome") in (*OUTCOMES, "problems") else None,
        q=(params.get("q") or "").strip() or None,
        order="cost" if params.get("order") == "cost" else "recent",
    )
    window = params.get("time") or ""
    if window in TIME_WINDOWS:
        filters.since = time.time() - TIME_WINDOWS[window]
    filters.offset = _offset(request)
    error = None

    fragment = bool(params.get("fragment"))  # a live refresh of the rows: no menus, no totals

    def read(store: Store) -> tuple[list[dict[str, Any]], bool, dict[str, list[str]], dict[str, Any]]:
        rows, more = filters.page(store)
        if fragment:
            return rows, more, {"agents": [], "routes": []}, {}
        return rows, more, queries.choices(store), {"calls": store.count_calls()}

    status = 200
    try:
        rows, more, menus, stats = await run_in_threadpool(read, store)
    except StoreError as exc:
        rows, more, menus, stats, error = [], False, {"agents": [], "routes": []}, {}, str(exc)
        status = _error_status(exc)
    base = {**filters.params(), **({"time": window} if window in TIME_WINDOWS else {})}
    # The Cost header toggles: costliest first, or back to the most recently active.
    cost_sort = {
        **{k: v for k, v in base.items() if k != "order"},
        **({} if filters.order == "cost" else {"order": "cost"}),
    }
    context = {
        "rows": rows,
        "filters": filters,
        "window": window,
        "menus": menus,
        "stats": stats,
        "error": error,
        "outcomes": OUTCOMES,
        "windows": TIME_WINDOWS,
        "cost_sort_url": "/?" + urlencode(cost_sort),
        "next_url": "/?" + urlencode({**base, "offset": filters.offset + filters.limit}) if more else None,
        "prev_url": "/?" + urlencode({**base, "offset": max(0, filters.offset - filters.limit)})
        if filters.offset
        else None,
    }
    name = "sessions_rows.html" if fragment else "sessions.html"
    return await _page(request, name, context, status)


async def calls_page(request: Request) -> Response:
    """Every call, newest first (calls without a session are only here); page with `before=<id>`."""
    store = await _open_store(request)
    if isinstance(store, Response):
        return store
    params = request.query_params
    filters: dict[str, Any] = {
        "agent": params.get("agent") or None,
        "route": params.get("route") or None,
        "outcome": params.get("outcome") if params.get("outcome") in OUTCOMES else None,
        "q": (params.get("q") or "").strip() or None,
        "session": params.get("session") or None,
    }
    before = params.get("before") or None
    limit = 100
    error = None

    fragment = bool(params.get("fragment"))  # a live refresh of the rows: no menus

    def read(store: Store) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
        menus = {"agents": [], "routes": []} if fragment else queries.choices(store)
        return store.list_calls(limit=limit + 1, before=before, **filters), menus

    status = 200
    try:
        rows, menus = await run_in_threadpool(read, store)
    except StoreError as exc:
        rows, menus, error = [], {"agents": [], "routes": []}, str(exc)
        status = _error_status(exc)
    base = {k: v for k, v in filters.items() if v}
    context = {
        "rows": rows[:limit],
        "filters": filters,
        "menus": menus,
        "outcomes": OUTCOMES,
        "error": error,
        "before": before,
        "next_url": "/calls?" + urlencode({**base, "before": rows[limit - 1]["id"]}) if len(rows) > limit else None,
        "first_url": "/calls?" + urlencode(base) if before else None,
    }
    return await _page(request, "calls_rows.html" if fragment else "calls.html", context, status)


def _error_status(exc: StoreError) -> int:
    """A list page that could not read its rows shows why inside the page (its filters stay usable),
    answered 503 when the store is out of reach (as the JSON API), else 200 (a search the store
    refused: the page says what was wrong with it)."""
    return 503 if isinstance(exc, StoreUnavailable) else 200


async def session_page(request: Request) -> Response:
    store = await _open_store(request)
    if isinstance(store, Response):
        return store
    session = request.query_params.get("id", "")
    offset = _offset(request)

    def read(store: Store) -> tuple[dict[str, Any] | None, list[queries.TimelineCall]]:
        return store.session_summary(session), queries.timeline(store, session, offset=offset)

    found, calls = await run_in_threadpool(read, store)
    if found is None:
        return await _page(
            request, "message.html", {"title": "No such session", "message": f"no session {session!r}"}, 404
        )
    if not calls:
        message = f"session {session!r} has {found['calls']} calls; there are none from offset {offset}"
        return await _page(request, "message.html", {"title": "No such page", "message": message}, 404)
    total = max(1.0, max(c.offset_ms + (c.row["duration_ms"] or 0) for c in calls))
    # The facts are the whole session's; the waterfall shows one page of it (TIMELINE_PAGE calls).
    summary = {
        "agents": found["agents"],
        "started_at": found["first_at"],
        "duration_ms": max(1.0, found["elapsed_ms"]),
        "calls": found["calls"],
        "tokens": found["tokens"],
        "cost_usd": found.get("cost_usd"),
        "unpriced": found.get("unpriced") or 0,
        "errors": found["errors"],
        "denials": found["denials"],
        "findings": found["findings"],
        "retries": found["extra_attempts"],
    }
    page = queries.TIMELINE_PAGE
    shown = {
        "first": offset + 1,
        "last": offset + len(calls),
        "of": found["calls"],
        "earlier_url": "/session?" + urlencode({"id": session, "offset": max(0, offset - page)}) if offset else None,
        "later_url": "/session?" + urlencode({"id": session, "offset": offset + page})
        if offset + len(calls) < found["calls"]
        else None,
    }
    bundle = f"{_safe_name(session)}.db"
    context = {
        **await session_caps(_runtime(request), session, found),
        "session": session,
        "stop": _stopped(request, "session", session),
        "calls": calls,
        "total_ms": total,
        "ticks": _ticks(total),
        "summary": summary,
        "shown": shown,
        "bundle_name": bundle,
        "replay_command": f"interlock export --session {shlex.quote(session)} -o {bundle} && interlock replay serve {bundle}",
    }
    name = "timeline.html" if request.query_params.get("fragment") else "session.html"
    return await _page(request, name, context)


async def call_page(request: Request) -> Response:
    store = await _open_store(request)
    if isinstance(store, Response):
        return store
    call_id = request.path_params["call_id"]
    detail = await run_in_threadpool(_call_context, store, call_id)
    if detail is None:
        return await _page(request, "message.html", {"title": "No such call", "message": f"no call {call_id!r}"}, 404)
    return await _page(request, "call.html", detail)


def _call_context(store: Store, call_id: str) -> dict[str, Any] | None:
    """Everything the call page shows (runs in a worker thread)."""
    found = store.get_detail(call_id)
    if found is None:
        return None
    record, row = found
    answer = stored_answer(record, row)  # one read of the answer, for the raw view and the conversation
    detail = detail_of(record, row, answer)
    request_body = detail["request_body"]
    request_json = request_body["content"] if request_body and request_body["encoding"] == "json" else None
    adapter = recorded_adapter(detail["protocol"])
    messages = adapter.conversation(request_json, answer.message)
    rendered = [_message_view(m, detail["findings"]) for m in messages]
    chunks = detail["agent_chunks"] if detail["agent_chunks"] is not None else detail["chunks"]
    around = store.neighbours(call_id, detail["session"] or None)
    return {
        "call": detail,
        "messages": rendered,
        "kind": "model" if adapter.model_api else "tool",
        "chunks": (chunks or [])[:MAX_CHUNKS],
        "chunks_more": max(0, len(chunks or []) - MAX_CHUNKS),
        "chunk_count": len(chunks or []),
        "prev_call": around["prev"],
        "next_call": around["next"],
        "position": (around["position"], around["total"]) if around["total"] else None,
        "upstream_differs": detail["upstream_body"] is not None,
    }


def _message_view(message: ChatMessage, findings: list[dict[str, Any]]) -> dict[str, Any]:
    masked: list[str] = []
    for finding in findings:
        where = str(finding.get("where", ""))
        if where == message.where or where.startswith(message.where + ".") or where.startswith(message.where + "["):
            if finding.get("action") == "mask" and finding["entity"] not in masked:
                masked.append(str(finding["entity"]))
    return {
        "role": message.role,
        "text": message.text,
        "html": highlight(message.text, tuple(masked)),
        "tool_calls": message.tool_calls,
        "tool_call_id": message.tool_call_id,
        "name": message.name,
        "response": message.response,
    }


async def bundle(request: Request) -> Response:
    """The session's (or with `workflow=`, the workflow's) calls as a replay bundle (`Store.export`),
    downloaded as `<name>.db`."""
    store = _store(request)
    if store is None:
        return await _no_store(request)
    workflow = request.query_params.get("workflow")
    session = None if workflow is not None else request.query_params.get("session", "")
    what, name = ("workflow", workflow) if workflow is not None else ("session", session or "")
    fd, path = tempfile.mkstemp(prefix="interlock-bundle-", suffix=".db")
    os.close(fd)
    count = await run_in_threadpool(functools.partial(store.export, path, session=session, workflow=workflow))
    if not count:
        os.unlink(path)
        return await _page(request, "message.html", {"title": f"No such {what}", "message": f"no {what} {name!r}"}, 404)
    return FileResponse(
        path,
        media_type="application/vnd.sqlite3",
        filename=f"{_safe_name(name)}.db",
        background=BackgroundTask(os.unlink, path),
    )


def routes() -> list[BaseRoute]:
    return [
        Route("/", sessions_page, methods=["GET"]),
        Route("/calls", calls_page, methods=["GET"]),
        Route("/session", session_page, methods=["GET"]),
        Route("/workflows", workflows_page, methods=["GET"]),
        Route("/workflow", workflow_page, methods=["GET"]),
        Route("/call/{call_id}", call_page, methods=["GET"]),
        Route("/policies", policies_page, methods=["GET"]),
        Route("/pins", pins_page, methods=["GET"]),
        Route("/upstreams", upstreams_page, methods=["GET"]),
        Route("/bundle", bundle, methods=["GET"]),
        Route("/live", live, methods=["GET"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]


__all__ = ["routes"]
