"""`interlock serve --workers 2` (interlock/workers.py) as a user runs it, with the embedded SQLite
store and no Redis: the real CLI, one SQLite file written by both workers, a limit counted once for
both (counters_sqlite.py), a session's placeholders restored whichever worker answers
(vault_sqlite.py), `/ready` answering for every worker, a killed worker replaced, and a graceful
stop that drains both."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from interlock.scripted import Script, ScriptedUpstream
from interlock.testing import wait_for
from interlock.tracing.store import Store
from tests.conftest import routes_for
from tests.servers import free_port

#: Starts a real redis-server or interlock processes (tests/servers.py, the CLI).
pytestmark = pytest.mark.slow

INTERLOCK = str(Path(sys.executable).with_name("interlock"))
HI = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    url: str
    admin: str
    store: Path
    log: Path

    def ready(self) -> dict[str, Any] | None:
        try:
            answer = httpx.get(self.admin + "/ready", timeout=5)
        except httpx.HTTPError:
            return None
        return answer.json() if answer.status_code == 200 else None

    def wait_ready(self, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"interlock exited {self.process.returncode}: {self.log.read_text()[-3000:]}")
            body = self.ready()
            if body is not None:
                return body
            time.sleep(0.1)
        raise AssertionError(f"not ready in {timeout} s: {self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


def call(served: Served, agent: str) -> httpx.Response:
    """One call on a connection of its own (so the kernel may hand it to either worker)."""
    with httpx.Client(timeout=30) as client:
        return client.post(
            served.url + "/openai/chat/completions",
            json=HI,
            headers={"Authorization": "Bearer sk-agent", "X-Interlock-Agent": agent},
        )


def start(home: Path, config: dict[str, Any], workers: int, log_name: str = "interlock.log") -> Served:
    """`interlock serve --workers N` with `config` (written to home/interlock.yaml), without Redis."""
    (home / "interlock.yaml").write_text(yaml.safe_dump(config))
    log = home / log_name
    with log.open("wb") as out:
        process = subprocess.Popen(
            [INTERLOCK, "serve", "--workers", str(workers), "-c", str(home / "interlock.yaml")],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if k not in ("INTERLOCK_STATE_URL", "INTERLOCK_VAULT_KEY")},
        )
    port, admin = config["listen"]["port"], config["admin"]["port"]
    return Served(process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}", Path(config["store"]["path"]), log)


@pytest.fixture(scope="module")
def served(upstream_server: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("workers")
    (home / "policy.yaml").write_text(
        "rules:\n  - name: fleet-rate\n    match: {agent: 'rate-*'}\n    limits: {requests_per_minute: 40}\n"
        "  - name: fleet-loops\n    match: {agent: 'loop-*'}\n    loop: {requests: 3, tool_calls: null, tool_errors: null}\n"
    )
    port, admin = free_port(), free_port()
    config = {
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": {"host": "127.0.0.1", "port": admin},
        "routes": routes_for(upstream_server),
        "store": {"path": str(home / "interlock.db")},
        "policies": [str(home / "policy.yaml")],
        "guardrails": {"request": {"EMAIL_ADDRESS": "redact"}, "entities": ["EMAIL_ADDRESS"], "secrets": False},
        "shutdown_grace": 10,
    }
    running = start(home, config, 2)
    try:
        running.wait_ready()
        yield running
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait(30)


def test_ready_answers_for_every_worker(served: Served) -> None:
    seen: set[int] = set()
    for _ in range(400):  # each probe on a connection of its own: either worker may answer
        body = served.ready()
        assert body is not None and body["workers"]["ready"] == 2 and body["workers"]["of"] == 2
        seen.add(body["workers"]["worker"])
        if seen == {0, 1}:
            break
    assert seen == {0, 1}


def test_a_rate_limit_is_counted_once_for_both_workers(served: Served) -> None:
    statuses: list[int] = []
    lock = threading.Lock()

    def agent() -> None:
        for _ in range(5):
            status = call(served, "rate-1").status_code
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=agent) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(statuses) == [200] * 40 + [429] * 20


def test_a_loop_is_counted_once_for_both_workers(served: Served) -> None:
    """The same request three times in a session, each on a connection of its own (either worker may
    answer it): the third is refused, and the histories are in the store's file, shared by both
    (tests/fleet/test_shared_loops.py splits a loop over two such workers deterministically)."""
    sessions = [f"loop-{uuid.uuid4().hex}" for _ in range(6)]
    for session in sessions:
        statuses = []
        for _ in range(3):
            with httpx.Client(timeout=30) as client:
                answer = client.post(
                    served.url + "/openai/chat/completions",
                    json=HI,
                    headers={
                        "Authorization": "Bearer sk-agent",
                        "X-Interlock-Agent": "loop-1",
                        "X-Interlock-Session": session,
                    },
                )
            statuses.append(answer.status_code)
        assert statuses == [200, 200, 403]
        assert answer.json()["error"]["code"] == "loop_detected"
    with sqlite3.connect(served.store) as db:
        kept = {scope for (scope,) in db.execute("SELECT scope FROM loop_sessions")}
    assert {f"session:{s}" for s in sessions} <= kept


def test_a_sessions_placeholders_are_restored_by_either_worker(
    served: Served, upstream_server: ScriptedUpstream
) -> None:
    session = {"Authorization": "Bearer sk-agent", "X-Interlock-Agent": "mail", "X-Interlock-Session": "s-workers"}
    turn1 = [{"role": "user", "content": "mail ada@example.com"}]
    with httpx.Client(timeout=30) as client:
        first = client.post(served.url + "/openai/chat/completions", json={**HI, "messages": turn1}, headers=session)
    assert first.json()["choices"][0]["message"]["content"] == "echo: mail ada@example.com"
    turn2 = [
        *turn1,
        {"role": "assistant", "content": "echo: mail ada@example.com"},
        {"role": "user", "content": "again"},
    ]
    for _ in range(10):  # each on a connection of its own: both workers answer some
        upstream_server.script(Script(text="sent to <EMAIL_ADDRESS_1>"))
        with httpx.Client(timeout=30) as client:
            answer = client.post(
                served.url + "/openai/chat/completions", json={**HI, "messages": turn2}, headers=session
            )
        assert answer.json()["choices"][0]["message"]["content"] == "sent to ada@example.com"
    assert all(b"ada@example.com" not in r.body for r in upstream_server.requests)


def test_a_killed_worker_is_replaced(served: Served) -> None:
    pids = {
        int(p)
        for p in subprocess.run(["pgrep", "-P", str(served.process.pid)], capture_output=True, text=True).stdout.split()
    }
    assert len(pids) == 2
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        now = subprocess.run(["pgrep", "-P", str(served.process.pid)], capture_output=True, text=True).stdout.split()
        if (
            len(now) == 2
            and victim not in {int(p) for p in now}
            and (served.ready() or {}).get("workers", {}).get("ready") == 2
        ):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the killed worker was not replaced")
    assert call(served, "after-kill").status_code == 200


def test_sustained_load_then_a_graceful_stop_records_every_call(
    served: Served, upstream_server: ScriptedUpstream
) -> None:
    sent: list[int] = []
    lock = threading.Lock()

    def agent() -> None:
        with httpx.Client(timeout=30) as client:
            for _ in range(100):
                answer = client.post(
                    served.url + "/openai/chat/completions",
                    json=HI,
                    headers={"Authorization": "Bearer sk-agent", "X-Interlock-Agent": "load"},
                )
                with lock:
                    sent.append(answer.status_code)

    threads = [threading.Thread(target=agent) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert sent == [200] * 1600
    # Calls in flight when SIGTERM comes are finished by whichever worker holds them.
    before = len(upstream_server.requests)
    upstream_server.script(*[Script(delay=1.0) for _ in range(4)])
    held: list[int] = []
    slow = [threading.Thread(target=lambda: held.append(call(served, "slow").status_code)) for _ in range(4)]
    for thread in slow:
        thread.start()
    deadline = time.monotonic() + 60
    while len(upstream_server.requests) < before + 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    # Without this the stop below could come before the calls are in flight, and test nothing of them.
    assert len(upstream_server.requests) >= before + 4, "the slow calls never reached the upstream"
    assert served.stop() == 0
    for thread in slow:
        thread.join(60)
    assert held == [200] * 4
    log = served.log.read_text()
    assert "database is locked" not in log
    with sqlite3.connect(served.store) as db:
        (load,) = db.execute("SELECT count(*) FROM calls WHERE agent = 'load'").fetchone()
        (slow_rows,) = db.execute("SELECT count(*) FROM calls WHERE agent = 'slow'").fetchone()
    assert load == 1600 and slow_rows == 4


def test_workers_with_nothing_to_share_in_refuse_to_start_when_policies_count(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text("rules:\n  - name: r\n    limits: {requests_per_minute: 5}\n")
    config = {"policies": [str(tmp_path / "policy.yaml")], "store": {"path": ":memory:"}}
    (tmp_path / "interlock.yaml").write_text(yaml.safe_dump(config))
    environment = {k: v for k, v in os.environ.items() if k != "INTERLOCK_STATE_URL"}
    done = subprocess.run(
        [
            INTERLOCK,
            "serve",
            "--workers",
            "2",
            "--port",
            "0",
            "--admin-port",
            "0",
            "-c",
            str(tmp_path / "interlock.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )
    assert done.returncode == 2
    assert "--workers 2 needs shared state" in done.stderr and ":memory:" in done.stderr


def test_the_fleet_warning_is_said_once_not_once_per_worker(
    upstream_server: ScriptedUpstream, postgres_server: Any, tmp_path: Path
) -> None:
    # A PostgreSQL store without state.url: the limits count per replica, which `serve` warns about
    # at startup. With two workers the supervisor says it, once; the workers do not repeat it.
    (tmp_path / "policy.yaml").write_text("rules:\n  - name: r\n    limits: {requests_per_minute: 500}\n")
    port, admin = free_port(), free_port()
    config = {
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": {"host": "127.0.0.1", "port": admin},
        "routes": routes_for(upstream_server),
        "store": {"url": postgres_server.database("workers_warning")},
        "policies": [str(tmp_path / "policy.yaml")],
        "shutdown_grace": 5,
    }
    (tmp_path / "interlock.yaml").write_text(yaml.safe_dump(config))
    log = tmp_path / "interlock.log"
    environment = {k: v for k, v in os.environ.items() if k not in ("INTERLOCK_STATE_URL", "INTERLOCK_STORE_URL")}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [INTERLOCK, "serve", "--workers", "2", "-c", str(tmp_path / "interlock.yaml")],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=tmp_path,  # its local files (the day counters' interlock.db, the spill file) go here
        )
    served = Served(process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}", tmp_path / "interlock.db", log)
    try:
        assert served.wait_ready()["workers"]["ready"] == 2  # both workers have built their runtime
        assert served.stop() == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    said = [line for line in log.read_text().splitlines() if "WARNING" in line and "state.url" in line]
    assert len(said) == 1, said


def test_every_workers_side_file_is_written_once_by_a_later_run_with_fewer_workers(
    upstream_server: ScriptedUpstream, tmp_path: Path
) -> None:
    """`serve --workers 2` while its store cannot be written: each worker spills to a side file of its
    own (no memory to hold in: retry_max_bytes 0); SIGTERM. Worker 1's file then also gets a call that
    is in worker 0's file and the start of a line it was appending when it died. `serve` with one
    worker writes both files: every call once, the torn line counted lost and logged, no file left."""
    db, spill = tmp_path / "interlock.db", tmp_path / "interlock.spill"
    sides = (spill, Path(f"{spill}.w1"))
    config = {
        "listen": {"host": "127.0.0.1", "port": free_port()},
        "admin": {"host": "127.0.0.1", "port": free_port()},
        "routes": routes_for(upstream_server),
        "store": {"path": str(db), "spill_path": str(spill), "retry_max_bytes": 0},
        "shutdown_grace": 5,
    }
    texts: list[str] = []
    first = start(tmp_path, config, 2, "first.log")
    try:
        first.wait_ready()
        for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            path.unlink(missing_ok=True)
        db.mkdir()  # the store cannot be opened: a storage fault in both workers until it is removed
        while not all(side.exists() for side in sides) and len(texts) < 400:
            text = f"spilled {len(texts)}"
            with httpx.Client(timeout=30) as client:  # a connection of its own: either worker may answer
                answer = client.post(
                    first.url + "/openai/chat/completions",
                    json={**HI, "messages": [{"role": "user", "content": text}]},
                    headers={"Authorization": "Bearer sk-agent"},
                )
            assert answer.status_code == 200
            texts.append(text)
        assert all(side.exists() for side in sides), "one worker answered 400 calls in a row"
        assert first.stop() == 0
    finally:
        if first.process.poll() is None:
            first.process.kill()
            first.process.wait(30)
    db.rmdir()
    with spill.open("rb") as source:
        both = source.readline()
    with sides[1].open("ab") as out:
        out.write(both + both[:60])
    config["listen"]["port"], config["admin"]["port"] = free_port(), free_port()
    second = start(tmp_path, config, 1, "second.log")
    try:
        second.wait_ready()
        wait_for(lambda: not any(side.exists() for side in sides), what="both side files written")
        with Store(db, readonly=True) as store:
            bodies = [c.request_body.decode() for c in store.iter_calls()]
        assert len(bodies) == len(texts)
        assert all(sum(f'"{text}"' in body for body in bodies) == 1 for text in texts)
        recorder = httpx.get(second.admin + "/api/stats", timeout=10).json()["recorder"]
        assert recorder["lost"] == 1 and recorder["write_errors"] == 0
        assert second.stop() == 0
    finally:
        if second.process.poll() is None:
            second.process.kill()
            second.process.wait(30)
    log = second.log.read_text()
    assert f"{sides[1]}:" in log and "cut short" in log


def test_workers_stop_when_their_supervisor_is_killed(upstream_server: ScriptedUpstream, tmp_path: Path) -> None:
    """A supervisor killed outright (SIGKILL, the OOM killer) cannot stop its workers: the kernel
    tells them (PR_SET_PDEATHSIG), and they drain and exit instead of serving on with no supervisor."""
    port, admin = free_port(), free_port()
    config = {
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": {"host": "127.0.0.1", "port": admin},
        "routes": routes_for(upstream_server),
        "store": {"path": str(tmp_path / "interlock.db")},
        "shutdown_grace": 5,
    }
    running = start(tmp_path, config, 2)
    try:
        running.wait_ready()
        workers = [
            int(p)
            for p in subprocess.run(
                ["pgrep", "-P", str(running.process.pid)], capture_output=True, text=True
            ).stdout.split()
        ]
        assert len(workers) == 2
        running.process.kill()
        running.process.wait(30)
        deadline = time.monotonic() + 120  # each drains (shutdown_grace 5 s), then exits
        while any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in workers):
            assert time.monotonic() < deadline, f"workers {workers} outlived their supervisor"
            time.sleep(0.1)
    finally:
        subprocess.run(["pkill", "-KILL", "-f", str(tmp_path / "interlock.yaml")], check=False)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie awaiting its reaper, init here, has exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
