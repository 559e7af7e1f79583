"""Records ⇄ rows: how a `Call.to_record()` dict is spread over the tables, and read back.

Everything here runs in the writer thread (or a reader's), never on the event loop.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from interlock.core.call import Headers, public_headers
from interlock.core.fields import CALL_COLUMNS, FLAG_COLUMNS, RECORD_KEYS, record_row
from interlock.core.fields import LIST_COLUMNS as LIST_COLUMNS

Record = dict[str, Any]
#: (request text, response text, reassembled response message or None) for one record.
Indexer = Callable[[Record], tuple[str, str, Any]]


class StoredJson(str):
    """A message as a store already holds it, JSON text (`bodies.response_message` read back): a
    record copied between stores (an export, an import) keeps it as it is, not parsed and
    written again: the copy's bytes are the original's, and so is its digest (`chain.py`)."""

    __slots__ = ()


#: Columns of `calls` that list views get (`list_calls`); everything but `query`, `parent_span_id`
#: and `meta`. The columns, the record keys and the `calls` row all come from `fields.FIELDS`.
_CALL_COLUMNS = CALL_COLUMNS
BOOL_COLUMNS = FLAG_COLUMNS
# to_record keys that have a home in the schema; anything else goes to `bodies.extra`.
_KNOWN_KEYS = RECORD_KEYS
_BODY_COLUMNS = ("request_body", "upstream_body", "response_body", "agent_response_body")

#: A row already stored (a batch written again after a fault, a bundle imported twice) is skipped;
#: not `INSERT OR IGNORE`, which also skips a row that breaks NOT NULL: that row would be lost
#: silently while the writer counted it written. Now it fails, and the recorder logs and counts it.
ON_CONFLICT = " ON CONFLICT DO NOTHING"
INSERT_CALL = (
    f"INSERT INTO calls ({', '.join(_CALL_COLUMNS)}) VALUES ({', '.join('?' * len(_CALL_COLUMNS))})" + ON_CONFLICT
)
INSERT_BODY = (
    "INSERT INTO bodies (call_id, request_headers, response_headers, request_body, upstream_body,"
    " response_body, agent_response_body, agent_chunks, response_message, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    + ON_CONFLICT
)
INSERT_CHUNK = "INSERT INTO chunks (call_id, side, seq, t_ms, data) VALUES (?, ?, ?, ?, ?)" + ON_CONFLICT
INSERT_ATTEMPT = (
    "INSERT INTO attempts (call_id, seq, upstream, url, model, started_ms, duration_ms, ttfb_ms, status,"
    " error, backoff_ms, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" + ON_CONFLICT
)
INSERT_EVENT = (
    "INSERT INTO events (call_id, seq, kind, stage, action, name, data) VALUES (?, ?, ?, ?, ?, ?, ?)" + ON_CONFLICT
)
INSERT_FTS = "INSERT INTO calls_fts (rowid, request, response) VALUES ((SELECT seq FROM calls WHERE id = ?), ?, ?)"
CHILD_TABLES = ("bodies", "chunks", "attempts", "events")


def insert_columns(insert: str) -> tuple[str, ...]:
    """The column names of an `INSERT ... (a, b, c) VALUES ...` statement, in order."""
    return tuple(insert.split("(", 1)[1].split(")", 1)[0].split(", "))


#: What a call's digest covers (`chain.py`): each table's rows as its INSERT writes them, in this
#: order: (table, columns, its REAL columns, the columns hashed as raw bytes (BLOBs, and the long
#: JSON texts: escaping them again as JSON cost more than hashing them), the key after `call_id`
#: that orders a call's rows). The columns hashed by position are fixed as they were when the chain
#: came (schema 5, `CHAINED_WIDTHS` of them): a column added later goes to the end of its INSERT and
#: is hashed by name, only when not NULL (`chain.Table.added`), so older rows keep their digests.
CHAINED_WIDTHS = {"calls": 32, "bodies": 10, "chunks": 5, "attempts": 12, "events": 7}
CHAINED_TABLES = (
    ("calls", insert_columns(INSERT_CALL), ("started_at", "ttfb_ms", "duration_ms"), ("error", "meta"), ""),
    (
        "bodies",
        insert_columns(INSERT_BODY),
        (),
        ("request_headers", "response_headers", *_BODY_COLUMNS, "response_message", "extra"),
        "",
    ),
    ("chunks", insert_columns(INSERT_CHUNK), ("t_ms",), ("data",), "side, seq"),
    (
        "attempts",
        insert_columns(INSERT_ATTEMPT),
        ("started_ms", "duration_ms", "ttfb_ms", "backoff_ms"),
        ("url", "error", "data"),
        "seq",
    ),
    ("events", insert_columns(INSERT_EVENT), (), ("data",), "seq"),
)


def dumps(value: Any) -> str:
    """`json.dumps(value, ensure_ascii=False, separators=(",", ":"))`, bytes as `{"$bytes": base64}`."""
    return "".join(_encode(value, 0))


def _encode_extra(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    raise TypeError(f"{type(value).__name__} is not JSON-able")


# `json.dumps` with options builds a new JSONEncoder, and a new C encoder, on every call: with
# three or four values per recorded call that was ~4 µs each, a fifth of building a call's rows.
# This is the C encoder `json.dumps` makes, made once (same output; no circular-reference check:
# records are trees).
_c_encoder = getattr(json.encoder, "c_make_encoder", None)
_encode: Callable[[Any, int], Any] = (
    _c_encoder(None, _encode_extra, json.encoder.encode_basestring, None, ":", ",", False, False, True)
    if _c_encoder is not None
    else lambda value, _level: json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_encode_extra)
)


def _decode_extra(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and "$bytes" in value:
            return base64.b64decode(value["$bytes"])
        return {k: _decode_extra(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_extra(v) for v in value]
    return value


#: The select that `rows_to_records` expects: a calls row joined with its bodies row.
#: How pages of sessions may be ordered (`Reads.sessions`): by last activity, or by what their calls
#: cost (a session summary sums `cost_usd` and counts `unpriced` calls).
SESSION_ORDERS = {"recent": "max(started_at) DESC", "cost": "coalesce(sum(cost_usd), 0) DESC, max(started_at) DESC"}

SELECT_JOINED = (
    "SELECT c.*, b.request_headers, b.response_headers, b.request_body, b.upstream_body, b.response_body,"
    " b.agent_response_body, b.agent_chunks AS has_agent_chunks, b.extra"
    " FROM calls c LEFT JOIN bodies b ON b.call_id = c.id"
)


def narrow_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows read from `calls` as list views give them: the 0/1 columns as bools (in place; returns `rows`)."""
    for row in rows:
        for key in BOOL_COLUMNS:
            row[key] = bool(row[key])
    return rows


