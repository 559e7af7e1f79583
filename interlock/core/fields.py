"""The recorded Call, described once: which of its fields are kept, where each goes, how it is stored.

Every encoding of a `Call` is derived from `FIELDS`: the record dict (`Call.to_record` /
`from_record`), the `calls` row and its column list (`rows.py`; the writer's fast path and the
record path build it with the same generated function), and the scalar part of the tuple that
crosses to the OTel export process (`otel.process.to_wire` / `from_wire`). Adding a recorded
field is one line here plus a schema migration (`schema.py`) when it has a column of its own
(docs/store.md); `tests/core/test_fields.py` fails for a `Call` attribute that is in neither
this table nor `NOT_RECORDED`.

This module imports nothing from interlock: the store, the exporter and the `Call` all read it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

#: How a field is kept in the `calls` table:
#: - "value": as it is;
#: - "flag": a bool as 0/1 (read back as a bool);
#: - "text": a string, None kept as "";
#: - "json": a dict as compact JSON text, empty as "{}" (`meta`);
#: - "derived": a column the row builder computes (not a `Call` attribute, not in the record);
#: - None: no column of its own (a body: the `bodies` table holds it).
Column = Literal["value", "flag", "text", "json", "derived"] | None


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    column: Column = "value"
    #: Among the columns list views read (`rows.LIST_COLUMNS`).
    listed: bool = True
    #: Crosses to the OTel export process as it is (bodies and the structured fields cross by
    #: their own rules in `otel.process.to_wire`: cut, filtered or left out with capture off).
    wire: bool = True


#: The scalar fields of a recorded Call. Those with a column are in the order of the `calls`
#: INSERT, which the hash chain fixes: the first `rows.CHAINED_WIDTHS["calls"]` are hashed by
#: position (schema 5), so a new column goes at the END of this group, never between (it is then
#: hashed by name; `chain.Table.added`), and needs a migration in `schema.py`.
FIELDS: tuple[Field, ...] = (
    Field("id"),
    Field("trace_id"),
    Field("span_id"),
    Field("session"),
    Field("agent"),
    Field("route"),
    Field("protocol"),
    Field("method"),
    Field("path"),
    Field("model"),
    # Not exported: masked of credentials already, but no span attribute reads it.
    Field("query", "text", listed=False, wire=False),
    Field("stream", "flag"),
    Field("status"),
    Field("outcome"),
    Field("error_code"),
    Field("error"),
    Field("started_at"),
    Field("ttfb_ms"),
    Field("duration_ms"),
    Field("input_tokens"),
    Field("output_tokens"),
    Field("attempt_count", "derived", wire=False),
    Field("upstream", wire=False),
    Field("truncated", "flag"),
    Field("rescued", "flag"),
    Field("capture", "derived", wire=False),
    Field("size", "derived", wire=False),
    Field("workflow"),
    Field("cost_usd"),
    Field("cost_source"),
    Field("parent_span_id", listed=False),
    Field("meta", "json", listed=False, wire=False),
    # -- no column: the `bodies` table (rows.INSERT_BODY) holds them, with capture "full" only.
    Field("request_body", None, listed=False, wire=False),
    Field("upstream_body", None, listed=False, wire=False),
    Field("response_body", None, listed=False, wire=False),
    Field("agent_response_body", None, listed=False, wire=False),
)

#: Record keys of the structured fields, each written by its own code in `rows.py` (and in the
#: record as plain lists: `Call.to_record`): headers (credentials removed) and bodies' extra to the
#: `bodies` table, chunks to `chunks`, attempts to `attempts`, decisions and findings to `events`.
STRUCTURED = (
    "request_headers",
    "response_headers",
    "chunks",
    "agent_chunks",
    "decisions",
    "findings",
    "attempts",
)

#: `Call` attributes that are never recorded, and why.
NOT_RECORDED = {
    "started": "a monotonic clock reading, meaningless in another process (started_at is recorded)",
    "request_json": "the parsed request, recorded as request_body/upstream_body",
    "request_changed": "a flag for the forwarder, its effect is upstream_body",
    "view": "derived from the request by the protocol adapter (replay and export re-derive it)",
    "response_view": "the adapter's reading of the response: read again from the recorded bodies",
    "reply": "interlock's own reply: its status, body and outcome are recorded",
    "supplied": "a supplied response: recorded as the response, and meta['supplied_by']",
    "guardrails": "the actions that apply, rebuilt from the policy; the decisions are recorded",
    "loop_rules": "the loop rules that apply, rebuilt from the policy",
    "upstream_query": "the query with credentials: only the upstream request may see it",
    "readers": "what must read the response, for the proxy only",
    "halted": "the kill switch's reason: outcome and error are recorded",
}

#: The `calls` columns, in INSERT order.
CALL_COLUMNS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.column is not None)
#: The columns list views read.
LIST_COLUMNS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.column is not None and f.listed)
#: The 0/1 columns, read back as bools.
FLAG_COLUMNS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.column == "flag")
#: The scalar keys of a record: `Call` attributes kept as they are (meta is copied, so not here).
RECORD_SCALARS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.column not in ("derived", "json"))
#: Every key a record may have that the store has a home for (the rest go to `bodies.extra`).
RECORD_KEYS: frozenset[str] = frozenset({*RECORD_SCALARS, "meta", *STRUCTURED})
#: The scalar fields that cross to the OTel export process as they are, in wire order.
WIRE_SCALARS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.wire)

#: Builds a `calls` row: (source, attempt_count, capture, size, meta_json) -> the row tuple.
RowBuilder = Callable[[Any, int, str, int, str], tuple[Any, ...]]


def _row_builder(read: Callable[[str], str], parameter: str) -> RowBuilder:
    """A function that returns a `calls` row as one tuple display, generated from `FIELDS` (as
    `dataclasses` generates `__init__`): the writer thread builds one per recorded call, and a loop
    over the table, or `getattr` by name, cost more than the hand-written tuple this replaces.
    `read(name)` is the Python expression that reads field `name` from `parameter`."""
    items = []
    for f in FIELDS:
        value = read(f.name)
        if f.column == "value":
            items.append(value)
        elif f.column == "flag":
            items.append(f"1 if {value} else 0")
        elif f.column == "text":
            items.append(f'{value} or ""')
        elif f.column == "json":
            items.append("meta_json")
        elif f.column == "derived":
            items.append(f.name)
    source = f"def calls_row({parameter}, attempt_count, capture, size, meta_json):\n    return ({', '.join(items)},)\n"
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # noqa: S102 - the source is built above from FIELDS' names only
    builder: RowBuilder = namespace["calls_row"]
    return builder


#: The `calls` row of a `Call` (its attributes) and of a record (`record.get`, the second argument).
call_row: RowBuilder = _row_builder(lambda name: f"call.{name}", "call")
record_row: RowBuilder = _row_builder(lambda name: f'get("{name}")', "get")
