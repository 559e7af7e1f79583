"""The store reads behind the UI pages. Plain functions of a `Store`, run in worker threads."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from interlock.proxy.protocols.base import decoded_body
from interlock.proxy.protocols.conversation import conversation
from interlock.tracing.rows import BOOL_COLUMNS, LIST_COLUMNS
from interlock.tracing.store import Store, StoreError, fts_query

#: Outcomes that count as errors (denials and blocks are counted apart: interlock meant them).
ERROR_OUTCOMES = ("upstream_error", "aborted", "bad_request")


@dataclass(slots=True)
class SessionFilters:
    agent: str | None = None
    route: str | None = None
    outcome: str | None = None  # an outcome, or "problems" (anything but ok)
    since: float | None = None
    q: str | None = None
    limit: int = 50
    offset: int = 0

    def params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("agent", "route", "outcome", "q") if getattr(self, k)}


#: Which sessions are on the page: only what ordering and filtering need (measured on 50,000 calls
#: in 5,000 sessions: aggregating everything for every session first took ~200 ms a page).
_PAGE_SQL = """
SELECT c.session FROM calls c
WHERE c.session IS NOT NULL {where}
GROUP BY c.session
{having}
ORDER BY max(c.started_at) DESC
LIMIT ? OFFSET ?
"""

#: Then everything the list shows, for those sessions only.
_SUMMARY_SQL = """
SELECT c.session AS session,
       min(c.started_at) AS first_at,
       max(c.started_at + coalesce(c.duration_ms, 0) / 1000.0) AS end_at,
       count(*) AS calls,
       group_concat(DISTINCT c.agent) AS agents,
       group_concat(DISTINCT c.route) AS routes,
       sum(coalesce(c.input_tokens, 0) + coalesce(c.output_tokens, 0)) AS tokens,
       sum(c.outcome IN ('upstream_error', 'aborted', 'bad_request')) AS errors,
       sum(c.outcome IN ('denied', 'blocked')) AS denials,
       sum(c.attempt_count > 1) AS retries,
       sum((SELECT count(*) FROM events e WHERE e.call_id = c.id AND e.kind = 'finding')) AS findings
