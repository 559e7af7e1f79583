"""The plain proxy (issue 2): added latency, throughput, stream first byte, memory, startup."""

from __future__ import annotations

import statistics
import time

from bench import harness, load
from bench.context import Context
from bench.report import Section


def _ms(value: float) -> str:
    return f"{value:.2f} ms"


def run(ctx: Context) -> Section:
    section = Section("Plain proxy: latency, throughput, streams, memory, startup", issue=2)
    body = load.chat_body()
    stream_body = load.chat_body(stream=True)
    with harness.fake_upstream() as up:
        direct = up.url + "/v1/chat/completions"
        ctx.log("direct runs against the fake upstream")
        load.wrk(direct, body, connections=32, seconds=1)
        d1 = load.wrk(direct, body, connections=1, seconds=ctx.seconds)
        d32 = load.wrk(direct, body, connections=32, seconds=ctx.seconds)
        ds = load.run(load.run_calls(direct, stream_body, concurrency=32, total=ctx.streams))

        ctx.log("startup to ready, three spawns")
        startups: list[float] = []
        idle: list[float] = []
        for _ in range(3):
            config = harness.interlock_config(up.url + "/v1", ctx.workdir)
            with harness.interlock(config) as proc:
                startups.append(proc.ready_after)
                time.sleep(0.5)
                idle.append(proc.rss())

        # The proxy alone: recording off (issue 3 has its own budget for it, measured in its section).
        config = harness.interlock_config(up.url + "/v1", ctx.workdir, store={"enabled": False})
        with harness.interlock(config) as proc:
            through = proc.url + "/openai/chat/completions"
            ctx.log("through interlock, recording off")
            load.wrk(through, body, connections=32, seconds=1)  # warm the pool
            cpu0 = proc.cpu()
            t1 = load.wrk(through, body, connections=1, seconds=ctx.seconds)
            t32 = load.wrk(through, body, connections=32, seconds=ctx.seconds)
            cpu_per_call = (proc.cpu() - cpu0) / max(1, t1.requests + t32.requests) * 1e6
            ts = load.run(load.run_calls(through, stream_body, concurrency=32, total=ctx.streams))

        # What `interlock serve` users get: the default configuration, recording on.
        config = harness.interlock_config(up.url + "/v1", ctx.workdir / "default")
        (ctx.workdir / "default").mkdir(exist_ok=True)
        with harness.interlock(config) as proc:
            through = proc.url + "/openai/chat/completions"
            ctx.log("through interlock, default configuration (recording on)")
            load.wrk(through, body, connections=32, seconds=1)
            cpu0 = proc.cpu()
            r32 = load.wrk(through, body, connections=32, seconds=ctx.seconds)
            recorded_cpu = (proc.cpu() - cpu0) / max(1, r32.requests) * 1e6
            rs = load.run(load.run_calls(through, stream_body, concurrency=32, total=ctx.streams))
            loaded_rss, peak_rss = proc.rss(), proc.peak_rss()
            # The reference row (issue 18): a bare starlette + httpx-aiohttp relay, in the same run.
            ctx.log("the Python floor (bench/floor.py), streams at c32")
            with harness.floor(up.url + "/v1") as floor:
                floor_url = floor.url + "/openai/chat/completions"
                load.run(load.run_calls(floor_url, stream_body, concurrency=32, total=64))  # warm its pool
                fs = load.run(load.run_calls(floor_url, stream_body, concurrency=32, total=ctx.streams))

    added = t1.p50_ms - d1.p50_ms
    section.add(
        "Added latency, c1, p50",
        "≤ 1.0 ms",
        f"+{_ms(added)} (direct {_ms(d1.p50_ms)}, through {_ms(t1.p50_ms)})",
        added <= 1.0,
        "" if added <= 1.0 else "per-call CPU on the event loop; see the CPU row and docs/bench.md",
    )
    section.add(
        "c1: p99 latency; requests/s",
        "—",
        f"p99 direct {_ms(d1.p99_ms)}, through {_ms(t1.p99_ms)}; {t1.rps:,.0f} req/s (direct {d1.rps:,.0f})",
    )
    section.add(
        "Throughput c32, non-streaming",
        "≥ 2,000 req/s",
        f"{t32.rps:,.0f} req/s (direct {d32.rps:,.0f})",
        t32.rps >= 2000,
        ""
        if t32.rps >= 2000
        else f"one Python process at {cpu_per_call:.0f} µs CPU per call saturates a core near "
        f"{1e6 / cpu_per_call:,.0f} calls/s, and shares the 2 cores with wrk and the upstream",
    )
    section.add(
        "Latency c32, p50 / p99",
        "—",
        f"through {_ms(t32.p50_ms)} / {_ms(t32.p99_ms)}; direct {_ms(d32.p50_ms)} / {_ms(d32.p99_ms)}",
    )
    errors = t1.errors + t1.non_2xx + t32.errors + t32.non_2xx + len(ts.failures)
    section.add("Errors seen by the client", "0", str(errors), errors == 0)
    ttfb = ts.ttfb(50)
    section.add(
        "Stream first byte, c32, p50",
        "≤ 3 ms",
        f"{_ms(ttfb)} (direct {_ms(ds.ttfb(50))}, added +{_ms(ttfb - ds.ttfb(50))})",
        ttfb <= 3.0,
        ""
        if ttfb <= 3.0
        else "each stream's set-up (about as costly as a whole non-streamed call) runs on the one event loop the "
        "32 streams share; first bytes wait behind the others' set-up (a relayed event costs ~15 k instructions)",
    )
    section.add("Stream first byte, c32, p99", "—", f"{_ms(ts.ttfb(99))} (direct {_ms(ds.ttfb(99))})")
    section.add("CPU per call (interlock process, c1 + c32 runs)", "—", f"{cpu_per_call:.0f} µs")
    section.add(
        "Default configuration (recording on): c32 throughput, stream first byte p50, CPU per call",
        "—",
        f"{r32.rps:,.0f} req/s, {_ms(rs.ttfb(50))}, {recorded_cpu:.0f} µs",
    )
    floor_ttfb = fs.ttfb(50)
    section.add(
        "Stream first byte, c32, p50, recording on, vs the Python floor (bench/floor.py)",
        "≤ the floor's",
        f"{_ms(rs.ttfb(50))} (floor {_ms(floor_ttfb)}; p99 {_ms(rs.ttfb(99))}, floor {_ms(fs.ttfb(99))})",
        rs.ttfb(50) <= floor_ttfb and not fs.failures,
        ""
        if rs.ttfb(50) <= floor_ttfb
        else "`python -m bench.floor --compare` alternates the two for a steadier figure",
    )
    idle_rss = statistics.median(idle)
    section.add("Idle RSS", "≤ 120 MiB", f"{idle_rss:.1f} MiB", idle_rss <= 120)
    section.add("Loaded RSS (after the runs) / peak", "—", f"{loaded_rss:.1f} / {peak_rss:.1f} MiB")
    startup = statistics.median(startups)
    section.add(
        "Startup to ready (spawn → /ready 200), median of 3",
        "≤ 1.5 s",
        f"{startup:.2f} s ({', '.join(f'{s:.2f}' for s in startups)})",
        startup <= 1.5,
        "" if startup <= 1.5 else "import time; see docs/bench.md",
    )
    section.note(
        f"Upstream: bench/fake_upstream.py (raw asyncio on uvloop), {d32.rps:,.0f} req/s alone at c32, "
        "so the fake is never the bottleneck. Streams: 12 SSE events 5 ms apart; first byte = first SSE event."
    )
    section.note(
        f"Load: wrk (1 thread) for {ctx.seconds:.0f} s per run; streams: {ctx.streams} calls over 32 connections "
        "from the bench's asyncio client. wrk, the upstream and interlock share the 2 cores."
    )
    section.note(
        "Configuration: one route, no policies, guardrails or OTel. Target rows: recording off (the proxy "
        "alone; recording's cost has its own budget, see its section). Startup, idle and loaded RSS: the "
        "default configuration, recording on."
    )
    section.note(f"interlock/scripted/ (the tests' fake provider) alone at c32: {scripted_baseline(ctx)}.")
    return section


def scripted_baseline(ctx: Context) -> str:
    """Throughput of interlock/scripted/ alone: why the load runs use bench/fake_upstream.py."""
    with harness.scripted_upstream() as up:
        result = load.wrk(
            up.url + "/v1/chat/completions", load.chat_body(), connections=32, seconds=min(3, ctx.seconds)
        )
    return f"{result.rps:,.0f} req/s, p50 {result.p50_ms:.1f} ms"
