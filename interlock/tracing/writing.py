"""Writing a batch of calls: rows built in Python, inserted with few SQLite statements.

Runs in the recorder's writer thread (or a tool's), never on the event loop. `executemany`
releases and re-takes the GIL around every row it steps; while the proxy's event loop is busy each
re-take is a hand-off between threads (futex calls, context switches on both), and can wait for
the loop's switch interval. Measured at 600 calls/s of 2 KB, the writer's system time was ~51 µs
per call, and under a sustained 2 KB load the writer fell behind (a 15 s run ended with about
three quarters of its calls still queued). So each table's rows go in as multi-row
`INSERT ... VALUES (...), (...), ...` statements: one step, one GIL release, for up to `MAX_ROWS`
rows (system time ~25 µs per call; the writer keeps up). Statement sizes are powers of two, so
SQLite's statement cache keeps a handful of prepared statements per table."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from itertools import chain
from operator import attrgetter
from typing import Any, cast

from interlock.core.call import Call, Headers, _plain, public_headers
from interlock.core.fields import call_row
from interlock.core.sqlite import transaction
from interlock.core.views import UNPARSED, RequestView, ResponseView
from interlock.protocols import ADAPTERS
from interlock.protocols.encoding import codings
from interlock.tracing import store_chain
from interlock.tracing.chain import DEFAULT_WRITER, digest
from interlock.tracing.rows import (
    ATTEMPT_COLUMNS,
    DECISION_COLUMNS,
    FINDING_COLUMNS,
    INSERT_ATTEMPT,
    INSERT_BODY,
    INSERT_CALL,
    INSERT_CHUNK,
    INSERT_EVENT,
    INSERT_FTS,
    ON_CONFLICT,
    Indexer,
    Record,
    StoredJson,
    append_rows,
    dumps,
    record_rows,
    stored_size,
    without_bodies,
)
from interlock.tracing.text import MAX_TEXT, record_texts

# sqlite3 binds int, float and str parameters directly, but sends every other value (None and
# bytes included) through its adaptation protocol first: no adapter registered, then a lookup of
# `__adapt__` on its protocol type and of `__conform__` on the value, each missing one raising and
# formatting an AttributeError that is then discarded. A recorded call binds ~24 such values (its
# NULL columns, its bodies): callgrind counted ~30 k instructions a call in that lookup. An adapter
# registered for the exact type answers from the first dict lookup, in C, with the value itself
# (`{}.get(None)` is None; `bytes(b)` is `b`): the same parameters reach SQLite, for every sqlite3
# user in the process (subclasses of bytes are not these types, and take the usual path).
sqlite3.register_adapter(type(None), cast("Callable[[None], None]", {}.get))
sqlite3.register_adapter(bytes, bytes)

#: Records turned into rows between two pauses that let the event loop thread have the GIL.
YIELD_EVERY = 16

#: Most rows in one INSERT statement (and so the biggest statement kept prepared per table).
MAX_ROWS = 128

_statements: dict[tuple[str, int], str] = {}


def multi_row(single: str, rows: int) -> str:
    """`single` (an INSERT of one row) made to insert `rows` rows."""
    key = (single, rows)
    sql = _statements.get(key)
    if sql is None:
        head, _, group = single.partition(" VALUES ")
        suffix = ON_CONFLICT if group.endswith(ON_CONFLICT) else ""
        group = group.removesuffix(ON_CONFLICT)
        sql = _statements[key] = f"{head} VALUES {', '.join([group] * rows)}{suffix}"
    return sql


def row_groups(total: int, limit: int) -> Iterator[tuple[int, int]]:
    """(start, size) of the multi-row statements that insert `total` rows, at most `limit` a statement:
    sizes are powers of two, so few distinct statements are ever prepared."""
    start = 0
    while start < total:
        size = min(limit, total - start)
        size = 1 << (size.bit_length() - 1)  # the largest power of two that fits
        yield start, size
        start += size


def insert_rows(conn: sqlite3.Connection, single: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert `rows` with the one-row INSERT statement `single`, as few multi-row statements."""
    if not rows:
        return
    width = len(rows[0])
    # SQLite caps the parameters of one statement (32,766 since 3.32; 999 before).
    limit = max(1, min(MAX_ROWS, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width))
    for start, size in row_groups(len(rows), limit):
        if size == 1:
            conn.execute(single, rows[start])
        else:
            conn.execute(multi_row(single, size), list(chain.from_iterable(rows[start : start + size])))


