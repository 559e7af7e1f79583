"""The stores' read for the audit trail (`audit.py` builds the answers from it): SQL both backends
speak, through the store's `query`.

One query a page over `calls` (with the agent-facing response, from which the audit reads the
function tools a model called) and one over `events`, oldest first by (started_at, id): memory stays
flat whatever the window. Findings come back without their `value`: the audit shows entity types,
never what was found.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from interlock.tracing.reads import where_clause

#: Calls read at a time.
AUDIT_PAGE = 500

_SELECT = (
    "SELECT c.id, c.started_at, c.agent, c.session, c.workflow, c.route, c.protocol, c.model, c.outcome,"
    " c.status, c.error_code, c.stream, c.meta, b.response_message, b.response_body, b.response_headers"
    " FROM calls c LEFT JOIN bodies b ON b.call_id = c.id"
)


class AuditReads:
    """A mixin of both stores (which provide `query`: rows as dicts, `?` parameters)."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:  # pragma: no cover
        raise NotImplementedError

    def audit_calls(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        agent: str | None = None,
        session: str | None = None,
        workflow: str | None = None,
        route: str | None = None,
        model: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Calls in the window, oldest first: their narrow fields, `meta`, `decisions`, `findings`
        (without values), and `response_message` / `response_body` / `response_headers` as stored."""
        where, params = where_clause(
            "c.", since=since, until=until, agent=agent, session=session, workflow=workflow, route=route, model=model
        )
        after: tuple[float, str] | None = None
        while True:
            page_where = list(where)
            page_params = list(params)
            if after is not None:
                page_where.append("(c.started_at, c.id) > (?, ?)")
                page_params += after
            rows = self.query(
                f"{_SELECT} WHERE {' AND '.join(page_where)} ORDER BY c.started_at, c.id LIMIT ?",
                (*page_params, AUDIT_PAGE),
            )
            if not rows:
                return
            self._add_events(rows)
            for row in rows:
                row["meta"] = json.loads(row["meta"]) if row["meta"] else {}
                row["stream"] = bool(row["stream"])
                row["response_headers"] = [tuple(h) for h in json.loads(row["response_headers"] or "[]")]
                if row["response_body"] is not None:
                    row["response_body"] = bytes(row["response_body"])
                yield row
            after = (rows[-1]["started_at"], rows[-1]["id"])

    def _add_events(self, rows: list[dict[str, Any]]) -> None:
        by_id = {row["id"]: row for row in rows}
        for row in rows:
            row["decisions"], row["findings"] = [], []
        marks = ", ".join("?" * len(by_id))
        for found in self.query(
            f"SELECT call_id, kind, data FROM events WHERE call_id IN ({marks}) ORDER BY call_id, seq", list(by_id)
        ):
            event = json.loads(found["data"])
            if found["kind"] == "finding":
                event.pop("value", None)
                by_id[found["call_id"]]["findings"].append(event)
            else:
                by_id[found["call_id"]]["decisions"].append(event)