#: Runs a query (`?` parameters) and returns its rows as tuples: a store's `rows` method.
Fetch = Callable[[str, Sequence[Any]], Sequence[tuple[Any, ...]]]


def rows_to_records(fetch: Fetch, rows: Sequence[dict[str, Any]]) -> list[Record]:
    """`SELECT_JOINED` rows, plus their chunks, attempts and events (three queries in all), as records."""
    if not rows:
        return []
    ids = [row["id"] for row in rows]
    marks = ", ".join("?" * len(ids))
    chunks: dict[str, tuple[list[Any], list[Any]]] = {i: ([], []) for i in ids}
    for call_id, side, t_ms, data in fetch(
        f"SELECT call_id, side, t_ms, data FROM chunks WHERE call_id IN ({marks}) ORDER BY call_id, side, seq", ids
    ):
        chunks[call_id][side].append((t_ms, data))
    attempts: dict[str, list[Any]] = {i: [] for i in ids}
    for call_id, data in fetch(
        f"SELECT call_id, data FROM attempts WHERE call_id IN ({marks}) ORDER BY call_id, seq", ids
    ):
        attempts[call_id].append(json.loads(data))
    events: dict[str, tuple[list[Any], list[Any]]] = {i: ([], []) for i in ids}
    for call_id, kind, data in fetch(
        f"SELECT call_id, kind, data FROM events WHERE call_id IN ({marks}) ORDER BY call_id, seq", ids
    ):
        events[call_id][0 if kind == "decision" else 1].append(json.loads(data))
    records = []
    for row in rows:
        call_id = row["id"]
        record: Record = {k: row[k] for k in _CALL_COLUMNS if k != "meta"}
        narrow_rows([record])
        record["meta"] = json.loads(row["meta"]) if row["meta"] else {}
        record["request_headers"] = [tuple(h) for h in json.loads(row["request_headers"] or "[]")]
        record["response_headers"] = [tuple(h) for h in json.loads(row["response_headers"] or "[]")]
        for key in _BODY_COLUMNS:
            record[key] = row[key]
        if record["request_body"] is None:
            record["request_body"] = b""
        upstream_chunks, agent_chunks = chunks[call_id]
        record["chunks"] = upstream_chunks
        record["agent_chunks"] = agent_chunks if row["has_agent_chunks"] else None
        record["attempts"] = attempts[call_id]
        record["decisions"], record["findings"] = events[call_id]
        if row["extra"]:
            record.update(_decode_extra(json.loads(row["extra"])))
        for key in ("capture", "size", "attempt_count"):
            record.pop(key, None)
        records.append(record)
    return records


def without_bodies(conn: sqlite3.Connection, ids: Sequence[str]) -> list[str]:
    """Of `ids`, those whose calls row has no bodies row yet (i.e. inserted by this transaction)."""
    found: list[str] = []
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        marks = ", ".join("?" * len(part))
        found += [
            r[0]
            for r in conn.execute(
                f"SELECT id FROM calls WHERE id IN ({marks}) AND id NOT IN (SELECT call_id FROM bodies WHERE call_id IN ({marks}))",
                (*part, *part),
            )
        ]
    return found


