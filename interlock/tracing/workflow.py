"""One workflow in one picture: its agents' lanes, the handoffs between them, its failures and what
followed them, and its totals. What `/api/workflows/{id}` returns and the workflow page draws.

A plain function of a `Store` (run in a worker thread, as every read is). Handoffs are found two
ways (docs/workflows.md):

- **Span parentage.** A call whose W3C parent span is a span of another agent's call hangs from that
  call: either interlock's own span of the call (what it forwards upstream in `traceparent`, so a
  tool server that is itself an agent continues it), or the span the other agent sent its call
  from, when that agent sent exactly one call from it (an agent that sends every call from one span
  says nothing about handoffs, and is not read as handing off to everyone).
- **Text flow.** A run of at least `TEXT_RUN` normalised characters (case-folded, whitespace
  collapsed) of one agent's answer found in a later request of another agent: the answer's text
  went into that agent's input. Each answer is cut into windows of `TEXT_RUN // 2` characters, one
  at each word start, kept in a dictionary; each request is looked up at each of its word starts,
  and a hit is extended both ways to the whole shared run. A shared run of `TEXT_RUN` characters
  always holds an answer word start with `TEXT_RUN // 2` characters of the run after it unless it
  begins inside a word longer than `TEXT_RUN // 2` - 1 characters, so runs of ordinary text are
  never missed; looking up word starts only, not every character, is what keeps it cheap (measured
  below). The work is bounded: the first `TEXT_CALLS` calls, the first `TEXT_ANSWER` characters of
  an answer and the last `TEXT_REQUEST` of a request (where the newest messages are); a workflow
  past those bounds says so in `limits`.

A worst case measured (docs/workflows.md): 2,000 calls, 16 KB requests holding pieces of every
earlier answer: 3.2-3.8 s on a busy 2-core machine, nine tenths of it the text comparison (every
character's window instead of every word's took 8.7 s).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from interlock.core.call import SOUND_OUTCOMES
from interlock.tracing.backend import Store

#: Calls read for one workflow's page (its totals are the whole workflow's, from SQL).
WORKFLOW_CALLS = 2000
#: The shortest shared run of normalised characters that counts as text flowing between agents.
TEXT_RUN = 64
#: Text flow is looked for among the first this many calls of a workflow.
TEXT_CALLS = 400
#: Characters of an answer (from its start) and of a request (from its end) compared.
TEXT_ANSWER = 2048
TEXT_REQUEST = 8192

_ERRORS = frozenset({"upstream_error", "aborted", "bad_request", "internal_error"})
_DENIALS = frozenset({"denied", "blocked"})
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Case-folded, whitespace runs as one space: a text as it is compared for flow."""
    return _SPACE.sub(" ", text).strip().casefold()


@dataclass(slots=True, frozen=True)
class Handoff:
    """Work passing from one agent's call to another agent's call."""

    source: str  # call id
    target: str  # call id
    kind: str  # "span": parentage; "text": the source's answer in the target's request
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"from": self.source, "to": self.target, "kind": self.kind, "detail": self.detail}


def span_handoffs(rows: list[dict[str, Any]]) -> list[Handoff]:
    """Handoffs by W3C parentage (see the module docstring), one per (source call, target agent):
    the target agent's first call under the source's span."""
    by_span = {row["span_id"]: row for row in rows if row.get("span_id")}
    under: dict[str, list[dict[str, Any]]] = {}  # parent span → the calls sent from it, in start order
    for row in rows:
        if row.get("parent_span_id"):
            under.setdefault(row["parent_span_id"], []).append(row)
    own_span: dict[str, dict[str, Any]] = {}  # parent span → the one call its agent sent from it, first
    for span, calls in under.items():
        first = calls[0]
        if sum(1 for c in calls if c["agent"] == first["agent"]) == 1:
            own_span[span] = first
    seen: set[tuple[str, str]] = set()
    found: list[Handoff] = []
    for row in rows:
        parent: str | None = row.get("parent_span_id")
        if not parent:
            continue
        source = by_span.get(parent)
        detail = "a child of its span"
        if source is None or source["agent"] == row["agent"]:
            source = own_span.get(parent)
            detail = "sent from the span its call was sent from"
        if source is None or source["agent"] == row["agent"] or source["started_at"] > row["started_at"]:
            continue
        key = (source["id"], row["agent"])
        if key not in seen:
            seen.add(key)
            found.append(Handoff(source["id"], row["id"], "span", detail))
    return found


def text_handoffs(rows: list[dict[str, Any]], texts: dict[str, tuple[str, str]]) -> list[Handoff]:
    """Handoffs by text flow (see the module docstring), one per (source call, target agent): the
    first later request of each other agent that holds a run of the source's answer."""
    step = TEXT_RUN // 2
    windows: dict[str, list[tuple[str, int]]] = {}  # window → (call id, its position in the answer)
    answers: dict[str, str] = {}
    order = {row["id"]: i for i, row in enumerate(rows)}
    agent_of = {row["id"]: row["agent"] for row in rows}
    found: list[Handoff] = []
    seen: set[tuple[str, str]] = set()
    for row in rows:
        call_id = row["id"]
        request, response = texts.get(call_id, ("", ""))
        # 1. Does this request hold an earlier answer of another agent?
        if windows and request:
            text = normalise(request[-TEXT_REQUEST:])
            for position in _word_starts(text):
                sources = windows.get(text[position : position + step])
                if not sources:
                    continue
                for source, at in sources:
                    key = (source, row["agent"])
                    if key in seen or agent_of[source] == row["agent"]:
                        continue
                    run = _shared_run(answers[source], at, text, position, step)
                    if run >= TEXT_RUN:
                        seen.add(key)
                        found.append(Handoff(source, call_id, "text", f"{run} characters of its answer"))
        # 2. Then its answer becomes a source for later calls.
        answer = normalise(response[:TEXT_ANSWER])
        if len(answer) >= TEXT_RUN:
            answers[call_id] = answer
            for at in _word_starts(answer):
                if at + step > len(answer):
                    break
                windows.setdefault(answer[at : at + step], []).append((call_id, at))
    found.sort(key=lambda h: (order[h.target], order[h.source]))
    return found


