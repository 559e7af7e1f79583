"""Counts that tell the truth about side files: `written` counts the calls the store really inserted
(a call replayed from a side file that the store already held is `duplicates_skipped`), and calls
waiting in side files found at start (this process's own, an absent worker's) are `spilled` and
`unrecorded` until they are written, also while the store cannot take them yet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from interlock.config import Store as StoreSettings
from interlock.testing import make_call, wait_for
from interlock.tracing.backend import open_store
from interlock.tracing.recorder import Recorder
from interlock.tracing.store import Store
from tests.tracing.test_side_file import plant


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_replayed_call_the_store_already_holds_is_a_duplicate_not_written(
    backend: str, make_interlock: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Each backend reports the rows it inserted (SQLite's `total_changes`, PostgreSQL's rowcount)."""
    spill = tmp_path / "calls.spill"
    if backend == "sqlite":
        target = {"path": str(tmp_path / "calls.db")}
    else:
        target = {"url": request.getfixturevalue("postgres_server").database(f"dup_{abs(hash(str(tmp_path))):x}")}
    stored, new = make_call("stored before the crash"), make_call("only in the side file")
    with open_store(target.get("url") or target["path"]) as store:
        store.add(stored)  # it committed, and was spilled as well (shutdown_grace ran out mid-batch)
    plant(spill, [stored, new])
    running = make_interlock(store={**target, "spill_path": str(spill)})
    wait_for(lambda: not spill.exists(), what="the side file written")
    recorder = httpx.get(running.admin_url + "/api/stats", timeout=10).json()["recorder"]
    assert recorder["written"] == 1 and recorder["duplicates_skipped"] == 1
    assert recorder["unrecorded"] == 0 and recorder["spilled"] == 0 and recorder["write_errors"] == 0
    metrics = httpx.get(running.admin_url + "/metrics", timeout=10).text.splitlines()
    assert "interlock_record_written_total 1" in metrics
    assert "interlock_record_duplicates_skipped_total 1" in metrics
    listed = httpx.get(running.admin_url + "/api/calls", timeout=10).json()["calls"]
    assert sorted(c["id"] for c in listed) == sorted([stored.id, new.id])


def test_calls_in_side_files_found_at_start_are_counted_until_written(tmp_path: Path) -> None:
    db, base = tmp_path / "r.db", tmp_path / "r.spill"
    own = [make_call(f"own {i}") for i in range(3)]
    absent = [make_call(f"an absent worker's {i}") for i in range(2)]
    plant(base, own, tail=b'{"id": "torn')  # a process killed mid-append: a call not stored either
    plant(Path(f"{base}.w1"), absent)  # a worker the earlier run had and this one has not
    settings = StoreSettings(path=str(db), spill_path=str(base), batch_interval_ms=5)
    store = Store(db)
    # The store cannot be opened by the writer thread: its file replaced by a folder.
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        path.unlink(missing_ok=True)
    db.mkdir()
    recorder = Recorder(store, settings, worker=0, workers=1)
    try:
        recorder.start()
        counters = wait_for(
            lambda: (c := recorder.counters())["fault"] is not None and c["spilled"] == 6 and c,
            what="the side files counted while the store is down",
        )
        assert counters["unrecorded"] == 6 and counters["lost"] == 0 and counters["written"] == 0
        db.rmdir()  # the store can be made again: the retry writes both files
        counters = wait_for(
            lambda: (c := recorder.counters())["fault"] is None and c["spilled"] == 0 and c,
            what="the side files written",
        )
        assert counters["written"] == 5 and counters["duplicates_skipped"] == 0
        assert counters["lost"] == 1 and counters["unrecorded"] == 1  # the torn line, counted once its file is done
        assert not base.exists() and not Path(f"{base}.w1").exists()
        assert {c.id for c in store.iter_calls()} == {c.id for c in own + absent}
    finally:
        recorder.close()
        store.close()
