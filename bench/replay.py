"""Replay (issue 8): a 1,000-call bundle recorded through interlock, served back at `--speed max`."""

from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path

from bench import harness, load
from bench.context import Context
from bench.report import Section

CALLS = 1000
SESSION = "bench-replay"


def available() -> str | None:
    try:
        from interlock.replay import server  # noqa: F401
    except ImportError:
        return "replay (interlock.replay.server) is not in this commit yet"
    return None


def record_bundle(ctx: Context, bundle: Path) -> int:
    """Record CALLS calls through interlock into its store, then `interlock export` the session."""
    workdir = ctx.workdir / "replay-record"
    workdir.mkdir(exist_ok=True)
    with harness.fake_upstream() as up:
        config = harness.interlock_config(up.url + "/v1", workdir)
        with harness.interlock(config) as proc:
            stats = load.run(
                load.run_calls(
                    proc.url + "/openai/chat/completions",
                    load.chat_body(),
                    concurrency=8,
                    total=CALLS,
                    headers={"x-interlock-session": SESSION},
                )
            )
    if stats.failures:
        raise RuntimeError(f"recording the bundle failed: {stats.describe_failures()}")
    out = subprocess.run(
        [harness.PYTHON, "-m", "interlock.cli", "export", "--store", str(workdir / "interlock.db")]
        + ["--session", SESSION, "-o", str(bundle)],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"interlock export failed: {out.stderr.strip()}")
    return CALLS


def serve_once(bundle: Path, concurrency: int) -> tuple[float, load.RunStats, float]:
    """Start `interlock replay BUNDLE --speed max`; (seconds to ready, the calls' stats, CPU per call µs)."""
    port = harness.free_port()
    began = time.perf_counter()
    popen = subprocess.Popen(
        [harness.PYTHON, "-m", "interlock.cli", "replay", "serve", str(bundle)]
        + ["--port", str(port), "--speed", "max", "--on-miss", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    proc = harness.Proc("replay", popen, port, spawned_at=began)
    try:
        harness.wait_listening(port, popen)
        ready = time.perf_counter() - began
        cpu = proc.cpu()
        stats = load.run(
            load.run_calls(
                proc.url + "/openai/chat/completions",
                load.chat_body(),
                concurrency=concurrency,
                total=CALLS,
                headers={"x-interlock-session": SESSION},
            )
        )
        return ready, stats, (proc.cpu() - cpu) / CALLS * 1e6
    finally:
        proc.stop()


def run(ctx: Context) -> Section:
    section = Section("Replay: ready time and throughput at --speed max", issue=8)
    if reason := available():
        section.skipped = reason
        return section
    bundle = ctx.workdir / "incident.db"
    ctx.log(f"replay: recording and exporting a {CALLS:,}-call bundle")
    record_bundle(ctx, bundle)
    readies: list[float] = []
    runs: list[load.RunStats] = []
    cpus: list[float] = []
    for _ in range(3):
        ready, stats, cpu = serve_once(bundle, 32)
        readies.append(ready)
        runs.append(stats)
        cpus.append(cpu)
    ready = statistics.median(readies)
    section.add(
        f"Replay server ready (spawn → accepting connections) for a {CALLS:,}-call bundle, median of 3",
        "≤ 1 s",
        f"{ready:.2f} s ({', '.join(f'{r:.2f}' for r in readies)})",
        ready <= 1.0,
        "" if ready <= 1.0 else "Python start and imports dominate; see docs/bench.md",
    )
    rps = statistics.median(s.rps for s in runs)
    failures = sum(len(s.failures) for s in runs)
    section.add(
        "Served at --speed max, c32",
        "≥ 2,000 req/s",
        f"{rps:,.0f} req/s (median of 3 runs of {CALLS:,}; p50 {statistics.median(s.total(50) for s in runs):.2f} ms; "
        f"{failures} errors or misses)",
        rps >= 2000 and failures == 0,
        "" if rps >= 2000 else f"{statistics.median(cpus):.0f} µs CPU per replayed call in one Python process",
    )
    section.note(
        f"The bundle: {CALLS:,} identical chat calls of one session recorded through interlock from "
        "bench/fake_upstream.py and written by `interlock export`; replay matches the n-th identical request "
        "to the n-th recording, so each run sends exactly that many. Load: the bench's asyncio client "
        "(a Python client on the same 2 cores, so this is a lower bound)."
    )
    return section