def _word_starts(text: str) -> list[int]:
    """Where the words of a normalised text start (after each single space, and at 0)."""
    starts = [0]
    at = text.find(" ")
    while at != -1:
        starts.append(at + 1)
        at = text.find(" ", at + 1)
    return starts


def _shared_run(answer: str, at: int, request: str, position: int, size: int) -> int:
    """The length of the common run around a window found at `answer[at:]` and `request[position:]`."""
    left = 0
    while at - left > 0 and position - left > 0 and answer[at - left - 1] == request[position - left - 1]:
        left += 1
    right = size
    while (
        at + right < len(answer) and position + right < len(request) and answer[at + right] == request[position + right]
    ):
        right += 1
    return left + right


def incidents(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where something failed and what followed: a call interlock retried (more than one attempt),
    and a call that failed, with the next call of the workflow after it: the same agent trying
    again (`retry`) or another agent taking over (`escalation`), or nothing (`none`)."""
    out: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        if (row.get("attempt_count") or 0) > 1 and row["outcome"] in SOUND_OUTCOMES:
            out.append({"call": row["id"], "agent": row["agent"], "kind": "retried", "then": None})
        if row["outcome"] in SOUND_OUTCOMES:
            continue
        after = next((later for later in rows[i + 1 :] if later["started_at"] >= row["started_at"]), None)
        then = None if after is None else after["id"]
        kind = "none" if after is None else ("retry" if after["agent"] == row["agent"] else "escalation")
        out.append({"call": row["id"], "agent": row["agent"], "kind": kind, "then": then, "outcome": row["outcome"]})
    return out


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    first = min(r["started_at"] for r in rows)
    priced = [r for r in rows if r.get("cost_usd") is not None]
    end = max(r["started_at"] + (r["duration_ms"] or 0) / 1000 for r in rows)
    return {
        "calls": len(rows),
        "duration_ms": max(0.0, (end - first) * 1000),
        "input_tokens": sum(r["input_tokens"] or 0 for r in rows),
        "output_tokens": sum(r["output_tokens"] or 0 for r in rows),
        "tokens": sum((r["input_tokens"] or 0) + (r["output_tokens"] or 0) for r in rows),
        "errors": sum(r["outcome"] in _ERRORS for r in rows),
        "denials": sum(r["outcome"] in _DENIALS for r in rows),
        "findings": sum(r["findings"] or 0 for r in rows),
        "retries": sum(max(0, (r["attempt_count"] or 0) - 1) for r in rows),
        # None when no call was priced; `unpriced` counts calls with usage but no price (shown, not hidden).
        "cost_usd": sum(r["cost_usd"] for r in priced) if priced else None,
        "unpriced": sum(r.get("cost_source") == "unpriced" for r in rows),
        "models": sorted({r["model"] for r in rows if r["model"]}),
        "tools": sorted({r["mcp_tool"] for r in rows if r.get("mcp_tool")}),
    }


def workflow_view(store: Store, workflow: str, *, limit: int = WORKFLOW_CALLS) -> dict[str, Any] | None:
    """The workflow's summary, lanes (one per agent, in order of first appearance, each with its
    calls and totals), handoffs and incidents; None if no call belongs to it."""
    summary = store.workflow_summary(workflow)
    if summary is None:
        return None
    rows = store.workflow_calls(workflow, limit=limit)
    if not rows:
        return None
    start = rows[0]["started_at"]
    lanes: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        row["offset_ms"] = (row["started_at"] - start) * 1000
        lanes.setdefault(row["agent"], []).append(row)
    considered = rows[:TEXT_CALLS]
    texts = store.call_texts([r["id"] for r in considered])
    handoffs = span_handoffs(rows) + text_handoffs(considered, texts)
    limits = []
    if summary["calls"] > len(rows):
        limits.append(f"the page shows the first {len(rows)} of {summary['calls']} calls")
    if len(rows) > TEXT_CALLS:
        limits.append(f"text handoffs were looked for among the first {TEXT_CALLS} calls only")
    return {
        "workflow": workflow,
        "summary": summary,
        "totals": _totals(rows),
        "lanes": [{"agent": agent, "totals": _totals(calls), "calls": calls} for agent, calls in lanes.items()],
        "handoffs": [h.as_dict() for h in handoffs],
        "incidents": incidents(rows),
        "limits": limits,
    }


__all__ = [
    "TEXT_RUN",
    "Handoff",
    "incidents",
    "normalise",
    "span_handoffs",
    "text_handoffs",
    "workflow_view",
]
