"""The web UI: server-rendered pages on the admin port (Jinja2, autoescaped; no build step).

`/` sessions, `/calls` every call, `/session?id=S` a session's waterfall, `/call/{id}` one call, `/policies` the rules in
force, `/bundle?session=S` a session as a replay bundle, `/live` server-sent events (`live.py`).
Every store read runs in a worker thread. Every route is GET: nothing here can change a policy file.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jinja2
from markupsafe import Markup, escape
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from interlock import __version__
from interlock.proxy.protocols import ADAPTERS
from interlock.proxy.protocols.conversation import ChatMessage
from interlock.tracing.backend import Store, StoreError
from interlock.tracing.call import OUTCOMES
from interlock.tracing.commands import cost_text
from interlock.tracing.views import call_detail
from interlock.ui import queries
from interlock.ui.policies_api import policies_snapshot, session_caps

if TYPE_CHECKING:
    from interlock.runtime import Runtime

HERE = Path(__file__).parent
#: Autoescaping on for every template: recorded bodies are untrusted input.
templates = Jinja2Templates(
    env=jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True)
)

#: What the guardrails leave in stored text: redacted `<EMAIL_ADDRESS_1>`, blocked or logged
#: `<US_SSN>`, hashed `<EMAIL_ADDRESS#3fa2b1c4d5e6>` (docs/guardrails.md).
PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*(?:#[0-9a-f]+)?>")
#: Masked values: `****@****-****.**`, `**** **** **** 6467`.
MASKED = re.compile(r"\*{2,}(?:[@.\- ]+\*+)*(?:[ -]?\d{4})?")
#: How many stream chunks a call page lists (the rest are counted).
MAX_CHUNKS = 400
TIME_WINDOWS = {"15m": 900, "1h": 3600, "24h": 86400, "7d": 604800}
COOKIE = "interlock_token"


# -- template helpers ------------------------------------------------------------------------------


def _duration(ms: float | None) -> str:
    if ms is None:
        return "–"
    if ms < 1:
        return f"{ms * 1000:.0f} µs"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 60000:.1f} min"


def _timestamp(epoch: float | None) -> str:
    if epoch is None:
        return "–"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _ago(epoch: float | None) -> str:
    if epoch is None:
        return ""
    seconds = max(0.0, time.time() - epoch)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def highlight(text: str, masked: tuple[str, ...] = ()) -> Markup:
    """`text` escaped, with guardrail placeholders marked, and masked values too when `masked`
    names the entities that were masked in it (a run of `*` alone is ordinary text otherwise)."""
    marks: list[tuple[int, int, str]] = [(m.start(), m.end(), m.group(0)[1:-1]) for m in PLACEHOLDER.finditer(text)]
    if masked:
        label = "masked " + ", ".join(masked)
        for m in MASKED.finditer(text):
            if not any(s < m.end() and m.start() < e for s, e, _ in marks):
                marks.append((m.start(), m.end(), label))
    marks.sort()
    out: list[str] = []
    at = 0
    for start, end, label in marks:
        if start < at:
            continue
        out.append(str(escape(text[at:start])))
        out.append(f'<mark class="pii" title="{escape(label)}">{escape(text[start:end])}</mark>')
        at = end
    out.append(str(escape(text[at:])))
    return Markup("".join(out))


#: Characters of one body a page shows (the bundle download has everything).
MAX_BODY_CHARS = 200_000


def _pretty(content: Any) -> str:
    if content is None:
        return ""
    text = content if isinstance(content, str) else json.dumps(content, indent=2, ensure_ascii=False)
    if len(text) > MAX_BODY_CHARS:
        more = len(text) - MAX_BODY_CHARS
        text = text[:MAX_BODY_CHARS] + f"\n… {more} more characters (download the session's bundle for all of it)"
    return text


def _pretty_json_text(text: str) -> str:
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (ValueError, TypeError):
        return text


templates.env.filters.update(duration=_duration, timestamp=_timestamp, ago=_ago, pretty=_pretty)
templates.env.filters["pretty_json_text"] = _pretty_json_text
templates.env.filters["usd"] = cost_text
templates.env.globals.update(highlight=highlight, version=__version__)


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _stopped(request: Request, kind: str, name: str) -> dict[str, Any] | None:
    """The kill switch's stop of this session or agent, if any."""
    stops = getattr(_runtime(request), "stops", None)
    return None if stops is None else stops.stopped.get((kind, name))


def _store(request: Request) -> Store | None:
    return getattr(_runtime(request), "store", None)


async def _page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    """Render in a worker thread: a call page pretty-prints and highlights whole bodies, and the
    admin port shares its event loop with the proxy."""
    template = templates.get_template(name)
    html = await run_in_threadpool(template.render, {**context, "request": request})
    return HTMLResponse(html, status_code=status)


def _token_cookie(request: Request) -> Response | None:
    """A browser that came with `?token=` (already checked by the TokenGuard) gets an HttpOnly
    cookie and the same URL without the token, so the token leaves the address bar and history."""
    if "token" not in request.query_params or not _runtime(request).settings.admin.token:
        return None
    query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
    response = RedirectResponse(request.url.path + (f"?{query}" if query else ""), status_code=303)
    response.set_cookie(COOKIE, request.query_params["token"], httponly=True, samesite="strict", path="/")
    return response


