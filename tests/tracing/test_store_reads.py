"""The store's read queries (`interlock/tracing/reads.py`): sessions paged first, one search-error path,
narrow rows, a call's neighbours in its session, and the split from the writing half."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from interlock.core.call import Attempt, Finding
from interlock.testing import make_call
from interlock.tracing.reads import LIST_EXTRAS, Reads
from interlock.tracing.rows import narrow_rows
from interlock.tracing.store import LIST_COLUMNS, Store, StoreError, fts_query


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "calls.db") as opened:
        yield opened


@pytest.fixture
def statements(store: Store) -> Iterator[list[str]]:
    """Every SQL statement this thread's connection runs from here on."""
    seen: list[str] = []
    store.conn.set_trace_callback(seen.append)
    yield seen
    store.conn.set_trace_callback(None)


def three_sessions(store: Store) -> None:
    owls = b'{"messages":[{"role":"user","content":"tell me about owls"}]}'
    a, b = (
        make_call(session="a", agent="planner", started_at=10.0, duration_ms=500.0),
        make_call(
            session="a",
            agent="coder",
            route="tools",
            started_at=12.0,
            duration_ms=1000.0,
            input_tokens=3,
            output_tokens=4,
        ),
    )
    b.attempts = [Attempt("p", "u", None, 0.0, 1.0, 1.0, 503, None, 0.0), Attempt("p", "u", None, 5.0, 1.0, 1.0, 200)]
    b.findings = [Finding("EMAIL_ADDRESS", "request", 0, 3, 0.9, "redact", None)]
    store.write(
        [
            a.to_record(),
            b.to_record(),
            make_call(session="b", agent="coder", started_at=20.0, outcome="denied", request_body=owls).to_record(),
            make_call(session="c", agent="coder", started_at=5.0, outcome="upstream_error").to_record(),
            make_call(session=None, agent="coder", started_at=30.0).to_record(),
        ]
    )


def ids(rows: list[dict[str, object]]) -> list[object]:
    return [r["session"] for r in rows]


def test_sessions_filters_of_the_api_and_the_ui_in_one_method(store: Store) -> None:
    three_sessions(store)
    assert ids(store.sessions()) == ["b", "a", "c"]
    assert ids(store.sessions(agent="planner")) == ["a"]
    assert ids(store.sessions(route="tools")) == ["a"]
    assert ids(store.sessions(outcome="problems")) == ["b", "c"]
    assert ids(store.sessions(outcome="denied")) == ["b"]
    assert ids(store.sessions(q="owls")) == ["b"]
    assert ids(store.sessions(limit=1, offset=1)) == ["a"]
    # since/until choose calls (the API's window): session a is summarised over its first call only.
    (windowed,) = store.sessions(since=9.0, until=11.0)
    assert (windowed["session"], windowed["calls"], windowed["last_at"]) == ("a", 1, 10.0)
    # active_since keeps whole sessions whose last call is that recent (the UI's time menu).
    (active,) = store.sessions(active_since=11.0, agent="planner")
    assert (active["session"], active["calls"], active["first_at"]) == ("a", 2, 10.0)


def test_a_session_row_has_what_the_api_and_the_ui_show(store: Store) -> None:
    three_sessions(store)
    a = store.sessions(agent="planner")[0]
    assert a["agents"] == ["coder", "planner"] and a["agent"] is None and a["routes"] == ["openai", "tools"]
    assert (a["first_at"], a["last_at"], a["calls"], a["models"]) == (10.0, 12.0, 2, ["gpt-4o"])
    assert (a["input_tokens"], a["output_tokens"], a["tokens"]) == (3, 4, 7)
    assert (a["problems"], a["errors"], a["denials"], a["retries"], a["extra_attempts"], a["findings"]) == (
        0,
        0,
        0,
        1,
        1,
        1,
    )
    assert a["duration_ms"] == 1500.0  # the calls' durations added up
    assert a["elapsed_ms"] == pytest.approx(3000.0)  # first start to last end
    assert store.session_summary("a") == a
    assert store.session_summary("nope") is None
    detail = store.session("a")
    assert detail is not None and [c["agent"] for c in detail["calls"]] == ["planner", "coder"]