#: The lists a batch's rows go to, one per table: calls, bodies, chunks, attempts, events, texts.
Lists = tuple[list[tuple[Any, ...]], ...]
#: A streamed response as (t_ms, data) pairs.
Pieces = Sequence[tuple[float, bytes]]


#: The columns of `attempts` after (call_id, seq), and of `events` after (call_id, seq, kind), that
#: a decision and a finding fill (an event's `name` is a decision's rule or a finding's entity).
ATTEMPT_COLUMNS = ("upstream", "url", "model", "started_ms", "duration_ms", "ttfb_ms", "status", "error", "backoff_ms")
DECISION_COLUMNS = ("stage", "action", "rule")
FINDING_COLUMNS = ("action", "entity")
#: An attempt, decision or finding for `append_rows`: (its `*_COLUMNS` values, its whole dict).
Item = tuple[tuple[Any, ...], dict[str, Any]]


def _items(values: Any, columns: tuple[str, ...]) -> list[Item]:
    """A record's list of attempt, decision or finding dicts as `Item`s (a missing key: None)."""
    return [(tuple(map(value.get, columns)), value) for value in values or ()]


def stored_size(bodies: Sequence[bytes | None], upstream_chunks: Pieces, agent_chunks: Pieces | None) -> int:
    """The bytes of body a call keeps with capture "full" (the `size` column)."""
    size = 0
    for body in bodies:
        if body:
            size += len(body)
    for _, data in upstream_chunks:
        size += len(data)
    for _, data in agent_chunks or ():
        size += len(data)
    return size


def append_rows(
    lists: Lists,
    calls_row: tuple[Any, ...],
    full: bool,
    request_headers: Headers,
    response_headers: Headers,
    bodies: Sequence[bytes | None],
    upstream_chunks: Pieces,
    agent_chunks: Pieces | None,
    texts: tuple[str, str, Any] | None,
    attempts: Sequence[Item],
    decisions: Sequence[Item],
    findings: Sequence[Item],
    extra: dict[str, Any] | None,
) -> None:
    """Append one call's rows to `lists`: the one row builder behind both `record_rows` (a record
    dict) and `writing.Rows.add_call` (a Call), which only gather its inputs. `bodies` are the four
    of `_BODY_COLUMNS`, `texts` the index's (request text, response text, message: parsed, or as
    stored, `StoredJson`) with capture "full" (None otherwise), the headers already without
    credentials; each attempt, decision and finding comes as its `*_COLUMNS` values and its whole
    dict (`Item`)."""
    calls, body_rows, chunks, attempt_rows, events, text_rows = lists
    call_id = calls_row[0]
    calls.append(calls_row)
    message = None
    if texts is not None:
        request_text, response_text, message = texts
        text_rows.append((call_id, request_text, response_text))
    if full:
        for seq, (t_ms, data) in enumerate(upstream_chunks):
            chunks.append((call_id, 0, seq, t_ms, data))
        if agent_chunks:
            for seq, (t_ms, data) in enumerate(agent_chunks):
                chunks.append((call_id, 1, seq, t_ms, data))
    body_rows.append(
        (
            call_id,
            dumps(request_headers),
            dumps(response_headers),
            *(bodies if full else (None, None, None, None)),
            1 if full and agent_chunks is not None else 0,
            None if message is None else message if isinstance(message, StoredJson) else dumps(message),
            dumps(extra) if extra else None,
        )
    )
    for seq, (columns, attempt) in enumerate(attempts):
        attempt_rows.append((call_id, seq, *columns, dumps(attempt)))
    seq = 0
    for (stage, action, rule), decision in decisions:
        events.append((call_id, seq, "decision", stage, action, rule, dumps(decision)))
        seq += 1
    for (action, entity), finding in findings:
        events.append((call_id, seq, "finding", None, action, entity, dumps(finding)))
        seq += 1


def record_rows(record: Record, capture: str, index: Indexer, lists: Lists) -> None:
    """Append the rows of a `Call.to_record()` dict (an imported bundle's, a custom indexer's) to
    `lists`. Keys the schema has no home for are kept in `bodies.extra`."""
    full = capture == "full"
    get = record.get
    upstream_chunks = get("chunks") or []
    agent_chunks = get("agent_chunks")
    bodies = tuple(get(key) for key in _BODY_COLUMNS)
    size = stored_size(bodies, upstream_chunks, agent_chunks) if full else 0
    meta = get("meta")
    calls_row = record_row(
        get, len(get("attempts") or ()), "full" if full else "metadata", size, dumps(meta) if meta else "{}"
    )
    append_rows(
        lists,
        calls_row,
        full,
        # Defence in depth: to_record already removed credentials; never let one reach the file.
        public_headers(get("request_headers") or []),
        public_headers(get("response_headers") or []),
        bodies,
        upstream_chunks,
        agent_chunks,
        index(record) if full else None,
        _items(get("attempts"), ATTEMPT_COLUMNS),
        _items(get("decisions"), DECISION_COLUMNS),
        _items(get("findings"), FINDING_COLUMNS),
        {k: v for k, v in record.items() if k not in _KNOWN_KEYS},
    )