def _offset(request: Request) -> int:
    """The page's `offset=` (0 when absent, negative or not a number)."""
    try:
        return max(0, int(request.query_params.get("offset") or 0))
    except ValueError:
        return 0


async def _open_store(request: Request) -> Store | Response:
    """The store a page reads, or the response instead: the token cookie's redirect, or "recording
    is off"."""
    if (redirect := _token_cookie(request)) is not None:
        return redirect
    store = _store(request)
    return store if store is not None else await _no_store(request)


async def _no_store(request: Request) -> Response:
    return await _page(
        request,
        "message.html",
        {"title": "Recording is off", "message": "store.enabled is false: there is nothing to show."},
        503,
    )


# -- pages -----------------------------------------------------------------------------------------


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

    try:
        rows, more, menus, stats = await run_in_threadpool(read, store)
    except StoreError as exc:
        rows, more, menus, stats, error = [], False, {"agents": [], "routes": []}, {}, str(exc)
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
    return await _page(request, name, context)


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

    try:
        rows, menus = await run_in_threadpool(read, store)
    except StoreError as exc:
        rows, menus, error = [], {"agents": [], "routes": []}, str(exc)
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
    return await _page(request, "calls_rows.html" if fragment else "calls.html", context)


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


def _ticks(total_ms: float) -> list[tuple[float, str]]:
    """About five round ticks for a time axis of `total_ms`."""
    step = 1.0
    for candidate in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000, 300000, 600000):
        step = float(candidate)
        if total_ms / candidate <= 6:
            break
    ticks = []
    t = 0.0
    while t <= total_ms:
        ticks.append((t / total_ms * 100, _duration(t) if t else "0"))
        t += step
    return ticks


def _safe_name(session: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", session)[:80] or "session"


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
    detail = call_detail(store, call_id)
    if detail is None:
        return None
    request_body = detail["request_body"]
    response_body = detail["response_body"]
    request_json = request_body["content"] if request_body and request_body["encoding"] == "json" else None
    response_json = response_body["content"] if response_body and response_body["encoding"] == "json" else None
    adapter = ADAPTERS.get(detail["protocol"], ADAPTERS["http"])  # a recording from a newer interlock
    if detail["stream"] and (detail["chunks"] or detail.get("response_message") is not None):
        # (A stream the proxy relayed as one body, Gemini's JSON array, is read from that body.)
        response_json = detail.get("response_message")
        if response_json is None and detail["chunks"]:
            joined = "".join(c["text"] for c in detail["chunks"])
            response_json = adapter.reassemble_stream(joined.encode())
    messages = adapter.conversation(request_json, response_json)
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


async def policies_page(request: Request) -> Response:
    if (redirect := _token_cookie(request)) is not None:
        return redirect
    runtime = _runtime(request)
    snapshot = await policies_snapshot(runtime)
    # What each effect says (`deny: {models: [...]}`), from the rule models the engine loaded.
    details: dict[str, dict[str, Any]] = {}
    policy = getattr(runtime, "policy", None)
    for rule in policy.engine.rules if policy is not None else []:
        model = rule.rule
        details[rule.name] = {}
        for effect in model.effects:
            value: Any = getattr(model, effect, None)
            if hasattr(value, "model_dump"):
                value = value.model_dump(exclude_none=True, exclude_defaults=True)
            details[rule.name][effect] = value
    snapshot["has_counters"] = any(snapshot.get("counters", {}).values())
    return await _page(request, "policies.html", {"policy": snapshot, "details": details})


async def upstreams_page(request: Request) -> Response:
    """Both kinds of circuit breaker per route and upstream (issue 21), as `/api/upstreams` gives them."""
    if (redirect := _token_cookie(request)) is not None:
        return redirect
    forwarder = getattr(_runtime(request), "forwarder", None)
    snapshot = forwarder.snapshot() if forwarder is not None else {"routes": {}}
    return await _page(request, "upstreams.html", {"routes": snapshot["routes"]})


async def pins_page(request: Request) -> Response:
    """The pinned MCP tool contracts (docs/mcp.md), with the diff of each changed or new tool."""
    if (redirect := _token_cookie(request)) is not None:
        return redirect
    store = _store(request)
    if store is None:
        return await _no_store(request)
    from interlock.tracing.pins import pin_diff

    rows = await run_in_threadpool(store.mcp_pins)
    for row in rows:
        row["state"] = (
            "new" if row["pinned_hash"] is None else "changed" if row["pinned_hash"] != row["seen_hash"] else "pinned"
        )
        row["diff"] = pin_diff(row) if row["state"] != "pinned" else ""
    return await _page(request, "pins.html", {"pins": rows})


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
    from interlock.ui.live import live
    from interlock.ui.workflow_pages import workflow_page, workflows_page

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


__all__ = ["highlight", "routes"]