def test_sessions_pick_the_page_first_and_aggregate_only_its_sessions(store: Store, statements: list[str]) -> None:
    store.write([make_call(session=f"s{i:02d}", started_at=float(i)).to_record() for i in range(30)])
    statements.clear()
    assert ids(store.sessions(limit=3, offset=2)) == ["s27", "s26", "s25"]
    summary = [s for s in statements if "group_concat" in s]
    assert len(summary) == 1 and "IN ('s27', 's26', 's25')" in summary[0]


def test_ties_in_last_activity_go_by_session_id(store: Store) -> None:
    store.write([make_call(session=s, started_at=5.0).to_record() for s in ("m", "b", "z", "a")])
    assert ids(store.sessions()) == ["a", "b", "m", "z"]
    assert ids(store.sessions(limit=2, offset=1)) == ["b", "m"]


def test_a_malformed_search_is_a_store_error_for_calls_and_sessions(store: Store) -> None:
    three_sessions(store)
    for read in (store.list_calls, store.sessions):
        with pytest.raises(StoreError, match="bad search query"):
            read(q='"unbalanced')


def test_narrow_rows_everywhere_have_bools(store: Store) -> None:
    call = make_call(session="s", stream=True, truncated=True, rescued=True)
    store.write([call.to_record()])
    rows, _ = store.written_since(0)
    session = store.session("s")
    assert session is not None
    for row in (
        store.call_row(call.id),
        store.list_calls()[0],
        rows[0],
        session["calls"][0],
        store.session_calls("s")[0],
    ):
        assert row is not None and set(row) == {*LIST_COLUMNS, *LIST_EXTRAS}
        assert row["stream"] is True and row["truncated"] is True and row["rescued"] is True
    assert narrow_rows([{"stream": 0, "truncated": 1, "rescued": 0}]) == [
        {"stream": False, "truncated": True, "rescued": False}
    ]


def test_session_calls_pages_in_start_order(store: Store) -> None:
    calls = [make_call(session="s", started_at=100.0 - i) for i in range(7)]
    store.write([c.to_record() for c in calls])
    oldest_first = [c.id for c in calls][::-1]
    assert [r["id"] for r in store.session_calls("s", limit=3, offset=2)] == oldest_first[2:5]


def test_an_old_call_in_a_long_session_has_neighbours(store: Store) -> None:
    calls = [make_call(session="long", started_at=1000.0 + i) for i in range(620)]
    store.write([c.to_record() for c in calls] + [make_call(session="other").to_record()])
    first, second, third = (c.id for c in calls[:3])
    assert store.neighbours(first, "long") == {"prev": None, "next": second, "position": 1, "total": 620}
    assert store.neighbours(second, "long") == {"prev": first, "next": third, "position": 2, "total": 620}
    last = store.neighbours(calls[-1].id, "long")
    assert last == {"prev": calls[-2].id, "next": None, "position": 620, "total": 620}
    assert store.neighbours(first, None) == {"prev": None, "next": None, "position": None, "total": None}


def test_neighbours_are_index_seeks(store: Store) -> None:
    for sql in (
        "SELECT id FROM calls WHERE session = ? AND id < ? ORDER BY id DESC LIMIT 1",
        "SELECT id FROM calls WHERE session = ? AND id > ? ORDER BY id LIMIT 1",
    ):
        plan = " ".join(str(r[3]) for r in store.conn.execute(f"EXPLAIN QUERY PLAN {sql}", ("s", "x")))
        assert "COVERING INDEX calls_session (session=? AND id" in plan


def test_store_is_its_writing_half_plus_reads() -> None:
    assert issubclass(Store, Reads)
    assert Store.sessions is Reads.sessions and Store.list_calls is Reads.list_calls
    assert fts_query("barn-owls night") == '"barn-owls" "night"'
    import interlock.tracing.reads as reads_module
    import interlock.tracing.store as store_module

    for module in (store_module, reads_module):  # the house style splits modules past ~500 lines
        assert len(Path(str(module.__file__)).read_text().splitlines()) <= 500
