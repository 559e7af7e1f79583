"""The SQLite store on its own: round trip, queries, full-text search, sessions, export, migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from interlock.core.call import Attempt, Call, Chunk, Decision, Finding
from interlock.testing import make_call
from interlock.tracing.schema import SCHEMA_VERSION, SchemaError
from interlock.tracing.store import Store, StoreError, fts_query
from tests.tracing.frozen_schema import frozen


def full_call() -> Call:
    call = make_call(
        agent="planner",
        session="sess-1",
        trace_id="ab" * 16,
        span_id="cd" * 8,
        parent_span_id="ef" * 8,
        query="api-version=1",
        upstream_body=b'{"model":"gpt-4o-2024","messages":[]}',
        agent_response_body=b'{"redacted":true}',
        stream=True,
        chunks=[Chunk(12.5, b'data: {"a":1}\n\n'), Chunk(30.25, b"data: [DONE]\n\n")],
        agent_chunks=[Chunk(12.5, b'data: {"a":2}\n\n')],
        outcome="upstream_error",
        error="boom",
        error_code="http_500",
        truncated=True,
        rescued=True,
        input_tokens=11,
        output_tokens=7,
        ttfb_ms=12.5,
        duration_ms=31.0,
        upstream="primary",
        meta={"finish_reasons": ["stop"], "cost": 0.25, "nested": {"k": [1, "two"]}},
    )
    call.attempts = [
        Attempt("primary", "http://a/v1/chat/completions", "gpt-4o", 0.0, 5.0, 4.0, 500, None, 0.0),
        Attempt("backup", "http://b/v1/chat/completions", None, 205.0, 20.0, 10.0, None, "ConnectError", 200.0),
    ]
    call.decide(Decision("policy", "allow", "rule-1", "fine", {"why": [1, 2]}))
    call.decide(Decision("limits", "modify", None, "clamped max_tokens"))
    call.findings = [Finding("EMAIL_ADDRESS", "request.messages[0].content", 3, 18, 0.95, "redact", None)]
    return call


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "calls.db") as opened:
        yield opened


def test_a_call_round_trips_field_for_field(store: Store) -> None:
    call = full_call()
    store.add(call)
    got = store.get_call(call.id)
    assert got is not None
    assert got.to_record() == call.to_record()
    assert store.get_call("nope") is None


def test_empty_and_missing_bodies_stay_distinct(store: Store) -> None:
    call = make_call(request_body=b"", response_body=None, chunks=[], agent_chunks=[])
    store.add(call)
    got = store.get_call(call.id)
    assert got is not None
    assert got.request_body == b"" and got.response_body is None and got.agent_chunks == []
    assert got.to_record() == call.to_record()


def test_unknown_record_keys_round_trip(store: Store) -> None:
    record = make_call().to_record()
    record["from_the_future"] = {"blob": b"\x00\x01", "n": 3}
    store.write([record])
    assert store.get_record(record["id"])["from_the_future"] == {"blob": b"\x00\x01", "n": 3}


def test_secret_headers_never_reach_the_file(store: Store) -> None:
    record = make_call().to_record()
    # Even a record that skipped `public_headers` is cleaned on the way in.
    record["request_headers"] = [("authorization", "Bearer sk-very-secret"), ("x-api-key", "key-123"), ("a", "b")]
    store.write([record])
    store.close()
    data = b"".join(p.read_bytes() for p in Path(store.path).parent.iterdir())
    assert b"sk-very-secret" not in data and b"key-123" not in data


def test_metadata_capture_keeps_no_bodies_or_chunks(store: Store) -> None:
    call = full_call()
    store.add(call, capture="metadata")
    got = store.get_call(call.id)
    assert got is not None
    assert got.request_body == b"" and got.response_body is None and got.upstream_body is None
    assert got.chunks == [] and got.agent_chunks is None
    assert [d.rule for d in got.decisions] == ["rule-1", None] and got.attempts == call.attempts
    assert got.request_headers == call.request_headers and got.outcome == "upstream_error"
    assert store.call_row(call.id)["capture"] == "metadata"
    assert store.list_calls(q="lighthouse") == []


def test_writing_the_same_call_twice_keeps_one_copy(store: Store) -> None:
    call = full_call()
    assert store.write([call.to_record()]) == 1
    assert store.write([call.to_record(), make_call().to_record()]) == 1
    assert store.count_calls() == 2
    assert len(store.list_calls(q="lighthouse")) == 2
    got = store.get_call(call.id)
    assert got is not None and got.to_record() == call.to_record()


def test_list_filters_and_pages_newest_first(store: Store) -> None:
    calls = [
        make_call(agent="a" if i % 2 else "b", session=f"s{i % 3}", route="r", started_at=1000.0 + i) for i in range(7)
    ]
    calls[3].outcome = "denied"
    store.write([c.to_record() for c in calls])
    ids = [c.id for c in calls]
    assert [r["id"] for r in store.list_calls()] == ids[::-1]
    assert [r["id"] for r in store.list_calls(agent="a")] == [ids[5], ids[3], ids[1]]
    assert [r["id"] for r in store.list_calls(session="s0")] == [ids[6], ids[3], ids[0]]
    assert [r["id"] for r in store.list_calls(outcome="denied")] == [ids[3]]
    assert [r["id"] for r in store.list_calls(since=1002.0, until=1004.0)] == [ids[3], ids[2]]
    page1 = store.list_calls(limit=3)
    page2 = store.list_calls(limit=3, before=page1[-1]["id"])
    assert [r["id"] for r in page1 + page2] == ids[::-1][:6]
    assert [r["id"] for r in store.list_calls(after=ids[4])] == ids[5:]
    row = page1[0]
    assert row["stream"] is False and row["attempt_count"] == 0 and row["model"] == "gpt-4o"
    assert set(row) >= {"trace_id", "span_id", "ttfb_ms", "input_tokens", "upstream", "truncated", "error_code"}


def test_iter_calls_yields_full_calls_in_time_order(store: Store) -> None:
    calls = [make_call(started_at=2000.0 - i, agent="x" if i < 3 else "y") for i in range(5)]
    store.write([c.to_record() for c in calls])
    got = list(store.iter_calls())
    assert [c.id for c in got] == [c.id for c in calls][::-1]
    assert all(isinstance(c, Call) and c.request_body for c in got)
    assert [c.id for c in store.iter_calls(agent="x", since=1999.0)] == [calls[1].id, calls[0].id]


def test_full_text_search_over_request_and_response(store: Store) -> None:
    one = make_call()
    two = make_call(
        request_body=b'{"messages":[{"role":"user","content":"tell me about owls"}]}',
        response_body=b'{"content":[{"type":"text","text":"Owls hunt at night, e.g. barn-owls."}]}',
    )
    store.write([one.to_record(), two.to_record()])
    assert [r["id"] for r in store.list_calls(q="lighthouse")] == [one.id]
    assert [r["id"] for r in store.list_calls(q="northern")] == [one.id]
    assert [r["id"] for r in store.list_calls(q="owls night")] == [two.id]
    assert [r["id"] for r in store.list_calls(q="barn-owls")] == [two.id]  # punctuation is not FTS syntax here
    assert store.list_calls(q="owls lighthouse") == []
    assert {r["id"] for r in store.list_calls(q="owls OR lighthouse")} == {one.id, two.id}
    with pytest.raises(StoreError, match="bad search query"):
        store.list_calls(q='"unbalanced')


def test_fts_query_quotes_plain_words() -> None:
    assert fts_query("barn-owls at:night") == "barn-owls at:night"
    assert fts_query("barn-owls night") == '"barn-owls" "night"'


def test_sessions_group_calls_and_name_their_agents(store: Store) -> None:
    store.write(
        [
            make_call(session="s1", agent="planner", started_at=10.0, input_tokens=5, output_tokens=1).to_record(),
            make_call(session="s1", agent="coder", started_at=11.0, input_tokens=7, output_tokens=2).to_record(),
            make_call(session="s2", agent="coder", started_at=20.0, outcome="denied").to_record(),
            make_call(session=None, agent="coder", started_at=30.0).to_record(),
        ]
    )
    sessions = store.sessions()
    assert [s["session"] for s in sessions] == ["s2", "s1"]
    s1 = sessions[1]
    assert s1["calls"] == 2 and s1["agents"] == ["coder", "planner"] and s1["agent"] is None
    assert (s1["input_tokens"], s1["output_tokens"], s1["first_at"], s1["last_at"]) == (12, 3, 10.0, 11.0)
    assert sessions[0]["problems"] == 1 and sessions[0]["agent"] == "coder"
    assert [s["session"] for s in store.sessions(agent="planner")] == ["s1"]
    detail = store.session("s1")
    assert detail is not None and [c["agent"] for c in detail["calls"]] == ["planner", "coder"]
    assert store.session("missing") is None
    assert {a["agent"]: a["calls"] for a in store.agents()} == {"coder": 3, "planner": 1}


def test_export_writes_a_self_contained_file_with_only_those_calls(store: Store, tmp_path: Path) -> None:
    keep = [full_call(), make_call(session="sess-1")]
    other = make_call(session="other")
    store.write([c.to_record() for c in [*keep, other]])
    dest = tmp_path / "bundle" / "incident.db"
    assert store.export(dest, session="sess-1") == 2
    assert sorted(p.name for p in dest.parent.iterdir()) == ["incident.db"]  # no -wal or -shm beside it
    with Store(dest, readonly=True) as exported:
        assert exported.schema_version == SCHEMA_VERSION
        assert {c.id for c in exported.iter_calls()} == {c.id for c in keep}
        got = exported.get_call(keep[0].id)
        assert got is not None and got.to_record() == keep[0].to_record()
        assert [r["id"] for r in exported.list_calls(q="lighthouse")] == [keep[1].id, keep[0].id]
    # Exporting again replaces the file.
    assert store.export(dest, agent="nobody") == 0
    with Store(dest, readonly=True) as exported:
        assert exported.count_calls() == 0


def test_import_adds_new_calls_and_skips_known_ones(store: Store, tmp_path: Path) -> None:
    first, second = full_call(), make_call()
    store.write([first.to_record(), second.to_record()])
    store.export(tmp_path / "out.db")
    with Store(tmp_path / "other.db") as other:
        other.add(first)
        assert other.import_from(tmp_path / "out.db") == 1
        assert other.import_from(tmp_path / "out.db") == 0
        assert other.count_calls() == 2
        got = other.get_call(first.id)
        assert got is not None and got.to_record() == first.to_record()
        assert len(other.list_calls(q="lighthouse")) == 2
    with pytest.raises(StoreError):
        store.import_from(tmp_path / "missing.db")


def test_retention_by_age_removes_everything_of_old_calls(store: Store) -> None:
    old = full_call()
    old.started_at = 1000.0
    new = make_call(started_at=5000.0)
    store.write([old.to_record(), new.to_record()])
    assert store.prune(max_age=100, now=5050.0) == 1
    assert store.get_call(old.id) is None and store.get_call(new.id) is not None
    for table in ("bodies", "chunks", "attempts", "events"):
        assert store.conn.execute(f"SELECT count(*) FROM {table} WHERE call_id = ?", (old.id,)).fetchone()[0] == 0
    assert store.conn.execute("SELECT count(*) FROM calls_fts").fetchone()[0] == 1


def test_retention_by_size_drops_the_oldest_first(store: Store) -> None:
    # An empty store's file is the schema's pages (~0.85 MB at version 7: a page per table and
    # index); the limit and the space given back are counted above that.
    store.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    empty = Path(store.path).stat().st_size
    big = b'{"x":"' + b"y" * 20000 + b'"}'
    calls = [make_call(request_body=big, started_at=float(i)) for i in range(60)]
    store.write([c.to_record() for c in calls])
    store.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    size_before = Path(store.path).stat().st_size
    limit = empty + (store.used_bytes() - empty) // 3
    removed = store.prune(max_size=limit)
    assert removed > 0 and store.used_bytes() <= limit
    remaining = [c.id for c in store.iter_calls()]
    assert remaining == [c.id for c in calls][removed:]  # the newest survive, in order
    assert Path(store.path).stat().st_size - empty < (size_before - empty) / 2  # space went back to the disk


def test_schema_is_versioned(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION
    with Store(path) as store:  # reopening does not migrate twice
        assert store.schema_version == SCHEMA_VERSION
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaError, match="newer than this interlock"):
        Store(path)
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(SchemaError, match="not an interlock store"):
        Store(foreign)


def test_a_version_1_store_is_migrated_with_its_calls_kept(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    frozen(conn, 1)  # the store as version 1 left it, with a call written then
    conn.execute(
        "INSERT INTO calls (id, agent, route, protocol, method, path, outcome, started_at)"
        " VALUES ('old', 'a', 'openai', 'openai', 'POST', '/chat/completions', 'ok', 1.0)"
    )
    conn.commit()
    conn.close()
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        old = store.get_call("old")
        assert old is not None and old.rescued is False
        call = full_call()
        store.add(call)
        got = store.get_call(call.id)
        assert got is not None and got.rescued is True


def test_a_file_that_is_not_sqlite_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database, just some text " * 100)
    with pytest.raises(StoreError, match="junk.db"):
        Store(path)
    with pytest.raises(StoreError, match="no such store"):
        Store(tmp_path / "absent.db", readonly=True)


def test_readonly_store_refuses_writes(store: Store, tmp_path: Path) -> None:
    store.add(make_call())
    with Store(store.path, readonly=True) as reader:
        assert reader.count_calls() == 1
        assert reader.db["calls"].count == 1  # sqlite-utils over the same connection
        with pytest.raises(sqlite3.OperationalError):
            reader.add(make_call())


def test_iter_calls_pages_through_many_calls_once_each(store: Store) -> None:
    # 450 calls, many sharing a start time, crossing the 200-call pages at a tie.
    calls = [make_call(started_at=100.0 + i // 150, agent="a") for i in range(450)]
    calls[10].attempts = [Attempt("u", "http://u")]
    calls[399].decide(Decision("policy", "deny", "r"))
    store.write([c.to_record() for c in calls])
    got = list(store.iter_calls(agent="a"))
    assert [c.id for c in got] == [c.id for c in calls]
    assert got[10].attempts == calls[10].attempts and got[399].decisions == calls[399].decisions
    assert got[11].attempts == [] and got[398].decisions == []
