"""The store reads behind the UI pages. Plain functions of a `Store`, run in worker threads."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from interlock.protocols import recorded_adapter
from interlock.protocols.base import decoded_body
from interlock.tracing.backend import Store


@dataclass(slots=True)
class SessionFilters:
    agent: str | None = None
    route: str | None = None
    outcome: str | None = None  # an outcome, or "problems" (anything but ok)
    since: float | None = None
    q: str | None = None
    limit: int = 50
    offset: int = 0
    order: str = "recent"  # or "cost": the costliest sessions first

    def params(self) -> dict[str, Any]:
        found = {k: getattr(self, k) for k in ("agent", "route", "outcome", "q") if getattr(self, k)}
        return {**found, "order": "cost"} if self.order == "cost" else found

    def page(self, store: Store) -> tuple[list[dict[str, Any]], bool]:
        """This page of sessions (`Store.sessions`; `since` is "active since"), and whether there is a next."""
        rows = store.sessions(
            agent=self.agent,
            route=self.route,
            outcome=self.outcome,
            active_since=self.since,
            q=self.q,
            limit=self.limit + 1,
            offset=self.offset,
            order=self.order,
        )
        return rows[: self.limit], len(rows) > self.limit


def choices(store: Store) -> dict[str, list[str]]:
    """Agents and routes seen, for the filter menus."""
    return store.filter_choices(limit=500)


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
        return "model" if recorded_adapter(self.row["protocol"]).model_api else "tool"

    @property
    def markers(self) -> list[tuple[str, str]]:
        """(kind, label) badges: retry, fallback, denied, blocked, modified, loop, changed MCP tool, redacted."""
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
        for decision in self.decisions:
            detail = decision.get("detail") or {}
            if decision.get("stage") == "loop":  # a loop finding (policies/loops.py)
                label = f"loop: {detail.get('kind')} ×{detail.get('count')} ({decision.get('action')})"
                out.append(("loop", label))
            elif decision.get("stage") == "mcp_pins" and decision.get("action") != "allow":
                tools = [*detail.get("changed", []), *detail.get("new", [])] or [detail.get("tool")]
                out.append(("pins", f"tool changed: {', '.join(str(t) for t in tools)} ({decision.get('action')})"))
        if self.findings:
            actions = sorted({f.get("action", "") for f in self.findings})
            out.append(("redacted", f"{len(self.findings)} PII ({', '.join(actions)})"))
        return out


#: Calls a session's waterfall shows at a time (the page says "calls 1–500 of N" and pages on).
TIMELINE_PAGE = 500


def timeline(store: Store, session: str, limit: int = TIMELINE_PAGE, offset: int = 0) -> list[TimelineCall]:
    """A page of a session's calls, oldest first, with their attempts, decisions and findings."""
    return timeline_calls(store, store.session_calls(session, limit=limit, offset=offset))


def timeline_calls(store: Store, rows: list[dict[str, Any]]) -> list[TimelineCall]:
    """These narrow rows (in start order) with their attempts, decisions, findings and summaries."""
    calls = {row["id"]: TimelineCall(row) for row in rows}
    if not calls:
        return []
    parts = store.call_parts(list(calls), bodies=len(calls) <= SUMMARY_LIMIT)
    start = rows[0]["started_at"]
    for call_id, call in calls.items():
        found = parts.get(call_id, {})
        call.attempts = found.get("attempts", [])
        call.decisions = found.get("decisions", [])
        call.findings = found.get("findings", [])
        call.offset_ms = (call.row["started_at"] - start) * 1000
        for body in found.get("body", []):
            call.summary = _summary(call.row, body)
    return list(calls.values())


#: Sessions with more calls than this get no per-call summary line (it reads every response body).
SUMMARY_LIMIT = 300


def _summary(row: dict[str, Any], body: dict[str, Any]) -> str:
    if row["outcome"] != "ok" and row["error"]:
        return str(row["error"])
    adapter = recorded_adapter(row["protocol"])
    stored = bytes(body["response_body"]) if body["response_body"] is not None else None
    headers = json.loads(body["response_headers"] or "[]")
    data = adapter.stored_view(
        stream=bool(body["response_message"]), body=stored, headers=headers, message=body["response_message"]
    ).message
    if data is None and stored:  # not JSON: shown as text
        return _clip(decoded_body(stored, headers).decode("utf-8", "replace"))
    if not adapter.model_api:
        return _clip(json.dumps(data, ensure_ascii=False) if not isinstance(data, str) else data)
    answer = adapter.conversation(None, data)
    if not answer:
        return ""
    last = answer[-1]
    if last.tool_calls:
        return "calls " + ", ".join(f"{t.name}({_clip(t.arguments, 60)})" for t in last.tool_calls)
    return "“" + _clip(last.text) + "”"


def _clip(text: str, size: int = 110) -> str:
    text = " ".join(text.split())
    return text if len(text) <= size else text[: size - 1] + "…"


__all__ = ["TIMELINE_PAGE", "SessionFilters", "TimelineCall", "choices", "timeline", "timeline_calls"]