class Rows:
    """The rows of a batch, one list per table (plain tuples in each table's column order), and
    each call's digest (`chain.py`: over the very rows inserted), in the order of `calls`."""

    __slots__ = ("calls", "bodies", "chunks", "attempts", "events", "texts", "digests")

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.bodies: list[tuple[Any, ...]] = []
        self.chunks: list[tuple[Any, ...]] = []
        self.attempts: list[tuple[Any, ...]] = []
        self.events: list[tuple[Any, ...]] = []
        self.texts: list[tuple[Any, ...]] = []
        self.digests: list[bytes] = []

    def lists(self) -> tuple[list[tuple[Any, ...]], ...]:
        return self.calls, self.bodies, self.chunks, self.attempts, self.events, self.texts

    def add_record(self, record: Record, capture: str, index: Indexer) -> None:
        mark = self.mark()
        record_rows(record, capture, index, self.lists())
        self._digest(mark)

    def _digest(self, mark: tuple[int, ...]) -> None:
        """The digest of the call whose rows were added after `mark`. In the writer's thread, so
        the proxy's event loop never pays for it (bench: recording scenario, docs/audit.md)."""
        out: list[bytes] = []
        for (table, *_), rows, start in zip(store_chain.TABLES, self.lists(), mark, strict=False):
            for row in rows[start:]:
                table.add(row, out)
        self.digests.append(digest(out))

    def add_call(self, call: Call, capture: str, *, salvage: bool = False, limit: int | None = None) -> None:
        """The rows `add_record(call.to_record(), capture, record_texts)` adds, gathered from the Call
        itself (no record dict, headers filtered once) for the one row builder both use
        (`rows.append_rows`; `tests/tracing/test_writing.py` holds the two paths to the same rows).

        `salvage` is for a call whose rows SQLite refused: text that UTF-8 cannot hold (a lone
        surrogate, which JSON's \\ud800 escapes produce) is replaced, and a body whose text cannot be
        extracted (nested past Python's recursion limit) is indexed as it is. The call is then
        recorded, not lost.

        `limit` (`store.record_max_bytes`) keeps the head of a body longer than it, and says so in
        the row's `meta.record_cut` (the proxy already bounded a stream's chunks the same way)."""
        mark = self.mark()
        full = capture == "full"
        agent_chunks = call.agent_chunks
        request_headers = public_headers(call.request_headers)
        response_headers = public_headers(call.response_headers)
        bodies: tuple[bytes | None, ...] = (
            call.request_body,
            call.upstream_body,
            call.response_body,
            call.agent_response_body,
        )
        meta = call.meta
        size = 0
        texts = None
        upstream_pieces: list[tuple[float, bytes]] = []
        agent_pieces: list[tuple[float, bytes]] | None = None
        if full:
            if limit is not None and any(body is not None and len(body) > limit for body in bodies):
                bodies, meta = _cut_bodies(bodies, meta, limit)
            upstream_pieces = [(c.t_ms, c.data) for c in call.chunks]
            agent_pieces = None if agent_chunks is None else [(c.t_ms, c.data) for c in agent_chunks]
            size = stored_size(bodies, upstream_pieces, agent_pieces)
            # What record_texts reads of a record, and nothing else.
            record = {
                "request_body": bodies[0],
                "request_headers": request_headers,
                "stream": call.stream,
                "protocol": call.protocol,
                "chunks": upstream_pieces,
                "agent_chunks": agent_pieces,
                "response_body": bodies[2],
                "agent_response_body": bodies[3],
                "response_headers": response_headers,
            }
            try:
                texts = record_texts(
                    record, _parsed_response(call, bodies[2]), _parsed_request(call, bodies[0], request_headers)
                )
            except Exception:
                if not salvage:
                    raise
                texts = _raw_texts(call)
        append_rows(
            self.lists(),
            call_row(call, len(call.attempts), "full" if full else "metadata", size, dumps(meta) if meta else "{}"),
            full,
            request_headers,
            response_headers,
            bodies,
            upstream_pieces,
            agent_pieces,
            texts,
            # Most calls have none of these: no list built then (a comprehension costs even empty).
            [(_attempt_columns(a), _plain(a)) for a in call.attempts] if call.attempts else (),
            [(_decision_columns(d), _plain(d)) for d in call.decisions] if call.decisions else (),
            [(_finding_columns(f), _plain(f)) for f in call.findings] if call.findings else (),
            None,  # `extra`: a Call has no keys its record does not know
        )
        if salvage:
            for rows, start in zip(self.lists(), mark, strict=False):
                rows[start:] = [tuple(_utf8(value) for value in row) for row in rows[start:]]
        self._digest(mark)

    def mark(self) -> tuple[int, ...]:
        """Where each list ends now (the tables', then the digests')."""
        return (*(len(rows) for rows in self.lists()), len(self.digests))

    def rewind(self, mark: tuple[int, ...]) -> None:
        """Drop what was added after `mark` (a call whose rows could not all be built)."""
        for rows, length in zip(self.lists(), mark, strict=False):
            del rows[length:]
        del self.digests[mark[-1] :]


