"""The side file (tracing/side_file.py): a torn last line read up to its last whole record and
counted lost; an append after one stays whole; one file replayed once however many replayers try;
an append that waited for a replay starts a new file instead of writing to the removed one, and
neither waits for the lock past its bound; worker
0 writes the files of workers an earlier run had and this one has not."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from interlock.config import Store as StoreSettings
from interlock.core.call import Call
from interlock.testing import make_call, wait_for
from interlock.tracing.faults import Holding
from interlock.tracing.recorder import Recorder
from interlock.tracing.rows import dumps
from interlock.tracing.side_file import absent_workers_files, claim
from interlock.tracing.store import Store


def holding(path: Path) -> Holding:
    return Holding("store.db", 0, str(path), 1 << 30, lock_wait=60)


def plant(path: Path, calls: list[Call], tail: bytes = b"") -> None:
    with path.open("ab") as out:
        for call in calls:
            out.write((dumps(call.to_record()) + "\n").encode())
        out.write(tail)


def replayed(side: Holding) -> list[str]:
    ids: list[str] = []
    side.replay(lambda records: ids.extend(record["id"] for record in records), 2)
    return ids


def lost_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "interlock.recorder" and r.levelno == logging.ERROR and "is lost" in r.getMessage()
    ]


def test_a_torn_last_line_is_read_up_to_the_last_whole_record_and_counted(tmp_path: Path, caplog: Any) -> None:
    path = tmp_path / "s.spill"
    calls = [make_call(f"whole {i}") for i in range(3)]
    plant(path, calls, tail=dumps(make_call("torn").to_record()).encode()[:40])  # killed mid-append
    side = holding(path)
    assert replayed(side) == [call.id for call in calls]
    assert side.lost == 1 and not path.exists()
    (message,) = lost_lines(caplog)
    assert message.startswith(f"recording: {path}:4 is lost") and "cut short" in message


def test_a_line_appended_after_a_torn_one_stays_whole(tmp_path: Path) -> None:
    path = tmp_path / "s.spill"
    plant(path, [], tail=b'{"id": "torn')
    side = holding(path)
    after = make_call("after the crash")
    side.spill([after])
    assert side.spilled == 1 and side.lost == 0
    assert replayed(side) == [after.id]
    assert side.lost == 1  # the torn line, once its file is done


def test_a_file_that_cannot_be_written_yet_is_kept_and_its_torn_line_not_counted_twice(tmp_path: Path) -> None:
    path = tmp_path / "s.spill"
    plant(path, [make_call("kept")], tail=b'{"id": "torn')
    side = holding(path)

    def failing(records: list[dict[str, Any]]) -> None:
        raise OSError("the store is still down")

    with pytest.raises(OSError):
        side.replay(failing, 10)
    assert path.exists() and side.lost == 0
    assert len(replayed(side)) == 1 and side.lost == 1


def test_two_replayers_write_one_file_once(tmp_path: Path) -> None:
    path = tmp_path / "s.spill"
    calls = [make_call(f"call {i}") for i in range(200)]
    plant(path, calls)
    seen: list[list[str]] = [[], []]

    def replay(index: int) -> None:
        holding(path).replay(lambda records: seen[index].extend(r["id"] for r in records), 7)

    threads = [threading.Thread(target=replay, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(seen[0] + seen[1]) == sorted(call.id for call in calls)  # all of it, by one of them
    assert not path.exists()


def opened_twice(path: Path) -> bool:
    """Whether this process holds two descriptors on the file at `path` (the replay's, and an append's
    that opened it and tries its lock: the try is not blocking, so /proc/locks shows no waiter)."""
    stat = os.stat(path)
    held = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile (the listing's own descriptor among them)
            found = os.stat(f"/proc/self/fd/{fd}")
            held += (found.st_dev, found.st_ino) == (stat.st_dev, stat.st_ino)
    return held >= 2


def test_an_append_that_waited_for_a_replay_goes_to_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "s.spill"
    old = [make_call(f"old {i}") for i in range(3)]
    plant(path, old)
    side = Holding("store.db", 0, str(path), 1 << 30, lock_wait=600)  # the replay ends first
    late = make_call("spilled during the replay")
    with claim(str(path), 1) as claimed:
        assert claimed is not None
        appender = threading.Thread(target=side.spill, args=([late],))
        appender.start()  # opens the file, then waits for the replay's lock
        wait_for(lambda: opened_twice(path), what="the append waiting for the lock")
        ids = [record["id"] for batch in claimed.batches(10) for record in batch]
        claimed.remove()
    appender.join(60)
    assert ids == [call.id for call in old]
    # It found the file it waited for removed, and started another: not written to the removed one.
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == [late.id]
    assert side.lost == 0


def test_an_append_does_not_wait_out_a_replay_past_its_bound(tmp_path: Path, caplog: Any) -> None:
    path = tmp_path / "s.spill"
    plant(path, [make_call("old")])
    before = path.read_bytes()
    side = Holding("store.db", 0, str(path), 1 << 30, lock_wait=0.05)
    late = make_call("spilled during a long replay")
    with claim(str(path), 1) as claimed:
        assert claimed is not None
        appender = threading.Thread(target=side.spill, args=([late],))
        appender.start()
        appender.join(60)  # the replay holds the lock all along: a blocking lock never returns
        assert not appender.is_alive()
        assert side.lost == 1 and side.spilled == 0  # counted and logged, the one place a call is lost
        assert path.read_bytes() == before
    (message,) = [
        r.getMessage() for r in caplog.records if r.name == "interlock.recorder" and r.levelno >= logging.ERROR
    ]
    assert late.id in message and "store.spill_lock_timeout" in message


def test_a_replay_that_cannot_lock_the_file_in_time_keeps_it_for_the_next_try(tmp_path: Path) -> None:
    path = tmp_path / "s.spill"
    calls = [make_call(f"kept {i}") for i in range(2)]
    plant(path, calls)
    side = Holding("store.db", 0, str(path), 1 << 30, lock_wait=0.05)
    with claim(str(path), 1) as claimed:  # another replayer holds it for long
        assert claimed is not None
        with pytest.raises(TimeoutError):
            replayed(side)
    assert path.exists() and side.lost == 0
    assert replayed(side) == [call.id for call in calls]


def test_absent_workers_files_are_those_past_the_runs_workers(tmp_path: Path) -> None:
    base = tmp_path / "interlock.spill"
    for name in ("interlock.spill", "interlock.spill.w1", "interlock.spill.w2", "interlock.spill.w10"):
        (tmp_path / name).write_text("")
    for name in ("interlock.spill.wx", "interlock.spill.w1.tmp", "other.spill.w3"):
        (tmp_path / name).write_text("")
    assert absent_workers_files(str(base), 2) == [str(base) + ".w2", str(base) + ".w10"]
    assert absent_workers_files(str(base), 1) == [str(base) + s for s in (".w1", ".w2", ".w10")]
    assert absent_workers_files(str(tmp_path / "missing" / "x.spill"), 1) == []


def test_worker_0_writes_the_files_of_absent_workers_and_another_worker_only_its_own(tmp_path: Path) -> None:
    base = tmp_path / "interlock.spill"
    settings = StoreSettings(spill_path=str(base), batch_interval_ms=5)
    files = {name: [make_call(f"{name} {i}") for i in range(3)] for name in ("", ".w1", ".w2", ".w3")}
    for name, calls in files.items():
        plant(Path(f"{base}{name}"), calls)
    with Store(tmp_path / "r.db") as store:
        second = Recorder(store, settings, worker=1, workers=2)  # its own, .w1, only
        second.start()
        wait_for(lambda: not Path(f"{base}.w1").exists())
        second.close()
        first = Recorder(store, settings, worker=0, workers=2)  # its own, and .w2 and .w3
        first.start()
        wait_for(lambda: not any(Path(f"{base}{name}").exists() for name in files))
        first.close()
        assert sorted(c.id for c in store.iter_calls()) == sorted(c.id for calls in files.values() for c in calls)
        assert first.written == 9 and second.written == 3
