"""The audit trail: who did what, from the recorded calls (issue 23). One function behind the CLI
(`interlock audit`), the admin API (`GET /api/audit`) and the Audit page.

For a window and filters it answers, per agent: how many calls, which data it touched (the PII and
secret entity *types* guardrails found, with what was done about them; never the values), which
tools it called (MCP `tools/call`, and the function tools a model called in its answer), which
models, which rules allowed, modified or denied what, and when; and gives the rows behind that,
one per call. Everything is read through the `Store` interface (`Store.audit_calls`).
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from interlock.protocols import ADAPTERS
from interlock.tracing.backend import Store

#: The rows an answer carries (the newest); the summaries always cover every matching call.
DEFAULT_ROWS = 200
MAX_ROWS = 10_000

#: What a finding's action reads as in a summary ("EMAIL_ADDRESS in 37 (redacted)").
_DONE = {"redact": "redacted", "mask": "masked", "hash": "hashed", "block": "blocked", "log": "logged"}

#: The columns of a CSV export, in order (lists are joined with `;`).
CSV_COLUMNS = (
    "id",
    "at",
    "agent",
    "session",
    "workflow",
    "route",
    "model",
    "outcome",
    "status",
    "entities",
    "tools",
    "denied",
    "decisions",
)


@dataclass(frozen=True, slots=True)
class Filters:
    """What to audit: a window (epoch seconds) and filters; None means any."""

    since: float | None = None
    until: float | None = None
    agent: str | None = None
    session: str | None = None
    workflow: str | None = None
    #: A PII or secret entity type (`EMAIL_ADDRESS`): calls where guardrails found one.
    entity: str | None = None
    #: A tool name: calls that called it (MCP or function) or were denied it.
    tool: str | None = None
    route: str | None = None
    model: str | None = None
    #: A decision action (`allow`, `modify`, `deny`, `monitor`, ...) or a rule's name.
    decision: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _function_tools(raw: dict[str, Any]) -> list[str]:
    """The tools a model called in its (recorded) answer; none for MCP and plain HTTP calls."""
    adapter = ADAPTERS.get(raw["protocol"])
    if adapter is None or not adapter.model_api or (raw["status"] or 0) >= 400:
        return []
    view = adapter.stored_view(
        stream=bool(raw["stream"]),
        body=raw["response_body"],
        headers=raw["response_headers"],
        message=raw["response_message"] or None,
    )
    try:
        return list(dict.fromkeys(t.name for t in view.tool_calls))
    except (TypeError, AttributeError):
        return []  # an answer that is not the protocol's JSON names no tools


def audit_row(raw: dict[str, Any]) -> dict[str, Any]:
    """One call's line of the audit trail, from a `Store.audit_calls` row."""
    mcp = raw["meta"].get("mcp") or {}
    mcp_tool = mcp.get("tool") if mcp.get("method") == "tools/call" else None
    denied: list[str] = []
    decisions = []
    for d in raw["decisions"]:
        tool = (d.get("detail") or {}).get("tool") or mcp_tool
        decisions.append({"stage": d.get("stage"), "action": d.get("action"), "rule": d.get("rule"), "tool": tool})
        if d.get("action") == "deny" and tool:
            denied.append(str(tool))
    called = [{"name": mcp_tool, "kind": "mcp"}] if mcp_tool and mcp_tool not in denied else []
    called += [{"name": n, "kind": "function"} for n in _function_tools(raw) if n not in denied]
    entities: Counter[tuple[str, str]] = Counter((f.get("entity"), f.get("action")) for f in raw["findings"])
    return {
        "id": raw["id"],
        "at": raw["started_at"],
        "agent": raw["agent"],
        "session": raw["session"],
        "workflow": raw.get("workflow"),
        "route": raw["route"],
        "model": raw["model"],
        "outcome": raw["outcome"],
        "status": raw["status"],
        "entities": [{"entity": e, "action": a, "count": n} for (e, a), n in sorted(entities.items())],
        "tools": called,
        "denied": sorted(set(denied)),
        "decisions": decisions,
    }


def matches(row: dict[str, Any], filters: Filters) -> bool:
    """The filters a row's derived fields decide (the store already applied the column filters)."""
    if filters.entity is not None and not any(e["entity"] == filters.entity for e in row["entities"]):
        return False
    if filters.tool is not None and not (
        any(t["name"] == filters.tool for t in row["tools"]) or filters.tool in row["denied"]
    ):
        return False
    if filters.decision is not None and not any(filters.decision in (d["action"], d["rule"]) for d in row["decisions"]):
        return False
    return True


def audit_rows(store: Store, filters: Filters) -> Iterator[dict[str, Any]]:
    """Every matching call's audit row, oldest first (what an export writes)."""
    for raw in store.audit_calls(
        since=filters.since,
        until=filters.until,
        agent=filters.agent,
        session=filters.session,
        workflow=filters.workflow,
        route=filters.route,
        model=filters.model,
    ):
        row = audit_row(raw)
        if matches(row, filters):
            yield row


