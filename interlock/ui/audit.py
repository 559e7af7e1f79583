"""`GET /api/audit` and the Audit page (`/audit`): who did what, and whether the chain verifies.

Both answer `tracing.audit.audit` for the filters in the query string: `since`, `until` (epoch
seconds), `agent`, `session`, `workflow`, `entity`, `tool`, `route`, `model`, `decision`; `rows`
(the newest rows behind the summaries, default 200, at most 10,000). The chain's verdict reads every
stored call, so it is reused for `CHAIN_MAX_AGE` seconds (`chain.checked_at` says when it was made):
`chain=fresh` makes a new one, `chain=0` leaves it out. `format=jsonl` or `format=csv` streams every
matching row instead (for a SIEM). Behind the admin token like the rest of `/api/` and the UI. The page takes
the same filters, with `time` (15m, 1h, 24h, 7d) for the window, links both exports, and has a
"verify now" link (`verify=fresh`).
"""

from __future__ import annotations

import time
import weakref
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from interlock.tracing.audit import DEFAULT_ROWS, MAX_ROWS, Filters, audit, audit_rows, chain_status, csv_lines, jsonl
from interlock.tracing.backend import Store
from interlock.ui.api import BadParameter, _error, _number, _with_store
from interlock.ui.render import TIME_WINDOWS, _open_store, _page

_TEXT_FILTERS = ("agent", "session", "workflow", "entity", "tool", "route", "model", "decision")
_EXPORTS = {"jsonl": ("application/x-ndjson", jsonl), "csv": ("text/csv; charset=utf-8", csv_lines)}


def filters_from(request: Request) -> Filters:
    """The filters in a request's query string (a bad number is a BadParameter: 400)."""
    params = request.query_params
    text = {key: params.get(key) or None for key in _TEXT_FILTERS}
    return Filters(since=_number(request, "since"), until=_number(request, "until"), **text)


def rows_from(request: Request) -> int:
    rows = _number(request, "rows", int)
    if rows is None:
        return DEFAULT_ROWS
    if not 0 <= rows <= MAX_ROWS:
        raise BadParameter(f"rows must be between 0 and {MAX_ROWS}")
    return int(rows)


#: Seconds a chain verdict is reused by the API and the page. Verifying reads every stored call
#: (measured ~2,000 calls/s of 2.5 KB on 2 shared, busy cores): recomputed on every page view it
#: would let a store of a million calls keep a worker thread busy for minutes per request.
CHAIN_MAX_AGE = 60.0
_verdicts: weakref.WeakKeyDictionary[Store, dict[str, Any]] = weakref.WeakKeyDictionary()


def chain_verdict(store: Store, fresh: bool) -> dict[str, Any]:
    """The store's chain status, reused while younger than `CHAIN_MAX_AGE` unless `fresh`."""
    known = _verdicts.get(store)
    if fresh or known is None or time.time() - known["checked_at"] > CHAIN_MAX_AGE:
        known = _verdicts[store] = chain_status(store)
    return known


def answer(store: Store, filters: Filters, rows: int, chain: str) -> dict[str, Any]:
    """What the API returns and the page shows (in a worker thread: it reads the store). `chain`:
    "0" leaves the verdict out, "fresh" makes a new one, anything else may reuse the last."""
    verdict = None if chain == "0" else chain_verdict(store, chain == "fresh")
    return {**audit(store, filters, rows=rows), "chain": verdict}


async def audit_api(request: Request) -> Response:
    export = request.query_params.get("format")
    if export is not None and export not in _EXPORTS:
        return _error(400, "bad_parameter", f"format must be one of {', '.join(_EXPORTS)}")
    try:
        filters, rows = filters_from(request), rows_from(request)
    except BadParameter as exc:
        return _error(400, "bad_parameter", str(exc))
    chain = request.query_params.get("chain") or ""
    if export is None:
        return await _with_store(request, lambda store: answer(store, filters, rows, chain))
    media_type, lines = _EXPORTS[export]

    def stream(store: Store) -> Response:
        # A sync iterator: Starlette steps it in worker threads, one page of calls at a time.
        return StreamingResponse(
            lines(audit_rows(store, filters)),
            media_type=media_type,
            headers={"content-disposition": f'attachment; filename="interlock-audit.{export}"'},
        )

    return await _with_store(request, stream)


async def audit_page(request: Request) -> Response:
    store = await _open_store(request)
    if isinstance(store, Response):
        return store
    window = request.query_params.get("time") or ""
    try:
        filters = filters_from(request)
    except BadParameter as exc:
        return await _page(request, "message.html", {"title": "Bad filter", "message": str(exc)}, 400)
    if window in TIME_WINDOWS:
        filters = Filters(**{**filters.as_dict(), "since": time.time() - TIME_WINDOWS[window]})
    fresh = "fresh" if request.query_params.get("verify") == "fresh" else ""
    found = await run_in_threadpool(answer, store, filters, DEFAULT_ROWS, fresh)
    given = [(k, v) for k, v in request.query_params.multi_items() if k in (*_TEXT_FILTERS, "since", "until") and v]
    if window in TIME_WINDOWS:
        given.append(("since", str(int(filters.since or 0))))
    context = {
        "audit": found,
        "filters": dict(request.query_params),
        "filter_names": _TEXT_FILTERS,
        "windows": list(TIME_WINDOWS),
        "window": window,
        "verify_url": "/audit?" + urlencode([*given_page(request), ("verify", "fresh")]),
        "exports": {name: "/api/audit?" + urlencode([*given, ("format", name)]) for name in _EXPORTS},
    }
    return await _page(request, "audit.html", context)


def given_page(request: Request) -> list[tuple[str, str]]:
    """The page's own query (filters and window), without `verify` and the token."""
    return [(k, v) for k, v in request.query_params.multi_items() if k not in ("verify", "token") and v]


def audit_routes() -> list[BaseRoute]:
    return [Route("/api/audit", audit_api, methods=["GET"]), Route("/audit", audit_page, methods=["GET"])]


__all__ = ["answer", "audit_routes", "filters_from", "rows_from"]
