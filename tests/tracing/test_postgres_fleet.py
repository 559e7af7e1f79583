"""Two interlocks on one PostgreSQL store (issue 19): each shows the other's calls, a session that
spans both is one session, an export from the database replays on a laptop, `kill -9` of one loses
at most its open batch while the other goes on, and a database outage under load costs the agents
nothing and the record nothing. Real PostgreSQL (tests/servers.py), real SDK, real processes where
a crash is the point."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from click.testing import CliRunner

from interlock.cli import main
from interlock.scripted import ScriptedUpstream
from interlock.testing import Running, replay_server, run_interlock, settings_for_test, wait_for
from interlock.tracing.backend import open_store
from tests.conftest import routes_for
from tests.proxy.served import Served, serve_process
from tests.servers import PostgresServer

WORKERS = 6


@pytest.fixture
def database(postgres_server: PostgresServer, tmp_path: Path) -> str:
    return postgres_server.database(f"fleet_{abs(hash(str(tmp_path))):x}")


def start(stack: list[Any], upstream: ScriptedUpstream, database: str, where: Path, **store: Any) -> Running:
    settings = settings_for_test(
        {"routes": routes_for(upstream), "store": {"url": database, **store}, "shutdown_grace": 2}, where
    )
    context = run_interlock(settings)
    running = context.__enter__()
    stack.append(context)
    return running


@pytest.fixture
def instances(upstream: ScriptedUpstream, database: str, tmp_path: Path) -> Iterator[Any]:
    stack: list[Any] = []
    yield lambda name, **store: start(stack, upstream, database, tmp_path / name, **store)
    for context in reversed(stack):
        context.__exit__(None, None, None)


def test_without_state_the_store_on_postgres_says_at_startup_what_each_replica_keeps_alone(
    upstream: ScriptedUpstream, database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    monkeypatch.delenv("INTERLOCK_STATE_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # the day counters go to ./interlock.db, as the warning says
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text("rules:\n  - name: no-rm\n    deny: {tools: [rm]}\n")
    config = {"routes": routes_for(upstream), "store": {"url": database}, "policies": [str(tmp_path / "policies")]}
    with caplog.at_level("WARNING", logger="interlock"), run_interlock(settings_for_test(config, tmp_path)) as running:
        assert ask(running, "hi", "s") == "echo: hi"  # served all the same: one replica on PostgreSQL is fine
    said = [r.getMessage() for r in caplog.records if r.name == "interlock" and r.levelname == "WARNING"]
    assert any("state.url" in message and "budgets" in message for message in said), said
    assert not any("spill_path" in message for message in said)  # the test's settings name the spill file
    assert (tmp_path / "interlock.db").exists()  # the per-replica file it warned about


def ask(running: Running, text: str, session: str) -> str:
    client = openai.OpenAI(
        base_url=running.url + "/openai", api_key="x", default_headers={"X-Interlock-Session": session}, max_retries=0
    )
    reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": text}])
    return str(reply.choices[0].message.content)


def test_two_instances_are_one_store(instances: Any, database: str, tmp_path: Path) -> None:
    a, b = instances("a"), instances("b")
    _, position = a.runtime.store.written_since(None)
    answers = [ask(running, f"turn {i}", "voyage") for i, running in enumerate((a, b, a, b))]
    assert a.runtime.recorder.flush() and b.runtime.recorder.flush()

    # A's admin API, its UI and its live feed show B's calls; the session spanning both is one.
    listed = httpx.get(a.admin_url + "/api/calls", params={"session": "voyage"}).json()["calls"]
    assert len(listed) == 4
    session = httpx.get(a.admin_url + "/api/sessions/voyage").json()
    assert len(session["calls"]) == 4 and session["agents"] == ["default"]
    assert httpx.get(a.admin_url + "/api/sessions").json()["sessions"][0]["session"] == "voyage"
    page = httpx.get(b.admin_url + "/session", params={"id": "voyage"})
    assert page.status_code == 200 and all(row["id"] in page.text for row in listed)
    followed, _ = a.runtime.store.written_since(position)
    assert sorted(r["id"] for r in followed) == sorted(r["id"] for r in listed)

    # The CLI reads the database by URL; an export is a SQLite bundle that replays without it.
    cli = CliRunner()
    shown = cli.invoke(main, ["traces", "ls", "--store", database, "--session", "voyage", "--json"])
    assert shown.exit_code == 0, shown.output
    assert len([line for line in shown.output.splitlines() if line.strip()]) == 4
    bundle = tmp_path / "voyage.db"
    exported = cli.invoke(main, ["export", "--store", database, "--session", "voyage", "-o", str(bundle)])
    assert exported.exit_code == 0, exported.output
    with replay_server(bundle) as replay:
        client = openai.OpenAI(base_url=replay.base_url("openai"), api_key="x", max_retries=0)
        replayed = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "turn 1"}])
        assert replayed.choices[0].message.content == answers[1]
    replay.assert_no_divergence()


def test_store_query_and_migrate_on_postgres(database: str) -> None:
    cli = CliRunner()
    migrated = cli.invoke(main, ["store", "migrate", "--store", database, "--json"])
    assert migrated.exit_code == 0, migrated.output
    assert json.loads(migrated.output)["from"] == 0
    again = cli.invoke(main, ["store", "migrate", "--store", database, "--json"])
    assert json.loads(again.output)["from"] == json.loads(again.output)["to"] > 0
    counted = cli.invoke(main, ["store", "query", "--store", database, "--json", "SELECT count(*) AS n FROM calls"])
    assert counted.exit_code == 0 and json.loads(counted.output) == {"n": 0}
    refused = cli.invoke(main, ["store", "query", "--store", database, "DELETE FROM calls"])
    assert refused.exit_code != 0  # read only


# -- processes ---------------------------------------------------------------------------------------


@pytest.fixture
def serve(tmp_path: Path, upstream: ScriptedUpstream, database: str) -> Iterator[Any]:
    started: list[subprocess.Popen[bytes]] = []

    def start_process(name: str, **store: Any) -> Served:
        where = tmp_path / name
        where.mkdir()
        routes = {"openai": {"protocol": "openai", "upstream": upstream.url + "/v1"}}
        return serve_process(where, started, store={"url": database, **store}, routes=routes)

    yield start_process
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


class Load:
    """Agents calling one interlock from threads until stopped; what each was answered, in order."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.prefix = url, prefix
        self.acked: list[str] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.counter = iter(range(10**9))

    def worker(self, *, until_gone: bool = False) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                with self.lock:
                    marker = f"{self.prefix}-{next(self.counter)}"
                body = {"model": "m", "messages": [{"role": "user", "content": marker}]}
                try:
                    response = client.post(self.url + "/openai/chat/completions", json=body)
                except httpx.HTTPError as exc:
                    if until_gone:
                        return  # interlock is gone
                    with self.lock:
                        self.errors.append(repr(exc))
                    continue
                with self.lock:
                    if response.status_code == 200:
                        self.acked.append(marker)
                    else:
                        self.errors.append(f"{response.status_code} {response.text[:200]}")

    def __enter__(self) -> Load:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()  # also when the test fails midway: the executor's exit waits for the workers

    def count(self) -> int:
        with self.lock:
            return len(self.acked)