FROM calls c
WHERE c.session IN ({marks})
GROUP BY c.session
"""


def sessions(store: Store, filters: SessionFilters) -> tuple[list[dict[str, Any]], bool]:
    """One page of sessions, most recently active first, and whether there is a next page."""
    where: list[str] = []
    having: list[str] = []
    params: list[Any] = []
    if filters.q:
        where.append(
            "AND c.session IN (SELECT session FROM calls WHERE seq IN"
            " (SELECT rowid FROM calls_fts WHERE calls_fts MATCH ?))"
        )
        params.append(fts_query(filters.q))
    for column in ("agent", "route"):
        value = getattr(filters, column)
        if value:
            having.append(f"sum(c.{column} = ?) > 0")
            params.append(value)
    if filters.outcome == "problems":
        having.append("sum(c.outcome != 'ok') > 0")
    elif filters.outcome:
        having.append("sum(c.outcome = ?) > 0")
        params.append(filters.outcome)
    if filters.since is not None:
        having.append("max(c.started_at) >= ?")
        params.append(filters.since)
    sql = _PAGE_SQL.format(where=" ".join(where), having=("HAVING " + " AND ".join(having)) if having else "")
    try:
        page = [r[0] for r in store.conn.execute(sql, [*params, filters.limit + 1, filters.offset])]
    except sqlite3.OperationalError as exc:
        if filters.q and "locked" not in str(exc):
            raise StoreError(f"bad search query {filters.q!r}: {exc}") from None
        raise
    more = len(page) > filters.limit
    page = page[: filters.limit]
    if not page:
        return [], False
    found = {
        row["session"]: row for row in _query(store, _SUMMARY_SQL.format(marks=", ".join("?" * len(page))), list(page))
    }
    rows = [found[session] for session in page if session in found]
    for row in rows:
        row["agents"] = sorted(row["agents"].split(",")) if row["agents"] else []
        row["routes"] = sorted(row["routes"].split(",")) if row["routes"] else []
        row["duration_ms"] = max(0.0, (row["end_at"] - row["first_at"]) * 1000)
    return rows, more


def choices(store: Store) -> dict[str, list[str]]:
    """Agents and routes seen, for the filter menus."""
    conn = store.conn
    return {
        "agents": [r[0] for r in conn.execute("SELECT DISTINCT agent FROM calls ORDER BY agent LIMIT 500")],
        "routes": [r[0] for r in conn.execute("SELECT DISTINCT route FROM calls ORDER BY route LIMIT 500")],
    }


@dataclass(slots=True)
class TimelineCall:
    row: dict[str, Any]
    attempts: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    offset_ms: float = 0.0
    #: One line saying what came back: the answer's first words, the tools called, the error.
    summary: str = ""

    @property
    def kind(self) -> str:
        return "model" if self.row["protocol"] in ("openai", "anthropic") else "tool"

    @property
    def markers(self) -> list[tuple[str, str]]:
        """(kind, label) badges: retry, fallback, denied, blocked, modified, redacted."""
        out: list[tuple[str, str]] = []
        if len(self.attempts) > 1:
            failures = [str(a.get("status") or a.get("error") or "failure") for a in self.attempts[:-1]]
            out.append(("retry", f"retried after {', '.join(failures)}"))
        upstreams = {(a.get("upstream"), a.get("model")) for a in self.attempts}
        if len(upstreams) > 1:
            out.append(("fallback", "fallback"))
        if self.row["outcome"] in ("denied", "blocked"):
            out.append(("denied", self.row["outcome"]))
        modified = [d for d in self.decisions if d.get("action") == "modify" and d.get("stage") == "policy"]
        if modified:
            rules = sorted({str(d.get("rule")) for d in modified if d.get("rule")})
            out.append(("modified", "changed by " + (", ".join(rules) or "policy")))
        if self.findings:
            actions = sorted({f.get("action", "") for f in self.findings})
            out.append(("redacted", f"{len(self.findings)} PII ({', '.join(actions)})"))
        return out


def timeline(store: Store, session: str, limit: int = 500) -> list[TimelineCall]:
    """A session's calls, oldest first, with their attempts, decisions and findings."""
    rows = _query(
        store,
        f"SELECT {', '.join(LIST_COLUMNS)} FROM calls WHERE session = ? ORDER BY started_at, seq LIMIT ?",
        [session, limit],
    )
    for row in rows:
        for key in BOOL_COLUMNS:
            row[key] = bool(row[key])
    calls = {row["id"]: TimelineCall(row) for row in rows}
    if not calls:
        return []
    marks = ", ".join("?" * len(calls))
    ids = list(calls)
    for attempt in _query(
        store,
        "SELECT call_id, upstream, url, model, started_ms, duration_ms, ttfb_ms, status, error, backoff_ms"
        f" FROM attempts WHERE call_id IN ({marks}) ORDER BY call_id, seq",
        ids,
    ):
        calls[attempt.pop("call_id")].attempts.append(attempt)
    for event in _query(
        store, f"SELECT call_id, kind, data FROM events WHERE call_id IN ({marks}) ORDER BY call_id, seq", ids
    ):
        target = calls[event["call_id"]]
        data = json.loads(event["data"])
        (target.decisions if event["kind"] == "decision" else target.findings).append(data)
    start = rows[0]["started_at"]
    for call in calls.values():
        call.offset_ms = (call.row["started_at"] - start) * 1000
    if len(calls) <= SUMMARY_LIMIT:
        for body in _query(
            store,
            f"SELECT call_id, response_headers, response_body, response_message FROM bodies WHERE call_id IN ({marks})",
            ids,
        ):
            calls[body["call_id"]].summary = _summary(calls[body["call_id"]].row, body)
    return list(calls.values())


#: Sessions with more calls than this get no per-call summary line (it reads every response body).
SUMMARY_LIMIT = 300


def _summary(row: dict[str, Any], body: dict[str, Any]) -> str:
    if row["outcome"] != "ok" and row["error"]:
        return str(row["error"])
    data: Any = None
    if body["response_message"]:
        data = json.loads(body["response_message"])
    elif body["response_body"]:
        raw = decoded_body(bytes(body["response_body"]), json.loads(body["response_headers"] or "[]"))
        try:
            data = json.loads(raw)
        except ValueError:
            return _clip(raw.decode("utf-8", "replace"))
    if row["protocol"] not in ("openai", "anthropic"):
        return _clip(json.dumps(data, ensure_ascii=False) if not isinstance(data, str) else data)
    answer = conversation(row["protocol"], None, data)
    if not answer:
        return ""
    last = answer[-1]
    if last.tool_calls:
        return "calls " + ", ".join(f"{t.name}({_clip(t.arguments, 60)})" for t in last.tool_calls)
    return "“" + _clip(last.text) + "”"


def _clip(text: str, size: int = 110) -> str:
    text = " ".join(text.split())
    return text if len(text) <= size else text[: size - 1] + "…"


def _query(store: Store, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cursor = store.conn.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


__all__ = ["ERROR_OUTCOMES", "SessionFilters", "TimelineCall", "choices", "sessions", "timeline"]
