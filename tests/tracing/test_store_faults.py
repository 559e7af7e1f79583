"""The store failing under a running interlock (issue 17, items 8 and 9): a deleted or replaced file is
detected and reopened loudly; a full disk holds calls, spills them, retries with backoff and loses
none once space returns; `/ready` answers 503 with the reason meanwhile."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from interlock.core.state_schema import STATE_TABLES
from interlock.guardrails.vault_sqlite import SqliteVault
from interlock.policies.counters import Add, Counter, EmbeddedCounters
from interlock.policies.counters_sqlite import SqliteCounters
from interlock.scripted import ScriptedUpstream
from interlock.testing import Running
from interlock.tracing.pins import PIN_COLUMNS
from interlock.tracing.schema import SCHEMA_VERSION
from interlock.tracing.store import Store
from interlock.tracing.writing import write_records
from tests.proxy.routing_support import CHAT, wait_for
from tests.tracing.test_recorder import a_call


def chat(running: Running, text: str) -> None:
    body = {**CHAT, "messages": [{"role": "user", "content": text}]}
    assert httpx.post(running.url + "/openai/chat/completions", json=body, timeout=10).status_code == 200


def ready(running: Running) -> httpx.Response:
    return httpx.get(running.admin_url + "/ready", timeout=5)


def stored_ids(path: Path) -> set[str]:
    with Store(path, readonly=True) as store:
        return {row["id"] for row in store.list_calls(limit=10_000)}


def recorder_errors(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "interlock.recorder" and r.levelno >= logging.ERROR and text in r.getMessage()
    ]


# -- item 8: the file deleted or replaced --------------------------------------------------------------


def test_a_deleted_store_is_detected_and_reopened_loudly(make_interlock: Any, tmp_path: Path, caplog: Any) -> None:
    running = make_interlock()
    db = Path(running.settings.store.path)
    chat(running, "before")
    assert running.runtime.recorder.flush()
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        path.unlink(missing_ok=True)
    chat(running, "after")
    assert running.runtime.recorder.flush()
    assert db.exists()
    bodies = [c.request_body.decode() for c in running.runtime.store.iter_calls()]
    assert any("after" in body for body in bodies)  # the new file holds the call made after
    assert recorder_errors(caplog, "was deleted")
    assert ready(running).status_code == 200


def test_a_store_that_cannot_be_reopened_makes_ready_503_until_it_can(make_interlock: Any, caplog: Any) -> None:
    running = make_interlock()
    db = Path(running.settings.store.path)
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        path.unlink(missing_ok=True)
    db.mkdir()  # its path is now a directory: no store can be opened there
    wait_for(lambda: ready(running).status_code == 503)
    answer = ready(running).json()
    assert answer["status"] == "not_ready" and "was replaced" in answer["reason"]
    chat(running, "while broken")
    wait_for(lambda: running.runtime.recorder.counters()["unrecorded"] == 1)
    db.rmdir()
    wait_for(lambda: ready(running).status_code == 200)
    assert running.runtime.recorder.flush()
    (call,) = running.runtime.store.iter_calls()
    assert "while broken" in call.request_body.decode()
    assert running.runtime.recorder.counters()["unrecorded"] == 0


def test_a_store_file_made_again_under_a_running_store_is_migrated_on_reopen(tmp_path: Path) -> None:
    """Other parts are first at a deleted store's path and make the file again: the kill switch's
    poll (any thread's first connection: an empty file, whose read fails, so the poll keeps the stops
    it knew rather than reading "nothing stopped") and the counters' next save (the shared state's
    tables, which the state makes in a file no store has migrated); the recorder's reopen migrates
    that file, keeping the counters' row (CI: it refused such a file as "not an interlock store", and
    /ready stayed 503 with the file back)."""
    db = tmp_path / "s.db"
    with Store(db) as store:
        store.set_stop("session", "sess-1", "loop", 1.0)
        for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            path.unlink()
        failed: list[sqlite3.Error] = []

        def poll() -> None:
            try:
                store.stops()
            except sqlite3.Error as exc:
                failed.append(exc)

        reader = threading.Thread(target=poll)
        reader.start()
        reader.join(60)
        assert not reader.is_alive() and db.exists() and store.file_problem() is not None
        assert len(failed) == 1  # no table in the new file: an error, never an empty answer
        counters = EmbeddedCounters(str(db))
        counters.add_now([Add(Counter(("budget", "agent:a"), "tokens", "day"), 5)], time.time())
        counters.close()
        assert tables_of(db) == STATE_TABLES

        store.reopen()
        assert store.file_problem() is None and store.schema_version == SCHEMA_VERSION
        assert store.count_calls() == 0 and store.stops() == []
        assert store.conn.execute("SELECT rule, key, tokens FROM policy_counters").fetchall() == [
            ("budget", "agent:a", 5)
        ]


def tables_of(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


def test_no_part_of_interlock_makes_a_table_the_migrated_store_file_lacks(tmp_path: Path) -> None:
    """Every table the store's file holds is made by its versioned migrations (version 6 took in
    those made on first use): the kill switch, the MCP pins, the embedded counters, the counters and
    the vault shared by worker processes, each used on a migrated file, add none."""
    db = tmp_path / "s.db"
    with Store(db) as store:
        made = tables_of(db)
        assert made >= STATE_TABLES | {"stops", "mcp_pins"}
        store.set_stop("agent", "a", "why", 1.0)
        store.save_mcp_pins([dict.fromkeys(PIN_COLUMNS, "x") | {"pinned": None, "seen": {"name": "t"}}])
    now = time.time()
    day, minute, gauge = (
        Counter(("r", "agent:a"), m, w) for m, w in (("tokens", "day"), ("calls", "minute"), ("calls", "none"))
    )
    embedded = EmbeddedCounters(str(db))
    embedded.add_now([Add(day, 3)], now)
    embedded.close()

    async def shared_state() -> None:
        counters = SqliteCounters(str(db))
        await counters.admit([], [Add(minute, 1), Add(gauge, 1), Add(day, 1)], now)
        await counters.aclose()
        vault = SqliteVault(str(db), "a test key, not a secret: 0123456789abcdef", 10, 3600)
        table = await vault.open("s1", create=True, reserve=[("EMAIL", "a@example.com")])
        assert table is not None
        await vault.aclose()

    asyncio.run(shared_state())
    assert tables_of(db) == made


# -- item 9: a full disk ------------------------------------------------------------------------------


def test_sqlite_s_real_error_is_raised_not_the_failed_rollback(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        conn = store.conn
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        record = a_call("x" * 200_000).to_record()
        with pytest.raises(sqlite3.OperationalError) as raised:
            write_records(conn, [record])
        assert raised.value.sqlite_errorcode == sqlite3.SQLITE_FULL


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"a small tmpfs cannot be mounted here (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    # Unbuffered: a buffered file keeps the part of its last write that did not fit and tries it
    # again on close, raising ENOSPC out of the `with` (seen when the store's size moved a little).
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 65536)
        except OSError as full:
            assert full.errno == errno.ENOSPC, full  # written until the disk is full, and only that
    return filler


def test_a_full_disk_loses_no_call_once_space_returns(
    small_disk: Path, make_interlock: Any, upstream: ScriptedUpstream, tmp_path: Path, caplog: Any
) -> None:
    db = small_disk / "interlock.db"
    store = {
        "path": str(db),
        "retry_max_bytes": 100_000,
        "spill_path": str(tmp_path / "side.spill"),
        "batch_interval_ms": 5,
    }
    running = make_interlock(store=store)
    recorder = running.runtime.recorder
    chat(running, "before the disk filled")
    assert recorder.flush()
    filler = fill(small_disk)
    texts = [f"during {i} " + "y" * 2000 for i in range(60)]
    for text in texts:
        chat(running, text)
    wait_for(lambda: recorder.counters()["unrecorded"] == 60)
    answer = ready(running)
    assert answer.status_code == 503 and "SQLITE_FULL" in answer.json()["reason"]
    counters = recorder.counters()
    assert counters["spilled"] > 0 and counters["held"] > 0 and counters["lost"] == 0  # held, then spilled
    filler.unlink()  # space returns
    wait_for(lambda: ready(running).status_code == 200, timeout=20)
    assert recorder.counters()["unrecorded"] == 0
    with Store(db, readonly=True) as reader:
        bodies = [c.request_body.decode() for c in reader.iter_calls()]
    assert len(bodies) == 61 and all(any(text in body for body in bodies) for text in texts)
    assert len(recorder_errors(caplog, "cannot be written")) == 1  # once per episode
    assert not os.path.exists(tmp_path / "side.spill")


def test_shutdown_during_an_episode_returns_spilled_and_the_next_start_writes_them(tmp_path: Path) -> None:
    import asyncio

    from interlock.config import Store as StoreSettings
    from interlock.tracing.recorder import Recorder

    db = tmp_path / "r.db"
    settings = StoreSettings(path=str(db), batch_interval_ms=5, retry_max_bytes=0)
    store = Store(db)
    recorder = Recorder(store, settings)
    recorder.start()
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        path.unlink(missing_ok=True)
    db.mkdir()  # cannot be reopened: an episode that does not end
    calls = [a_call(f"held {i}") for i in range(5)]

    async def finish() -> None:
        for call in calls:
            await recorder.done(call)

    asyncio.run(finish())
    wait_for(lambda: recorder.counters()["unrecorded"] == 5)
    # close() returns although the store never comes back (its grace bounds the wait; a hang is
    # what this catches, with a bound no loaded machine reaches, not a pace).
    closing = threading.Thread(target=recorder.close, kwargs={"timeout": 1.0})
    closing.start()
    closing.join(60)
    assert not closing.is_alive(), "close() did not return during an episode that does not end"
    assert recorder.counters()["spilled"] == 5 and recorder.counters()["lost"] == 0
    store.close()
    db.rmdir()
    with Store(db) as again:
        second = Recorder(again, settings)
        second.start()
        wait_for(lambda: again.count_calls() == 5)
        second.close()
        assert {c.id for c in again.iter_calls()} == {c.id for c in calls}
    assert not Path(f"{db}.spill").exists()


def test_a_full_store_anywhere_loses_no_call_once_space_returns(tmp_path: Path, caplog: Any) -> None:
    """The same without a mount (runs anywhere): SQLite's max_page_count makes the store full."""
    import asyncio

    from interlock.config import Store as StoreSettings
    from interlock.tracing.recorder import Recorder

    settings = StoreSettings(batch_interval_ms=5, retry_max_bytes=50_000, spill_path=str(tmp_path / "side.spill"))
    with Store(tmp_path / "full.db") as store:
        recorder = Recorder(store, settings)
        recorder.start()
        first = a_call("first")
        asyncio.run(recorder.done(first))
        assert recorder.flush()

        def limit_pages(pages: int | None) -> None:
            for conn in list(store._connections):
                count = conn.execute("PRAGMA page_count").fetchone()[0]
                conn.execute(f"PRAGMA max_page_count = {pages or count}")

        limit_pages(None)  # full: no page can be added
        calls = [a_call(f"during {i} " + "z" * 20_000) for i in range(20)]

        async def finish() -> None:
            for call in calls:
                await recorder.done(call)

        asyncio.run(finish())
        wait_for(lambda: recorder.counters()["unrecorded"] == 20)
        counters = recorder.counters()
        assert counters["fault"] is not None and "SQLITE_FULL" in counters["fault"]
        assert counters["held"] > 0 and counters["spilled"] > 0 and counters["lost"] == 0
        limit_pages(1_000_000_000)  # space returns
        wait_for(lambda: recorder.counters()["unrecorded"] == 0 and recorder.counters()["fault"] is None, timeout=20)
        assert {c.id for c in store.iter_calls()} == {first.id, *(c.id for c in calls)}
        assert len(recorder_errors(caplog, "cannot be written")) == 1
        recorder.close()


