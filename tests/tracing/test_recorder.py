"""The Recorder stage alone: batches, overflow that is counted and still written, and draining on close."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from interlock.config import Store as StoreSettings
from interlock.core.call import Call, Chunk, new_id
from interlock.tracing.recorder import Recorder
from interlock.tracing.store import Store
from interlock.tracing.text import record_texts


def a_call(text: str = "hello") -> Call:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]}).encode()
    return Call(
        id=new_id(), route="openai", protocol="openai", method="POST", path="/chat/completions", request_body=body
    )


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with Store(tmp_path / "r.db") as opened:
        yield opened


def test_done_queues_and_the_writer_batches(store: Store) -> None:
    recorder = Recorder(store, StoreSettings(batch_size=10, batch_interval_ms=20))
    recorder.start()
    calls = [a_call() for _ in range(35)]

    async def finish_all() -> None:
        for call in calls:
            await recorder.done(call)

    asyncio.run(finish_all())
    assert recorder.flush()
    assert store.count_calls() == 35
    counters = recorder.counters()
    assert counters["written"] == 35 and counters["overflow"] == 0 and counters["batches"] >= 4
    recorder.close()


def test_a_full_queue_is_counted_and_still_written(store: Store) -> None:
    recorder = Recorder(store, StoreSettings(queue_size=2))
    # No writer thread yet: the queue fills after two calls.
    calls = [a_call(f"call {i}") for i in range(5)]

    async def finish_all() -> None:
        for call in calls:
            await recorder.done(call)

    asyncio.run(finish_all())
    assert recorder.overflow == 3 and recorder.enqueued == 2
    assert store.count_calls() == 3  # the fallback thread wrote the overflow at once
    recorder.close()  # drains the two queued ones
    assert {c.id for c in store.iter_calls()} == {c.id for c in calls}
    assert recorder.counters()["overflow"] == 3 and recorder.counters()["written"] == 5


def test_close_writes_everything_still_queued(store: Store) -> None:
    # A batch interval far longer than the test: only close() can have written these.
    recorder = Recorder(store, StoreSettings(batch_size=1000, batch_interval_ms=600_000))
    recorder.start()
    calls = [a_call() for _ in range(50)]

    async def finish_all() -> None:
        for call in calls:
            await recorder.done(call)

    asyncio.run(finish_all())
    recorder.close()
    assert store.count_calls() == 50


def test_a_record_that_cannot_be_written_does_not_cost_its_batch(store: Store) -> None:
    recorder = Recorder(store, StoreSettings(batch_size=10, batch_interval_ms=600_000))
    good = [a_call() for _ in range(3)]
    bad = a_call()
    bad.meta["unserialisable"] = threading.Lock()

    async def finish_all() -> None:
        for call in [good[0], bad, *good[1:]]:
            await recorder.done(call)

    asyncio.run(finish_all())
    recorder.close()
    assert {c.id for c in store.iter_calls()} == {c.id for c in good}
    assert recorder.counters()["write_errors"] == 1


def test_a_row_that_breaks_not_null_is_counted_and_logged_never_dropped_silently(store: Store, caplog: Any) -> None:
    """`INSERT OR IGNORE` also skipped a row breaking NOT NULL while the writer counted it written;
    `ON CONFLICT DO NOTHING` skips only a row already stored (a batch written again)."""
    recorder = Recorder(store, StoreSettings(batch_size=10, batch_interval_ms=600_000))
    good, bad = a_call(), a_call()
    bad.agent = None  # type: ignore[assignment]  # a caller's type error: the calls row needs an agent

    async def finish_all() -> None:
        for call in (good, bad):
            await recorder.done(call)

    with caplog.at_level(logging.ERROR, logger="interlock.recorder"):
        asyncio.run(finish_all())
        recorder.close()
    assert [c.id for c in store.iter_calls()] == [good.id]
    assert recorder.counters()["write_errors"] == 1 and recorder.counters()["written"] == 1
    assert any(bad.id in r.getMessage() for r in caplog.records)
    assert store.write([good.to_record()]) == 0  # written again: skipped, not an error


def test_done_does_no_serialisation_on_the_loop(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook only queues the call; building its record, JSON and indexing happen in the writer thread."""
    recorder = Recorder(store, StoreSettings())
    loop_thread: list[int] = []
    seen: list[int] = []
    import interlock.tracing.writing as writing_module

    real_dumps = writing_module.dumps

    def spying_dumps(value: Any) -> str:
        seen.append(threading.get_ident())
        return real_dumps(value)

    monkeypatch.setattr(writing_module, "dumps", spying_dumps)
    real_add_call = writing_module.Rows.add_call

    def spying_add_call(rows: Any, call: Call, capture: str, **options: Any) -> None:
        seen.append(threading.get_ident())
        real_add_call(rows, call, capture, **options)

    monkeypatch.setattr(writing_module.Rows, "add_call", spying_add_call)

    async def finish() -> None:
        loop_thread.append(threading.get_ident())
        await recorder.done(a_call())
        assert seen == []

    recorder.start()
    asyncio.run(finish())
    recorder.close()
    assert seen and loop_thread[0] not in seen


