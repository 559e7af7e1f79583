"""Recording (issue 3): its cost (on vs off), no call lost, and a sustained 2 KB load."""

from __future__ import annotations

import http.client
import json
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from bench import harness, load
from bench.context import Context
from bench.report import Row, Section


def available() -> str | None:
    try:
        from interlock.tracing import recorder  # noqa: F401
    except ImportError:
        return "recording (interlock.tracing.recorder) is not in this commit yet"
    return None


def rows_in(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM calls").fetchone()[0])


def admin_json(port: int, path: str) -> tuple[float, Any]:
    """GET an admin URL: (milliseconds, parsed JSON)."""
    began = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    response = conn.getresponse()
    data = json.loads(response.read() or b"null")
    conn.close()
    return (time.perf_counter() - began) * 1000.0, data


def run(ctx: Context) -> Section:
    section = Section("Recording: cost, completeness, sustained load", issue=3)
    if reason := available():
        section.skipped = reason
        return section
    body = load.chat_body()
    # Alternating rounds, best of each: other work on the machine moves wall-clock numbers.
    ones: dict[bool, list[load.WrkResult]] = {False: [], True: []}
    many: dict[bool, list[load.WrkResult]] = {False: [], True: []}
    with harness.fake_upstream() as up:
        for round_ in range(2):
            for enabled in (False, True):
                workdir = ctx.workdir / f"rec-{enabled}-{round_}"
                workdir.mkdir(exist_ok=True)
                config = harness.interlock_config(up.url + "/v1", workdir, store={"enabled": enabled})
                with harness.interlock(config) as proc:
                    url = proc.url + "/openai/chat/completions"
                    ctx.log(f"recording {'on' if enabled else 'off'}, round {round_ + 1}")
                    load.wrk(url, body, connections=32, seconds=1)
                    ones[enabled].append(load.wrk(url, body, connections=1, seconds=ctx.seconds))
                    many[enabled].append(load.wrk(url, body, connections=32, seconds=ctx.seconds))
        runs = {
            enabled: (min(ones[enabled], key=lambda r: r.p50_ms), max(many[enabled], key=lambda r: r.rps))
            for enabled in (False, True)
        }

        ctx.log("exact-count run: rows in the store = calls sent")
        workdir = ctx.workdir / "rec-count"
        workdir.mkdir(exist_ok=True)
        config = harness.interlock_config(up.url + "/v1", workdir)
        sent = 5000
        with harness.interlock(config) as proc:
            stats = load.run(load.run_calls(proc.url + "/openai/chat/completions", body, concurrency=32, total=sent))
        counted = rows_in(workdir / "interlock.db")

        sustain = sustained(ctx, up)

    off1, off32 = runs[False]
    on1, on32 = runs[True]
    added = on1.p50_ms - off1.p50_ms
    section.add(
        "Added p50 at c1, recording on vs off",
        "≤ 0.2 ms",
        f"{added:+.3f} ms (off {off1.p50_ms:.3f}, on {on1.p50_ms:.3f} ms)",
        added <= 0.2,
        ""
        if added <= 0.2
        else "the writer thread holds the GIL while it builds rows (it pauses every 16 records); run to run this row varies between +0.09 and +0.26 ms on this machine",
    )
    loss = 1 - on32.rps / off32.rps if off32.rps else float("nan")
    section.add(
        "Throughput cost at c32, on vs off",
        "≤ 15%",
        f"{loss:.1%} (off {off32.rps:,.0f}, on {on32.rps:,.0f} req/s)",
        loss <= 0.15,
        ""
        if loss <= 0.15
        else "the writer thread's work (row building, SQLite inserts, the FTS5 index) takes CPU and the GIL "
        "from the event loop on 2 shared cores; `python -m bench.instructions --store on|off` counts it",
    )
    errors = len(stats.failures)
    section.add(
        "Rows in the store = calls sent (5,000 at c32)",
        "equal, 0 errors",
        f"{counted:,} rows for {sent:,} calls sent ({errors} client errors)",
        counted == sent and errors == 0,
        "" if counted == sent else "see the recorder's overflow and write_errors counters",
    )
    for row in sustain:
        section.rows.append(row)
    section.note(
        f"Sustained run: {ctx.sustain_seconds:.0f} s (`--sustain-seconds`; the issue's figure is 60 s), "
        "2 KB requests paced at 2,000 calls/s over 64 connections by the bench's asyncio client; "
        "during it the admin API (/api/calls) and `interlock traces ls` read the store."
    )
    return section


def sustained(ctx: Context, up: harness.Proc) -> list[Row]:
    workdir = ctx.workdir / "rec-sustained"
    workdir.mkdir(exist_ok=True)
    config = harness.interlock_config(up.url + "/v1", workdir)
    config_path = workdir / "sustained.yaml"
    config_path.write_text(yaml.safe_dump(config))
    body = load.chat_body(2048)
    rate = 2000.0
    reads: list[tuple[str, float, bool]] = []
    ctx.log(f"sustained: {rate:.0f} calls/s of {len(body)} B for {ctx.sustain_seconds:.0f} s")
    with harness.interlock(config) as proc:
        url = proc.url + "/openai/chat/completions"
        admin = proc.admin_port
        assert admin is not None
        done = threading.Event()

        def reader() -> None:
            # The UI and the CLI read the store while it is being written.
            time.sleep(min(3.0, ctx.sustain_seconds / 3))
            while not done.is_set():
                try:
                    ms, data = admin_json(admin, "/api/calls?limit=50")
                    reads.append(("api", ms, bool(data and data.get("calls"))))
                except (OSError, ValueError):
                    reads.append(("api", float("nan"), False))
                if not any(kind == "cli" for kind, _, _ in reads):
                    began = time.perf_counter()
                    out = subprocess.run(
                        [
                            harness.PYTHON,
                            "-m",
                            "interlock.cli",
                            "traces",
                            "ls",
                            "-c",
                            str(config_path),
                            "-n",
                            "5",
                            "--json",
                        ],
                        cwd=workdir,
                        capture_output=True,
                        text=True,
                    )
                    ok = out.returncode == 0 and len(out.stdout.strip().splitlines()) == 5
                    reads.append(("cli", (time.perf_counter() - began) * 1000.0, ok))
                done.wait(1.0)

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        cpu0 = proc.cpu()
        stats = load.run(load.run_calls(url, body, concurrency=64, seconds=ctx.sustain_seconds, rate=rate))
        cpu_per_call = (proc.cpu() - cpu0) / max(1, len(stats.samples)) * 1e6
        done.set()
        thread.join()
        _, counters = admin_json(admin, "/api/stats")
    recorder = (counters or {}).get("recorder") or {}
    rows = rows_in(workdir / "interlock.db")
    sent = len(stats.samples)
    achieved = stats.rps
    failures = len(stats.failures)
    api = [ms for kind, ms, ok in reads if kind == "api" and ok]
    cli = [(ms, ok) for kind, ms, ok in reads if kind == "cli"]
    api_ok = all(ok for kind, _, ok in reads if kind == "api") and bool(api)
    cli_ok = bool(cli) and all(ok for _, ok in cli)
    out = [
        Row(
            f"Sustained 2 KB calls, {ctx.sustain_seconds:.0f} s: rate achieved",
            "2,000 calls/s",
            f"{achieved:,.0f} calls/s ({sent:,} calls, {failures} errors: {stats.describe_failures()})",
            achieved >= rate * 0.97 and failures == 0,
            ""
            if achieved >= rate * 0.97
            else f"interlock used {cpu_per_call:.0f} µs CPU per 2 KB call (proxy and recording thread together), "
            "on 2 cores it shares with the client and the upstream",
        ),
        Row(
            "Sustained: rows in the store = calls sent",
            "0 lost",
            f"{rows:,} rows for {sent:,} calls",
            rows == sent,
            "" if rows == sent else "see overflow / write_errors",
        ),
        Row(
            "Sustained: record queue overflow",
            "never",
            f"overflow {recorder.get('overflow')}, write errors {recorder.get('write_errors')}, "
            f"{recorder.get('batches')} batches",
            recorder.get("overflow") == 0 and recorder.get("write_errors") == 0,
        ),
        Row(
            "Sustained: store readable during the run (API, CLI)",
            "yes",
            f"/api/calls {len(api)} reads, p50 {load.median(api):.0f} ms; "
            + (f"`traces ls` {cli[0][0]:.0f} ms" if cli else "`traces ls` not run")
            + f"{'' if cli_ok else ' (failed)'}",
            api_ok and cli_ok,
        ),
    ]
    return out


#: The large stream of issue 17's item 6 (its rows built in linear time, written in pieces by their own thread).
LARGE_MB = 128


def _post(port: int, body: bytes) -> tuple[int, int]:
    """POST a chat completion through interlock and read the whole answer: (status, bytes read)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("POST", "/openai/chat/completions", body, {"content-type": "application/json"})
    response = conn.getresponse()
    size = 0
    while part := response.read(1 << 20):
        size += len(part)
    conn.close()
    return response.status, size


def _recorded(db: Path, model: str) -> int:
    """Calls of `model` in the store (read-only, beside the writer: WAL)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        return int(conn.execute("SELECT count(*) FROM calls WHERE model = ?", (model,)).fetchone()[0])


def run_large(ctx: Context) -> Section:
    """20 small calls after a 128 MB stream: how soon after their answers they are in the store. The
    test (tests/tracing/test_large_calls.py) asserts that they are recorded while the large call is
    still being written; the pace is measured here, not asserted on a loaded machine by a test."""
    section = Section("Recording: small calls after a large stream", issue=17)
    if reason := available():
        section.skipped = reason
        return section
    event = 64 * 1024
    small = [load.chat_body(model="small", text=f"small {i}") for i in range(20)]
    took: list[float] = []
    large_at: list[float] = []
    with harness.fake_upstream(chunks=LARGE_MB * 16 + 1, chunk_interval_ms=0, event_bytes=event) as up:
        for round_ in range(3):
            workdir = ctx.workdir / f"rec-large-{round_}"
            workdir.mkdir(exist_ok=True)
            db = workdir / "interlock.db"
            with harness.interlock(harness.interlock_config(up.url + "/v1", workdir)) as proc:
                ctx.log(f"large stream ({LARGE_MB} MB) then 20 small calls, round {round_ + 1}")
                status, size = _post(proc.port, load.chat_body(stream=True, model="large"))
                assert status == 200 and size > LARGE_MB << 20, (status, size)
                for body in small:
                    assert _post(proc.port, body)[0] == 200
                answered = time.perf_counter()
                deadline = answered + 120
                while _recorded(db, "small") < len(small):
                    if time.perf_counter() > deadline:
                        raise RuntimeError("the small calls were not recorded in 120 s")
                    time.sleep(0.005)
                took.append(time.perf_counter() - answered)
                while _recorded(db, "large") < 1:
                    if time.perf_counter() > deadline:
                        raise RuntimeError("the large call was not recorded in 120 s")
                    time.sleep(0.01)
                large_at.append(time.perf_counter() - answered)
    best = min(took)
    section.add(
        f"20 small calls after a {LARGE_MB} MB stream: recorded after their answers",
        "≤ 2 s",
        f"{best:.3f} s (best of {len(took)}; all: {', '.join(f'{t:.3f}' for t in took)} s)",
        best <= 2.0,
        "" if best <= 2.0 else "the large call's rows are built and written beside the writer on 2 shared cores",
    )
    section.add(
        f"… the {LARGE_MB} MB call itself recorded (head and tail kept, in pieces)",
        "—",
        f"{min(large_at):.3f} s after the small calls' answers (all: {', '.join(f'{t:.3f}' for t in large_at)} s)",
    )
    return section
