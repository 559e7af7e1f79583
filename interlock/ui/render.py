"""What every web UI page shares: the Jinja2 environment (autoescaped; its filters and globals), rendering
in a worker thread, the token cookie, and reading the runtime and store a page needs."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jinja2
from markupsafe import Markup, escape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from interlock import __version__
from interlock.prices import cost_text
from interlock.tracing.backend import Store

if TYPE_CHECKING:
    from interlock.ui.state import AdminState

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


def _runtime(request: Request) -> AdminState:
    runtime: AdminState = request.app.state.runtime
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


#: What an outage page says beside the store's own reason (which names the store, credentials masked).
OUTAGE = (
    "interlock cannot read its store now: {reason}. Calls are still proxied; what cannot be written"
    " yet is held and written when the store is back (/ready says how much). Reload to try again."
)


async def outage_page(request: Request, reason: str) -> Response:
    """A page whose store cannot be reached now (a database server down): 503 with a readable page,
    as the JSON API answers 503 `store_unavailable`."""
    return await _page(
        request, "message.html", {"title": "The store is unavailable", "message": OUTAGE.format(reason=reason)}, 503
    )


async def _no_store(request: Request) -> Response:
    return await _page(
        request,
        "message.html",
        {"title": "Recording is off", "message": "store.enabled is false: there is nothing to show."},
        503,
    )


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