def test_the_index_uses_the_reassembled_stream() -> None:
    call = a_call("what is the capital?")
    call.stream = True
    call.chunks = [
        Chunk(1.0, b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"Par"}}]}\n\n'),
        Chunk(2.0, b'data: {"choices":[{"index":0,"delta":{"content":"is"},"finish_reason":"stop"}]}\n\n'),
        Chunk(3.0, b"data: [DONE]\n\n"),
    ]
    request, response, message = record_texts(call.to_record())
    assert "what is the capital?" in request
    assert response == "Paris"
    assert message["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": "Paris", "refusal": None},
        "logprobs": None,
        "finish_reason": "stop",
    }


def finish_all(recorder: Recorder, calls: list[Call]) -> None:
    async def run() -> None:
        for call in calls:
            await recorder.done(call)

    asyncio.run(run())


def test_calls_with_text_sqlite_cannot_take_are_recorded_not_lost(store: Store, caplog: Any) -> None:
    lone_surrogate = a_call()
    lone_surrogate.request_body = b'{"messages":[{"content":"broken \\ud800 escape, still findable"}]}'
    deep = a_call()
    deep.request_body = b"[" * 5000 + b'"deep"' + b"]" * 5000  # json.loads: RecursionError
    meta = a_call("meta surrogate")
    meta.meta["tool_args"] = "\udcff"
    fine = [a_call("fine") for _ in range(3)]
    recorder = Recorder(store, StoreSettings(batch_size=10, batch_interval_ms=600_000))
    recorder.start()
    finish_all(recorder, [fine[0], lone_surrogate, deep, fine[1], meta, fine[2]])
    recorder.close()
    assert recorder.counters()["write_errors"] == 0 and recorder.counters()["written"] == 6
    assert store.count_calls() == 6
    assert [r["id"] for r in store.list_calls(q="findable")] == [lone_surrogate.id]
    assert [r["id"] for r in store.list_calls(q="deep")] == [deep.id]
    got = store.get_call(meta.id)
    assert got is not None and got.meta["tool_args"] == "?"


def test_a_call_is_searchable_once_flush_returns(store: Store) -> None:
    recorder = Recorder(store, StoreSettings(batch_interval_ms=20))
    recorder.start()
    calls = [a_call(f"needle{i} in the haystack") for i in range(40)]
    finish_all(recorder, calls)
    assert recorder.flush()
    assert [r["id"] for r in store.list_calls(q="needle7")] == [calls[7].id]
    assert len(store.list_calls(q="haystack", limit=100)) == 40
    recorder.close()


def test_the_writer_sleeps_when_idle_and_wakes_for_the_next_call(store: Store) -> None:
    recorder = Recorder(store, StoreSettings(batch_interval_ms=1))
    recorder.start()
    for round_ in range(3):
        finish_all(recorder, [a_call(f"round {round_}")])
        assert recorder.flush()
        assert store.count_calls() == round_ + 1
    assert recorder.counters()["batches"] == 3
    recorder.close()


def test_calls_finishing_while_it_closes_are_all_written(store: Store) -> None:
    recorder = Recorder(store, StoreSettings(batch_size=7, batch_interval_ms=5))
    recorder.start()
    calls = [a_call() for _ in range(300)]
    closer = threading.Thread(target=recorder.close)

    async def run() -> None:
        for i, call in enumerate(calls):
            if i == 150:
                closer.start()
            await recorder.done(call)

    asyncio.run(run())
    closer.join()
    assert recorder.flush()
    assert store.count_calls() == 300
    counters = recorder.counters()
    assert counters["written"] == 300 and counters["write_errors"] == 0 and counters["queue"] == 0


def test_a_queue_that_fills_up_spills_to_the_fallback_and_loses_nothing(store: Store) -> None:
    recorder = Recorder(store, StoreSettings(queue_size=5, batch_size=3, batch_interval_ms=50))
    recorder.start()
    calls = [a_call() for _ in range(60)]
    finish_all(recorder, calls)
    assert recorder.flush()
    recorder.close()
    assert store.count_calls() == 60
    counters = recorder.counters()
    assert counters["overflow"] > 0 and counters["written"] == 60 and counters["write_errors"] == 0


class _HeldStore(Store):
    """A real store whose first chunk write waits for the test: a large call caught mid-write."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writing = threading.Event()
        self.release = threading.Event()

    def write_chunks(self, rows: Any) -> None:
        self.writing.set()
        assert self.release.wait(60)
        super().write_chunks(rows)


def test_close_out_of_time_waits_for_the_large_piece_in_hand_then_spills_the_call(tmp_path: Path) -> None:
    """shutdown_grace runs out while a large call is being written by pieces: close() must not return
    (and the store be closed under the write, which crashes SQLite) before that piece is done, and the
    call goes whole to the side file instead of being left half-written."""
    store = _HeldStore(tmp_path / "r.db")
    spill = tmp_path / "r.spill"
    recorder = Recorder(store, StoreSettings(large_call_bytes=1024, spill_path=str(spill)))
    recorder.start()
    big = a_call("big")
    big.chunks = [Chunk(float(i), b"x" * 1024) for i in range(8)]

    async def finish() -> None:
        await recorder.done(big)

    asyncio.run(finish())
    assert store.writing.wait(60)  # the large call's first piece is being written
    closing = threading.Thread(target=recorder.close, kwargs={"timeout": 0})
    closing.start()
    assert recorder._abandon.wait(60)
    assert closing.is_alive()  # still waiting for the piece in hand
    store.release.set()
    closing.join(60)
    assert not closing.is_alive()
    assert [json.loads(line)["id"] for line in spill.read_text().splitlines()] == [big.id]
    assert store.count_calls() == 0  # not half-written: the call appears whole at the next start
    store.close()