def markers(database: str) -> list[str]:
    with open_store(database, readonly=True) as store:
        return [json.loads(call.request_body)["messages"][0]["content"] for call in store.iter_calls()]


@pytest.mark.slow
def test_kill_9_of_one_instance_loses_at_most_its_open_batch(serve: Any, database: str) -> None:
    a = serve("a", batch_size=32, batch_interval_ms=20)
    b = serve("b", batch_size=32, batch_interval_ms=20)
    load_a, load_b = Load(a.url, "a"), Load(b.url, "b")
    with ThreadPoolExecutor(2 * WORKERS) as pool, load_a, load_b:
        futures = [pool.submit(load_a.worker, until_gone=True) for _ in range(WORKERS)]
        futures += [pool.submit(load_b.worker) for _ in range(WORKERS)]
        wait_for(lambda: load_a.count() >= 300 and load_b.count() >= 300, 120, "too few calls answered")
        os.kill(a.process.pid, signal.SIGKILL)
        a.process.wait(timeout=10)
        after_kill = load_b.count()
        wait_for(lambda: load_b.count() >= after_kill + 100, 60, "B stopped answering when A died")
        load_a.stop.set()
        load_b.stop.set()
        for future in futures:
            future.result(timeout=60)
    assert load_b.errors == []  # B unaffected
    b.process.send_signal(signal.SIGTERM)  # B writes everything it queued before it exits
    assert b.process.wait(timeout=60) == 0

    present = markers(database)
    assert len(present) == len(set(present))  # nothing twice
    stored = set(present)
    assert [m for m in load_b.acked if m not in stored] == []  # every call B answered is recorded
    missing = [m for m in load_a.acked if m not in stored]
    # A's lost calls are only its newest, those still queued at the kill (as tests/tracing/test_durability.py
    # argues for SQLite: within the last len(missing) + WORKERS answered), and most were written.
    assert set(missing) <= set(load_a.acked[-(len(missing) + WORKERS) :]), (len(missing), len(load_a.acked))
    assert len(missing) < len(load_a.acked) // 2