def test_sigterm_mid_episode_exits_spilled_and_the_next_start_loses_nothing(
    tmp_path: Path, upstream: ScriptedUpstream
) -> None:
    """A real `interlock serve`: the store's path made unusable, calls made, SIGTERM; it exits (its
    shutdown_grace bounds the stop), the calls in the side file; the next start writes them."""
    import signal

    from tests.proxy.served import serve_process

    started: list[subprocess.Popen[bytes]] = []
    routes = {"openai": {"protocol": "openai", "upstream": upstream.url + "/v1"}}
    try:
        served = serve_process(tmp_path, started, routes=routes, shutdown_grace=2)
        db = served.db
        for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            path.unlink(missing_ok=True)
        db.mkdir()
        texts = [f"kept {i}" for i in range(10)]
        for text in texts:
            body = {**CHAT, "messages": [{"role": "user", "content": text}]}
            assert httpx.post(served.url + "/openai/chat/completions", json=body, timeout=10).status_code == 200
        wait_for(lambda: httpx.get(served.admin_url + "/ready", timeout=5).status_code == 503)
        served.process.send_signal(signal.SIGTERM)
        served.process.wait(timeout=60)  # it exits (a bound for a hang, not a pace: the grace is 2 s)
        assert Path(f"{db}.spill").exists()
        db.rmdir()
        again = serve_process(tmp_path, started, routes=routes, shutdown_grace=2)
        wait_for(lambda: not Path(f"{db}.spill").exists())
        with Store(again.db, readonly=True) as store:
            bodies = [c.request_body.decode() for c in store.iter_calls()]
        assert all(any(text in body for body in bodies) for text in texts)
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
