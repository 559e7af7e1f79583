"""The recorded Call described once (`core/fields.py`): every attribute is in the table or said
not recorded, and the record, the `calls` row and the export wire all follow the table."""

from __future__ import annotations

import sqlite3
from dataclasses import fields as dataclass_fields
from pathlib import Path

from interlock.core import fields
from interlock.core.call import Call
from interlock.otel.process import from_wire, to_wire
from interlock.tracing.rows import INSERT_CALL, insert_columns
from interlock.tracing.store import Store
from interlock.tracing.writing import Rows, write_records
from tests.tracing.test_store import full_call, make_call

COLUMNS = {f.name for f in fields.FIELDS if f.column is not None}


def test_every_call_attribute_is_recorded_or_said_not_to_be() -> None:
    """A field added to `Call` without a line in the table (or in NOT_RECORDED) fails here, instead
    of being silently left out of the store and the export."""
    attributes = {f.name for f in dataclass_fields(Call)}
    recorded = {*fields.RECORD_SCALARS, "meta", *fields.STRUCTURED}
    assert attributes - recorded - set(fields.NOT_RECORDED) == set(), "add it to fields.FIELDS or NOT_RECORDED"
    assert recorded & set(fields.NOT_RECORDED) == set()
    assert recorded - attributes == set(), "a table entry that is not a Call attribute"
    derived = {f.name for f in fields.FIELDS if f.column == "derived"}
    assert derived & attributes == set()


def test_the_record_has_exactly_the_table_keys_and_round_trips() -> None:
    call = full_call()
    call.workflow, call.cost_usd, call.cost_source = "wf-1", 0.5, "prices"
    record = call.to_record()
    assert set(record) == fields.RECORD_KEYS
    again = Call.from_record(record)
    for name in fields.RECORD_SCALARS:
        assert getattr(again, name) == getattr(call, name), name
    assert again.to_record() == record


def test_the_calls_insert_and_schema_follow_the_table(tmp_path: Path) -> None:
    assert insert_columns(INSERT_CALL) == fields.CALL_COLUMNS
    with Store(tmp_path / "s.db") as store:
        stored = {row[1] for row in store.conn.execute("PRAGMA table_info(calls)")}
    # A new column in the table needs its migration in schema.py (and the reverse).
    assert stored - {"seq"} == set(fields.CALL_COLUMNS)


def test_the_calls_row_holds_each_field_in_its_column(tmp_path: Path) -> None:
    call = full_call()
    call.workflow, call.cost_usd, call.cost_source = "wf-1", 0.5, "prices"
    rows = Rows()
    rows.add_call(call, "full")
    row = dict(zip(fields.CALL_COLUMNS, rows.calls[0], strict=True))
    for f in fields.FIELDS:
        value = getattr(call, f.name, None)
        if f.column == "value":
            assert row[f.name] == value, f.name
        elif f.column == "flag":
            assert row[f.name] == (1 if value else 0), f.name
        elif f.column == "text":
            assert row[f.name] == (value or ""), f.name
    assert (row["attempt_count"], row["capture"]) == (len(call.attempts), "full")


def test_a_record_key_the_schema_does_not_know_is_kept_not_dropped(tmp_path: Path) -> None:
    record = make_call().to_record()
    record["from_a_newer_version"] = {"kept": True}
    path = tmp_path / "s.db"
    with Store(path) as store:
        assert write_records(store.conn, [record]) == 1
        back = store.get_record(record["id"])
    assert back is not None and back["from_a_newer_version"] == {"kept": True}
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT extra FROM bodies").fetchone()[0] is not None


def test_every_wire_field_crosses_to_the_export_process() -> None:
    call = full_call()
    call.workflow, call.cost_usd, call.cost_source = "wf-1", 0.5, "prices"
    crossed = from_wire(to_wire(call, capture_content=True))
    for name in fields.WIRE_SCALARS:
        assert getattr(crossed, name) == getattr(call, name), name
    assert {"capture", "size", "attempt_count", "meta"}.isdisjoint(fields.WIRE_SCALARS)


def test_the_attempt_and_event_rows_follow_their_column_lists() -> None:
    from interlock.tracing.rows import ATTEMPT_COLUMNS, INSERT_ATTEMPT, INSERT_EVENT

    assert insert_columns(INSERT_ATTEMPT) == ("call_id", "seq", *ATTEMPT_COLUMNS, "data")
    assert insert_columns(INSERT_EVENT)[3:6] == ("stage", "action", "name")
