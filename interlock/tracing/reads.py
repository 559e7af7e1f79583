"""Reading the store: every query behind the CLI, the admin API, the UI, replay and the exporters.

`Reads` is the read half of `Store` (`store.py` keeps connections, writing, retention and moving
calls between files); its methods run on the calling thread's connection. Lists are narrow rows of
`calls` (`LIST_COLUMNS`, made by `rows.narrow_rows`); one call in full is a record (`rows_to_records`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from interlock.core.call import SOUND_OUTCOMES, Call
from interlock.tracing.rows import LIST_COLUMNS, SELECT_JOINED, SESSION_ORDERS, Record, narrow_rows, rows_to_records
from interlock.tracing.schema import StoreError, schema_version
from interlock.tracing.writing import Rows, copied_texts

#: The narrow rows of `calls` that list views get.
#: Beside the columns, what names an MCP call in a list (its JSON-RPC method and tool; NULL for others).
LIST_EXTRAS = ("mcp_method", "mcp_tool")


def select_narrow(meta_text: str) -> str:
    """The SELECT of narrow rows, `meta_text` being the dialect's `meta.mcp.<key>` as text (`{key}` in it)."""
    extras = ", ".join(f"{meta_text.format(key=key)} AS mcp_{key}" for key in ("method", "tool"))
    return f"SELECT {', '.join(LIST_COLUMNS)}, {extras} FROM calls"


SELECT_NARROW = select_narrow("json_extract(meta, '$.mcp.{key}')")

#: `SELECT_JOINED` plus the reassembled stream: everything a call's detail view shows, in one row.
_SELECT_DETAIL = SELECT_JOINED.replace(" FROM calls c ", ", b.response_message FROM calls c ", 1)


def _count(condition: str) -> str:
    """SQL counting the rows where `condition` holds (a CASE: PostgreSQL does not add booleans)."""
    return f"sum(CASE WHEN {condition} THEN 1 ELSE 0 END)"


#: Which sessions (or workflows: `{key}`) are on a page: only what ordering and filtering need.
#: Measured on 50,000 calls in 5,000 sessions: aggregating every session before LIMIT took ~55-65 ms
#: a page of 50, picking the page first and aggregating only its sessions ~25 ms. Ties in last
#: activity go by id.
_GROUP_PAGE = """
SELECT {key} FROM calls
WHERE {key} IS NOT NULL AND {where}
GROUP BY {key} {having}
ORDER BY {order}, {key}
LIMIT ? OFFSET ?
"""

#: SQL for "this call is a problem": its outcome is not a sound one (ok, closed, unsupported).
_PROBLEM = f"outcome NOT IN ({', '.join(repr(o) for o in sorted(SOUND_OUTCOMES))})"

#: What a session (or workflow: `{key}`) list shows, for the given ones only (`_session_row` finishes each row).
#: `problems`: calls not sound (ok, closed, unsupported); `errors`: upstream_error, aborted, bad_request,
#: internal_error; `denials`: denied and blocked (interlock meant them); `retries`: calls with more
#: than one attempt, `extra_attempts` the attempts beyond the first; `duration_ms`: the calls'
#: durations added up.
_GROUP_SUMMARY = (
    """
SELECT {key},
       min(started_at) AS first_at,
       max(started_at) AS last_at,
       max(started_at + coalesce(duration_ms, 0) / 1000.0) AS end_at,
       count(*) AS calls,
       <concat:agent> AS agents,
       <concat:model> AS models,
       <concat:route> AS routes,
       CAST(sum(input_tokens) AS BIGINT) AS input_tokens,
       CAST(sum(output_tokens) AS BIGINT) AS output_tokens,
       CAST(sum(coalesce(input_tokens, 0) + coalesce(output_tokens, 0)) AS BIGINT) AS tokens,
       <problems> AS problems,
       <errors> AS errors,
       <denials> AS denials,
       <retries> AS retries,
       CAST(sum(CASE WHEN attempt_count > 1 THEN attempt_count - 1 ELSE 0 END) AS BIGINT) AS extra_attempts,
       CAST(sum((SELECT count(*) FROM events e WHERE e.call_id = c.id AND e.kind = 'finding')) AS BIGINT) AS findings,
       sum(duration_ms) AS duration_ms,
       sum(cost_usd) AS cost_usd, sum(CASE WHEN cost_source = 'unpriced' THEN 1 ELSE 0 END) AS unpriced
FROM calls c
WHERE {key} IN ({marks}) AND {where}
GROUP BY {key}
""".replace("<problems>", _count(_PROBLEM))
    .replace("<errors>", _count("outcome IN ('upstream_error', 'aborted', 'bad_request', 'internal_error')"))
    .replace("<denials>", _count("outcome IN ('denied', 'blocked')"))
    .replace("<retries>", _count("attempt_count > 1"))
)