@dataclass(slots=True)
class AgentSummary:
    """One agent's part of an answer."""

    agent: str
    calls: int = 0
    first_at: float | None = None
    last_at: float | None = None
    sessions: set[str] = field(default_factory=set)
    models: Counter[str] = field(default_factory=Counter)
    #: entity type → calls where it was found; entity type → action → findings.
    entity_calls: Counter[str] = field(default_factory=Counter)
    entity_actions: dict[str, Counter[str]] = field(default_factory=dict)
    tools: Counter[str] = field(default_factory=Counter)
    denied: Counter[str] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)

    def add(self, row: dict[str, Any]) -> None:
        self.calls += 1
        self.first_at = row["at"] if self.first_at is None else min(self.first_at, row["at"])
        self.last_at = row["at"] if self.last_at is None else max(self.last_at, row["at"])
        if row["session"]:
            self.sessions.add(row["session"])
        if row["model"]:
            self.models[row["model"]] += 1
        for entity in {e["entity"] for e in row["entities"]}:
            self.entity_calls[entity] += 1
        for e in row["entities"]:
            self.entity_actions.setdefault(e["entity"], Counter())[e["action"]] += e["count"]
        self.tools.update(t["name"] for t in row["tools"])
        self.denied.update(row["denied"])
        self.decisions.update(d["action"] for d in row["decisions"])
        self.outcomes[row["outcome"]] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "calls": self.calls,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "sessions": len(self.sessions),
            "models": dict(self.models.most_common()),
            "entities": {
                e: {"calls": n, "actions": dict(self.entity_actions[e].most_common())}
                for e, n in self.entity_calls.most_common()
            },
            "tools": dict(self.tools.most_common()),
            "denied": dict(self.denied.most_common()),
            "decisions": dict(self.decisions.most_common()),
            "outcomes": dict(self.outcomes.most_common()),
            "line": self.line(),
        }

    def line(self) -> str:
        """'agent risk-scorer: 1,204 calls, EMAIL_ADDRESS in 37 (redacted), tools: lookup_customer 310, denied: ...'"""
        parts = [f"agent {self.agent}: {self.calls:,} calls"]
        for entity, count in self.entity_calls.most_common():
            done = ", ".join(_DONE.get(a, a) for a in self.entity_actions[entity])
            parts.append(f"{entity} in {count:,} ({done})")
        if self.tools:
            parts.append("tools: " + ", ".join(f"{t} {n:,}" for t, n in self.tools.most_common()))
        if self.denied:
            parts.append("denied: " + ", ".join(f"{t} {n:,}" for t, n in self.denied.most_common()))
        return ", ".join(parts)


def audit(store: Store, filters: Filters, *, rows: int = DEFAULT_ROWS) -> dict[str, Any]:
    """The answer: per-agent summaries over every matching call, the newest `rows` rows behind them
    (newest first), and how many matched. Memory is bounded by `rows` and the distinct names seen."""
    agents: dict[str, AgentSummary] = {}
    newest: deque[dict[str, Any]] = deque(maxlen=max(0, min(rows, MAX_ROWS)))
    total = 0
    for row in audit_rows(store, filters):
        total += 1
        summary = agents.get(row["agent"])
        if summary is None:
            summary = agents[row["agent"]] = AgentSummary(row["agent"])
        summary.add(row)
        newest.append(row)
    return {
        "filters": filters.as_dict(),
        "total": total,
        "agents": [s.as_dict() for s in sorted(agents.values(), key=lambda s: (-s.calls, s.agent))],
        "rows": list(reversed(newest)),
        "rows_truncated": total > len(newest),
    }


def chain_status(store: Store) -> dict[str, Any]:
    """Whether the store's tamper-evident chain verifies (docs/audit.md), for the API and the page."""
    report = store.verify_chain()
    found = report.as_dict()
    return {
        "ok": report.ok,
        "checked": report.checked,
        "unchained": report.unchained,
        "problem_count": report.problem_count,
        "first_problem": found["first_problem"],
        "absent": report.absent,
        "heads": store.chain_heads(),
        "checked_at": time.time(),
    }


def jsonl(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """One JSON object a line (for a SIEM)."""
    for row in rows:
        yield json.dumps(row, ensure_ascii=False) + "\n"


def _cell(key: str, row: dict[str, Any]) -> Any:
    value = row[key]
    if key == "entities":
        return ";".join(f"{e['entity']}:{e['action']}:{e['count']}" for e in value)
    if key == "tools":
        return ";".join(f"{t['kind']}:{t['name']}" for t in value)
    if key == "denied":
        return ";".join(value)
    if key == "decisions":
        return ";".join(f"{d['stage']}:{d['action']}:{d['rule'] or ''}" for d in value)
    return "" if value is None else value


def csv_lines(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """CSV with a header line; list columns joined with `;` (`entities` as entity:action:count)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([_cell(key, row) for key in CSV_COLUMNS])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


__all__ = ["CSV_COLUMNS", "AgentSummary", "Filters", "audit", "audit_row", "audit_rows", "chain_status", "csv_lines"]