# The columns of an attempt, decision or finding row, read in C (`attrgetter`), not one by one.
_attempt_columns = attrgetter(*ATTEMPT_COLUMNS)
_decision_columns = attrgetter(*DECISION_COLUMNS)
_finding_columns = attrgetter(*FINDING_COLUMNS)

_BODY_NAMES = ("request_body", "upstream_body", "response_body", "agent_response_body")


def _cut_bodies(
    bodies: tuple[bytes | None, ...], meta: dict[str, Any], limit: int
) -> tuple[tuple[bytes | None, ...], dict[str, Any]]:
    """The bodies with each cut to its first `limit` bytes, and meta with `record_cut` saying so
    (a copy: the Call's own meta is read by stages after the recorder)."""
    cut = dict(meta.get("record_cut") or {})
    kept: list[bytes | None] = []
    for name, body in zip(_BODY_NAMES, bodies, strict=True):
        if body is not None and len(body) > limit:
            cut[name] = {"limit": limit, "dropped_bytes": len(body) - limit}
            body = body[:limit]
        kept.append(body)
    return tuple(kept), {**meta, "record_cut": cut}


def _utf8(value: Any) -> Any:
    if isinstance(value, str):
        # NUL too: PostgreSQL's text cannot hold it (SQLite's can, and never needs this salvage for it).
        return value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
    return value


def copied_texts(row: dict[str, Any]) -> tuple[str, str, Any]:
    """A call's index texts and stored reassembly, read back with it to be copied to another store
    (`Reads.record_pages`: an export, an import) as the source holds them: the reassembly's JSON
    text is copied, not parsed and written again (`rows.StoredJson`)."""
    message = row["response_message"]
    return row["index_request"] or "", row["index_response"] or "", StoredJson(message) if message else None


def _raw_texts(call: Call) -> tuple[str, str, None]:
    """A call's bodies as plain text, for when their JSON cannot be read for the index."""
    if call.stream:
        chunks = call.agent_chunks if call.agent_chunks is not None else call.chunks
        response = b"".join(c.data for c in chunks)
    else:
        response = call.agent_body() or b""
    return (
        call.request_body[: MAX_TEXT * 4].decode("utf-8", "replace")[:MAX_TEXT],
        response[: MAX_TEXT * 4].decode("utf-8", "replace")[:MAX_TEXT],
        None,
    )