class Reads:
    """The read queries of a store, in SQL both engines speak (`?` parameters; a mixin).

    The SQLite store provides `conn` (this thread's connection) and uses the methods as they are;
    the PostgreSQL store (`postgres.py`) overrides `query`, `rows`, the few dialect hooks below
    (`_select_narrow`, `_concat`, `fts_condition`) and `stats`, and inherits every query."""

    #: Narrow rows (`select_narrow` in the dialect's JSON access).
    _select_narrow = SELECT_NARROW
    #: The distinct values of a column in a group, comma-separated.
    _concat = "group_concat(DISTINCT {column})"

    @property
    def conn(self) -> sqlite3.Connection:  # pragma: no cover - Store overrides it
        raise NotImplementedError

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows of `sql` as dicts keyed by column name."""
        cursor = self.conn.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of `sql` as tuples."""
        return self.conn.execute(sql, params).fetchall()

    #: Joins a call (`c`) to its full-text row (`f`, with `request` and `response`).
    _texts_join = "LEFT JOIN calls_fts f ON f.rowid = c.seq"

    def fts_condition(self, q: str) -> tuple[str, list[Any]]:
        """A condition on `calls` (and its parameters): the call matches the full-text search `q`."""
        return "seq IN (SELECT rowid FROM calls_fts WHERE calls_fts MATCH ?)", [fts_query(q)]

    def _search(self, sql: str, params: Sequence[Any], q: str | None) -> list[dict[str, Any]]:
        """`query`, where a malformed search query `q` in `params` is a StoreError that says so."""
        try:
            return self.query(sql, params)
        except sqlite3.OperationalError as exc:
            # FTS5 reports bad syntax as "fts5: syntax error", "unterminated string", "no such column"...
            if q and "locked" not in str(exc):
                raise StoreError(f"bad search query {q!r}: {exc}") from None
            raise

    # -- one call --------------------------------------------------------------------------------

    def get_record(self, call_id: str) -> Record | None:
        """The call as `Call.to_record()` gave it (minus what capture `metadata` left out)."""
        found = self.get_detail(call_id)
        return None if found is None else found[0]

    def get_detail(self, call_id: str) -> tuple[Record, dict[str, Any]] | None:
        """The call's record, and its stored row: the record plus what the store adds (`capture`,
        `size`, `attempt_count`, `response_message` as JSON text). One read of the call's rows."""
        rows = self.query(f"{_SELECT_DETAIL} WHERE c.id = ?", (call_id,))
        return (rows_to_records(self.rows, rows)[0], rows[0]) if rows else None

    def get_call(self, call_id: str) -> Call | None:
        """The full Call, or None if no call has this id."""
        record = self.get_record(call_id)
        return None if record is None else Call.from_record(record)

    def call_row(self, call_id: str) -> dict[str, Any] | None:
        """The narrow row of one call."""
        rows = narrow_rows(self.query(f"{self._select_narrow} WHERE id = ?", (call_id,)))
        return rows[0] if rows else None

    def resolve_id(self, prefix: str) -> str | None:
        """The id that starts with `prefix`, if exactly one does."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self.rows("SELECT id FROM calls WHERE id LIKE ? ESCAPE '\\' LIMIT 2", (escaped + "%",))
        return str(rows[0][0]) if len(rows) == 1 else None

    def neighbours(self, call_id: str, session: str | None) -> dict[str, Any]:
        """The calls before and after this one in its session (by id, i.e. time) and its position:
        `{"prev", "next", "position", "total"}`; all None without a session. Two index seeks on
        (session, id) and a count over the session's index entries."""
        if session is None:
            return {"prev": None, "next": None, "position": None, "total": None}
        prev = self.rows(
            "SELECT id FROM calls WHERE session = ? AND id < ? ORDER BY id DESC LIMIT 1", (session, call_id)
        )
        after = self.rows("SELECT id FROM calls WHERE session = ? AND id > ? ORDER BY id LIMIT 1", (session, call_id))
        position, total = self.rows(
            f"SELECT {_count('id <= ?')}, count(*) FROM calls WHERE session = ?", (call_id, session)
        )[0]
        return {
            "prev": prev[0][0] if prev else None,
            "next": after[0][0] if after else None,
            "position": int(position or 0),
            "total": int(total),
        }

    def call_parts(self, ids: Sequence[str], *, bodies: bool = False) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """Per call id (each of `ids` that is stored): its `attempts`, `decisions` and `findings`,
        and with `bodies` its `body` (one row: response_headers, response_body, response_message)."""
        parts: dict[str, dict[str, list[dict[str, Any]]]] = {}
        if not ids:
            return parts
        ids = list(ids)
        marks = ", ".join("?" * len(ids))

        def of(call_id: str) -> dict[str, list[dict[str, Any]]]:
            return parts.setdefault(call_id, {"attempts": [], "decisions": [], "findings": [], "body": []})

        for attempt in self.query(
            "SELECT call_id, upstream, url, model, started_ms, duration_ms, ttfb_ms, status, error, backoff_ms"
            f" FROM attempts WHERE call_id IN ({marks}) ORDER BY call_id, seq",
            ids,
        ):
            of(attempt.pop("call_id"))["attempts"].append(attempt)
        for call_id, kind, data in self.rows(
            f"SELECT call_id, kind, data FROM events WHERE call_id IN ({marks}) ORDER BY call_id, seq", ids
        ):
            of(call_id)["decisions" if kind == "decision" else "findings"].append(json.loads(data))
        if bodies:
            for body in self.query(
                "SELECT call_id, response_headers, response_body, response_message FROM bodies"
                f" WHERE call_id IN ({marks})",
                ids,
            ):
                of(body.pop("call_id"))["body"].append(body)
        return parts

    def record_pages(self, where: Sequence[str], params: Sequence[Any], *, page: int = 200) -> Iterator[Rows]:
        """The calls matching `where` (on alias `c`) as the rows a store writes, with their stored
        capture, indexed text and reassembled stream, a page at a time in write order: how calls
        move between backends (a PostgreSQL export to a SQLite bundle, a bundle's import)."""
        sql = (
            _SELECT_DETAIL.replace(
                " FROM calls c ", ", f.request AS index_request, f.response AS index_response FROM calls c ", 1
            )
            + f" {self._texts_join} WHERE {' AND '.join(where)} AND c.seq > ? ORDER BY c.seq LIMIT ?"
        )
        last = 0
        while found := self.query(sql, (*params, last, page)):
            rows = Rows()
            for record, row in zip(rows_to_records(self.rows, found), found, strict=True):
                rows.add_record(record, row["capture"], lambda _, row=row: copied_texts(row))  # type: ignore[misc]
            yield rows
            last = found[-1]["seq"]

    # -- lists of calls --------------------------------------------------------------------------

    def iter_calls(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        session: str | None = None,
        agent: str | None = None,
        route: str | None = None,
    ) -> Iterator[Call]:
        """Full calls matching the filters, oldest first (read in pages, so memory stays flat)."""
        where, params = where_clause("c.", since=since, until=until, session=session, agent=agent, route=route)
        last: tuple[float, int] = (float("-inf"), -1)
        while True:
            page_where = [*where, "(c.started_at > ? OR (c.started_at = ? AND c.seq > ?))"]
            rows = self.query(
                f"{SELECT_JOINED} WHERE {' AND '.join(page_where)} ORDER BY c.started_at, c.seq LIMIT 200",
                (*params, last[0], last[0], last[1]),
            )
            if not rows:
                return
            for record in rows_to_records(self.rows, rows):
                yield Call.from_record(record)
            last = (rows[-1]["started_at"], rows[-1]["seq"])

    def list_calls(
        self,
        *,
        session: str | None = None,
        agent: str | None = None,
        route: str | None = None,
        outcome: str | None = None,
        model: str | None = None,
        trace_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        q: str | None = None,
        limit: int = 50,
        before: str | None = None,
        after: str | None = None,
        workflow: str | None = None,
    ) -> list[dict[str, Any]]:
        """Narrow rows, newest first; page with `before=<last id>`. With `after`, oldest first (for tail)."""
        where, params = where_clause(
            session=session,
            agent=agent,
            route=route,
            outcome=outcome,
            model=model,
            trace_id=trace_id,
            workflow=workflow,
            since=since,
            until=until,
        )
        if before is not None:
            where.append("id < ?")
            params.append(before)
        if after is not None:
            where.append("id > ?")
            params.append(after)
        if q:
            condition, values = self.fts_condition(q)
            where.append(condition)
            params += values
        order = "ASC" if after is not None and before is None else "DESC"
        sql = f"{self._select_narrow} WHERE {' AND '.join(where)} ORDER BY id {order} LIMIT ?"
        return narrow_rows(self._search(sql, (*params, max(0, int(limit))), q))

    def session_calls(self, session: str, *, limit: int = 500, offset: int = 0) -> list[dict[str, Any]]:
        """A session's narrow rows in the order they started (a waterfall's rows), a page of them."""
        return narrow_rows(
            self.query(
                f"{self._select_narrow} WHERE session = ? ORDER BY started_at, seq LIMIT ? OFFSET ?",
                (session, max(0, int(limit)), max(0, int(offset))),
            )
        )

    def written_since(self, seq: int | None, *, limit: int = 500) -> tuple[list[dict[str, Any]], int]:
        """Calls written after write position `seq` (None: only learn the current position), in the
        order they were written, and the new position. Follows the store the way `tail -f` follows a
        file: a long call that started earlier still shows up when it is written."""
        if seq is None:
            return [], int(self.rows("SELECT max(seq) FROM calls")[0][0] or 0)
        rows = self.query(
            self._select_narrow.replace("SELECT ", "SELECT seq, ", 1) + " WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        for row in rows:
            seq = max(seq, int(row.pop("seq")))
        return narrow_rows(rows), seq

    def filter_choices(self, *, limit: int = 500) -> dict[str, list[str]]:
        """The distinct agents and routes seen (sorted, at most `limit` each), for filter menus."""
        return {
            key: [r[0] for r in self.rows(f"SELECT DISTINCT {column} FROM calls ORDER BY {column} LIMIT ?", (limit,))]
            for key, column in (("agents", "agent"), ("routes", "route"))
        }

    def count_calls(self, **filters: Any) -> int:
        where, params = where_clause(**filters)
        return int(self.rows(f"SELECT count(*) FROM calls WHERE {' AND '.join(where)}", params)[0][0])

    # -- sessions and agents ---------------------------------------------------------------------

    def sessions(
        self,
        *,
        agent: str | None = None,
        route: str | None = None,
        outcome: str | None = None,
        since: float | None = None,
        until: float | None = None,
        active_since: float | None = None,
        q: str | None = None,
        limit: int = 50,
        offset: int = 0,
        order: str = "recent",
    ) -> list[dict[str, Any]]:
        """Sessions (calls sharing a session id), most recently active first (or costliest first), a page.

        `since`/`until` choose the calls (a session is summarised over its calls in that window);
        `agent`, `route` and `outcome` keep sessions with at least one such call (`outcome="problems"`:
        any call whose outcome is not sound); `active_since` keeps sessions whose last call started then or later;
        `q` keeps sessions with a call matching the full-text search. Picks the page of session ids
        first, then aggregates only those."""
        where, params = where_clause(since=since, until=until)
        having: list[str] = []
        if q:
            condition, values = self.fts_condition(q)
            where.append(f"session IN (SELECT session FROM calls WHERE {condition})")
            params += values
        for column, value in (("agent", agent), ("route", route)):
            if value is not None:
                having.append(f"{_count(f'{column} = ?')} > 0")
                params.append(value)
        if outcome == "problems":
            having.append(f"{_count(_PROBLEM)} > 0")
        elif outcome is not None:
            having.append(f"{_count('outcome = ?')} > 0")
            params.append(outcome)
        if active_since is not None:
            having.append("max(started_at) >= ?")
            params.append(active_since)
        if order not in SESSION_ORDERS:
            raise StoreError(f"unknown session order {order!r} (known: {', '.join(SESSION_ORDERS)})")
        having_sql = ("HAVING " + " AND ".join(having)) if having else ""
        sql = _GROUP_PAGE.format(
            key="session", where=" AND ".join(where), having=having_sql, order=SESSION_ORDERS[order]
        )
        page = [r["session"] for r in self._search(sql, (*params, max(0, int(limit)), max(0, int(offset))), q)]
        return self._summaries(page, since=since, until=until)

    def _summaries(
        self, page: list[str], since: float | None = None, until: float | None = None, key: str = "session"
    ) -> list[dict[str, Any]]:
        """The summary rows of these sessions (or workflows, by `key`), in this order (over their
        calls from `since` to `until`)."""
        if not page:
            return []
        where, params = where_clause(since=since, until=until)
        sql = _GROUP_SUMMARY.format(key=key, marks=", ".join("?" * len(page)), where=" AND ".join(where))
        for column in ("agent", "model", "route"):
            sql = sql.replace(f"<concat:{column}>", self._concat.format(column=column))
        found = {row[key]: row for row in self.query(sql, (*page, *params))}
        return [_session_row(found[name]) for name in page if name in found]

    def session_summary(self, session: str) -> dict[str, Any] | None:
        """One session's summary (the fields of a `sessions` row), or None."""
        rows = self._summaries([session])
        return rows[0] if rows else None

    def session(self, session: str, *, limit: int = 1000) -> dict[str, Any] | None:
        """One session's summary and its calls (narrow rows, oldest first)."""
        summary = self.session_summary(session)
        if summary is None:
            return None
        summary["calls"] = narrow_rows(
            self.query(f"{self._select_narrow} WHERE session = ? ORDER BY id LIMIT ?", (session, limit))
        )
        return summary

    def agents(self) -> list[dict[str, Any]]:
        """Every agent seen, with its call count, sessions, last activity and what its calls cost."""
        return self.query(
            "SELECT agent, count(*) AS calls, count(DISTINCT session) AS sessions, max(started_at) AS last_at,"
            f" {_count(_PROBLEM)} AS problems, sum(cost_usd) AS cost_usd FROM calls GROUP BY agent ORDER BY last_at DESC"
        )

    def stats(self) -> dict[str, Any]:
        """Counts by outcome, and the store's size (`storage`)."""
        outcomes = {o: int(n) for o, n in self.rows("SELECT outcome, count(*) FROM calls GROUP BY outcome")}
        sessions, oldest, newest = self.rows(
            "SELECT count(DISTINCT session), min(started_at), max(started_at) FROM calls"
        )[0]
        return {
            "calls": sum(outcomes.values()),
            "outcomes": outcomes,
            "sessions": int(sessions),
            "oldest": oldest,
            "newest": newest,
            **self.storage(),
        }

    def storage(self) -> dict[str, Any]:
        """`bytes` (the file), `bytes_used` (its pages in use) and `schema_version`."""
        conn = self.conn
        page_size, pages, free = (
            conn.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_size", "page_count", "freelist_count")
        )
        return {
            "bytes": page_size * pages,
            "bytes_used": page_size * (pages - free),
            "schema_version": schema_version(conn),
        }


def _session_row(row: dict[str, Any]) -> dict[str, Any]:
    """A summary row finished: lists sorted, `agent` when there is one, `elapsed_ms` first start to last end."""
    for key in ("agents", "models", "routes"):
        row[key] = sorted(row[key].split(",")) if row[key] else []
    row["agent"] = row["agents"][0] if len(row["agents"]) == 1 else None
    row["elapsed_ms"] = max(0.0, (row.pop("end_at") - row["first_at"]) * 1000)
    return row


def where_clause(prefix: str = "", **filters: Any) -> tuple[list[str], list[Any]]:
    """SQL conditions (and their parameters) for `since`, `until` and column equality filters."""
    where: list[str] = ["TRUE"]
    params: list[Any] = []
    for key, value in filters.items():
        if value is None:
            continue
        if key == "since":
            where.append(f"{prefix}started_at >= ?")
        elif key == "until":
            where.append(f"{prefix}started_at < ?")
        else:
            where.append(f"{prefix}{key} = ?")
        params.append(value)
    return where, params


def fts_query(q: str) -> str:
    """A search box string as an FTS5 query: plain words are matched as words (all of them), so
    punctuation never makes a syntax error; a query using FTS5 syntax (quotes, AND/OR/NOT, NEAR,
    `*`, column filters) is passed through."""
    if any(ch in q for ch in '"*:^()') or any(w in q.split() for w in ("AND", "OR", "NOT", "NEAR")):
        return q
    return " ".join('"' + word.replace('"', '""') + '"' for word in q.split())


__all__ = ["LIST_EXTRAS", "SELECT_NARROW", "Reads", "fts_query", "where_clause"]
