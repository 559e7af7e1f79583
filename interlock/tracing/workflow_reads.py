"""The workflow reads of a store (docs/workflows.md): the workflows list, one workflow's summary
and calls, and calls' indexed texts (for text handoffs, `tracing/workflow.py`). A mixin over
`Reads`, in SQL both engines speak; both backends inherit it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from interlock.tracing.reads import _GROUP_PAGE, Reads, _count, where_clause
from interlock.tracing.rows import SESSION_ORDERS, narrow_rows

#: What a workflow's page reads of each call beside its narrow row: the span it hangs from, its findings.
_WORKFLOW_EXTRAS = (
    ", parent_span_id, (SELECT count(*) FROM events e WHERE e.call_id = calls.id AND e.kind = 'finding')"
    " AS findings FROM calls"
)


class WorkflowReads(Reads):
    """`Reads` plus the workflow queries."""

    def workflows(
        self,
        *,
        agent: str | None = None,
        since: float | None = None,
        until: float | None = None,
        active_since: float | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Workflow summaries (the fields of a `sessions` row, keyed `workflow`), most recently active
        first, a page of them; `agent` keeps workflows that agent took part in."""
        where, params = where_clause(since=since, until=until)
        having: list[str] = []
        if agent is not None:
            having.append(f"{_count('agent = ?')} > 0")
            params.append(agent)
        if active_since is not None:
            having.append("max(started_at) >= ?")
            params.append(active_since)
        sql = _GROUP_PAGE.format(
            key="workflow",
            where=" AND ".join(where),
            having=("HAVING " + " AND ".join(having)) if having else "",
            order=SESSION_ORDERS["recent"],
        )
        page = [r["workflow"] for r in self.query(sql, (*params, max(0, int(limit)), max(0, int(offset))))]
        return self._summaries(page, since=since, until=until, key="workflow")

    def workflow_summary(self, workflow: str) -> dict[str, Any] | None:
        """One workflow's summary (the fields of a `workflows` row), or None."""
        rows = self._summaries([workflow], key="workflow")
        return rows[0] if rows else None

    def workflow_calls(self, workflow: str, *, limit: int = 2000) -> list[dict[str, Any]]:
        """A workflow's calls in the order they started: narrow rows plus `parent_span_id` and
        `findings` (how many), the first `limit` of them."""
        return narrow_rows(
            self.query(
                self._select_narrow.replace(" FROM calls", _WORKFLOW_EXTRAS, 1)
                + " WHERE workflow = ? ORDER BY started_at, seq LIMIT ?",
                (workflow, max(0, int(limit))),
            )
        )

    def call_texts(self, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """Per call id: (request text, response text) as the full-text index holds them (string
        values of the bodies, a stream's reassembled text); calls recorded without bodies have none."""
        texts: dict[str, tuple[str, str]] = {}
        ids = list(ids)
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ", ".join("?" * len(part))
            for call_id, request, response in self.rows(
                f"SELECT c.id, f.request, f.response FROM calls c {self._texts_join} WHERE c.id IN ({marks})", part
            ):
                texts[call_id] = (request or "", response or "")
        return texts


__all__ = ["WorkflowReads"]