def write_records(
    conn: sqlite3.Connection,
    records: Sequence[Record],
    *,
    capture: str = "full",
    indexer: Indexer | None = None,
    writer: str = DEFAULT_WRITER,
) -> int:
    """Write `Call.to_record()` dicts in one transaction; returns how many were new."""
    if not records:
        return 0
    index = indexer or record_texts
    rows = Rows()
    for i, record in enumerate(records, 1):
        rows.add_record(record, capture, index)
        if i % YIELD_EVERY == 0:
            # Building rows is pure Python and holds the GIL; without a pause the event loop
            # can wait a whole switch interval (5 ms) for it. sleep(0) lets it run now.
            time.sleep(0)
    return write_rows(conn, rows, writer=writer)


def write_rows(conn: sqlite3.Connection, rows: Rows, *, writer: str = DEFAULT_WRITER) -> int:
    """Insert a batch's rows in one transaction, the new calls linked onto `writer`'s chain;
    returns how many calls were new."""
    calls, bodies, chunks, attempts, events, texts = rows.lists()
    if not calls:
        return 0
    digests = list(zip((c[0] for c in calls), rows.digests, strict=True))
    with transaction(conn):
        before = conn.total_changes
        insert_rows(conn, INSERT_CALL, calls)
        added = conn.total_changes - before
        if added != len(calls):
            # Some ids were already there (a re-import, a retried batch): write only the new ones'
            # children, so nothing is duplicated in the full-text index.
            fresh = set(without_bodies(conn, [c[0] for c in calls]))
            bodies = [b for b in bodies if b[0] in fresh]
            chunks = [c for c in chunks if c[0] in fresh]
            attempts = [a for a in attempts if a[0] in fresh]
            events = [e for e in events if e[0] in fresh]
            texts = [t for t in texts if t[0] in fresh]
            digests = [d for d in digests if d[0] in fresh]
        insert_rows(conn, store_chain.INSERT_LINK, store_chain.new_links(store_chain.sqlite_run(conn), writer, digests))
        insert_rows(conn, INSERT_BODY, bodies)
        insert_rows(conn, INSERT_CHUNK, chunks)
        insert_rows(conn, INSERT_ATTEMPT, attempts)
        insert_rows(conn, INSERT_EVENT, events)
        insert_rows(conn, INSERT_FTS, texts)
    return added


def _parsed_request(call: Call, body: bytes | None, headers: Headers) -> Any:
    """The request body as the parse stage parsed it (`call.request_json`), when the recorded body is
    that body (guardrails may record a redacted one), nothing changed the document since (stages
    edit it in place and say so: `request_changed`) and the body had no content-encoding (the index
    reads a body decoded): the writer does not parse it again."""
    view = call.view
    if (
        call.request_changed
        or call.request_json is None
        or not isinstance(view, RequestView)
        or view.source is not body
        or codings(headers)
    ):
        return UNPARSED
    return call.request_json


def _parsed_response(call: Call, body: bytes | None) -> Any:
    """The response body as the call's ResponseView parsed it on the hot path (the usage stage, the
    tool-call policy), when the recorded body is that body: the writer does not parse it again."""
    view = call.response_view
    if call.stream:
        # The stream reassembled from the events the proxy split as it relayed them, while the record
        # holds those events (not the agent's rewritten chunks, nor a masked copy: the view is then stale).
        adapter = ADAPTERS.get(call.protocol)
        if call.agent_chunks is not None or not isinstance(view, ResponseView) or adapter is None:
            return UNPARSED
        view = adapter.response_view(call)  # a fresh view (nothing read) when stale
        read = view.stream_read
        return view.message if read is not None and read.events is not None else UNPARSED
    if body is None or not isinstance(view, ResponseView) or view.body is not body:
        return UNPARSED
    return view.parsed()