@pytest.mark.slow
def test_postgres_outage_under_load_costs_the_agents_nothing_and_loses_nothing(
    serve: Any, database: str, postgres_server: PostgresServer
) -> None:
    # A small memory budget, so the outage also spills calls to the side file, replayed after.
    served = serve("a", batch_size=64, batch_interval_ms=20, retry_max_bytes=64 * 1024)
    load = Load(served.url, "outage")
    with ThreadPoolExecutor(WORKERS) as pool, load:
        futures = [pool.submit(load.worker) for _ in range(WORKERS)]
        wait_for(lambda: load.count() >= 100, 120, "too few calls answered before the outage")
        postgres_server.stop()
        try:
            before = load.count()
            # A shared store's outage absorbed without loss keeps the replica ready, the fault in the body
            # (a Service keeps its endpoints: every replica shares the fault, each still serves).
            wait_for(lambda: "recording" in httpx.get(served.admin_url + "/ready").json(), 60, "no fault in /ready")
            assert httpx.get(served.admin_url + "/ready").status_code == 200
            # The database stays down for OUTAGE_SECONDS of load (see docs/store.md for why not 30).
            time.sleep(OUTAGE_SECONDS)  # the outage itself, not a wait for a condition
            assert load.count() > before + 100  # agents kept being answered
            metrics = httpx.get(served.admin_url + "/metrics").text
            assert "\ninterlock_store_fault 1\n" in metrics
            recorder = httpx.get(served.admin_url + "/api/stats").json()["recorder"]
            assert recorder["fault"] and recorder["unrecorded"] > 0
            # Readers are told the store is down (503), never a 500.
            listed = httpx.get(served.admin_url + "/api/calls", timeout=30)
            assert listed.status_code == 503 and listed.json()["error"]["code"] == "store_unavailable"
            page = httpx.get(served.admin_url + "/", timeout=30)  # the UI shows why, in a 503 page
            assert page.status_code == 503 and database.rsplit("/", 1)[1] in page.text
        finally:
            postgres_server.start()
        wait_for(lambda: "recording" not in httpx.get(served.admin_url + "/ready").json(), 120, "no recovery")
        load.stop.set()
        for future in futures:
            future.result(timeout=60)

    def caught_up() -> bool:  # the backlog of the outage written (else SIGTERM spills it, to be written at start)
        counters = httpx.get(served.admin_url + "/api/stats").json()["recorder"]
        # `written` counts only new rows: a batch that committed as the server went away is written
        # again and skipped (`duplicates_skipped`), and a side file replayed again after a failure
        # part-way skips what its first try wrote (so the sum may pass the calls made).
        stored = counters["written"] + counters["duplicates_skipped"]
        return bool(stored >= counters["enqueued"] + counters["overflow"] and counters["unrecorded"] == 0)

    wait_for(caught_up, 180, "the recorder never caught up after the outage")
    recorder = httpx.get(served.admin_url + "/api/stats").json()["recorder"]
    assert recorder["fault"] is None and recorder["faults"] == 1 and recorder["fault_seconds"] >= OUTAGE_SECONDS
    assert load.errors == []  # zero agent-visible errors
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=60) == 0
    stored = set(markers(database))
    assert [m for m in load.acked if m not in stored] == []  # zero calls lost after recovery
    log = served.log.read_text()
    assert "cannot be written" in log and "can be written again" in log
    assert not os.path.exists(served.db.parent / "interlock.spill")  # the side file was replayed and removed


#: How long the database is down under load. The issue says 30 s; 12 s keeps what that tests — longer
#: than the writer's backoff reaching its 5 s cap (0.1 s doubling), the held calls over
#: `retry_max_bytes` so the side file is used and replayed — at under half the suite time.
OUTAGE_SECONDS = 12.0


def test_search_finds_calls_before_and_after_the_indexer_reaches_them(database: str) -> None:
    from interlock.testing import make_call

    with open_store(database) as store:
        store._closing.set()  # type: ignore[attr-defined]  # the test runs the indexer's passes itself:
        store._indexer.join(30)  # type: ignore[attr-defined]  # the thread's gone before the write
        call = make_call()
        store.write([call.to_record()])
        assert [r["id"] for r in store.list_calls(q="lighthouse")] == [call.id]  # computed at search
        assert store.index_pending() == 1 and store.index_pending() == 0  # type: ignore[attr-defined]
        assert [r["id"] for r in store.list_calls(q="lighthouse")] == [call.id]  # through the GIN index
        assert store.list_calls(q="nowhere") == []


def test_a_bundle_imports_into_postgres(database: str, tmp_path: Path) -> None:
    from interlock.testing import make_call

    calls = [make_call(session="laptop", input_tokens=3) for _ in range(3)]
    bundle = tmp_path / "laptop.db"
    with open_store(tmp_path / "source.db") as source:
        source.write([c.to_record() for c in calls])
        assert source.export(bundle) == 3
    imported = CliRunner().invoke(main, ["import", str(bundle), "--store", database])
    assert imported.exit_code == 0, imported.output
    with open_store(database, readonly=True) as store:
        assert [store.get_record(c.id) for c in calls] == [c.to_record() for c in calls]
        assert [r["id"] for r in store.list_calls(q="lighthouse", session="laptop")] == [c.id for c in calls][::-1]
    again = CliRunner().invoke(main, ["import", str(bundle), "--store", database])
    assert again.exit_code == 0 and " 0 new calls" in again.output  # ids already stored are skipped
