"""Faults (issue 4): two upstreams that fail 5% of calls with 503 and reset 2% of connections."""

from __future__ import annotations

from bench import harness, load
from bench.context import Context
from bench.report import Section

#: The issue asks for 2,000 calls with zero errors; the run sends three times that (stricter), and
#: because a 2,000-call run at c32 lasts ~1.5 s, one call's backoff at the tail (0.2-0.4 s) would
#: swing its throughput by 20-30% — measured: 2,000 calls +23-34%, 4,000 calls within noise.
CALLS = 6000


def available() -> str | None:
    try:
        from interlock.proxy import retry, routing  # noqa: F401
    except ImportError:
        return "retries and fallbacks (interlock.proxy.retry, routing) are not in this commit yet"
    return None


def one_run(ctx: Context, fail_503: float, reset: float) -> tuple[load.RunStats, float]:
    """The calls' stats and interlock's CPU per call (µs)."""
    with (
        harness.fake_upstream(fail_503=fail_503, reset=reset, seed=1) as first,
        harness.fake_upstream(fail_503=fail_503, reset=reset, seed=2) as second,
    ):
        workdir = ctx.workdir / f"faults-{fail_503}"
        workdir.mkdir(exist_ok=True)
        config = harness.interlock_config([first.url + "/v1", second.url + "/v1"], workdir)
        with harness.interlock(config) as proc:
            url = proc.url + "/openai/chat/completions"
            body = load.chat_body()
            load.run(load.run_calls(url, body, concurrency=32, total=200))  # warm the pools
            cpu = proc.cpu()
            stats = load.run(load.run_calls(url, body, concurrency=32, total=CALLS))
            return stats, (proc.cpu() - cpu) / CALLS * 1e6


def run(ctx: Context) -> Section:
    section = Section("Faults: retries and fallback across two upstreams", issue=4)
    if reason := available():
        section.skipped = reason
        return section
    ctx.log("faults: no-fault run")
    clean, clean_cpu = one_run(ctx, 0.0, 0.0)
    ctx.log("faults: 5% 503 + 2% resets on both upstreams")
    faulty, faulty_cpu = one_run(ctx, 0.05, 0.02)
    errors = len(faulty.failures)
    section.add(
        f"Errors the agent sees, {CALLS:,} calls at c32",
        "0",
        f"{errors} ({faulty.describe_failures()})",
        errors == 0,
        "" if errors == 0 else "a call whose every attempt failed (both upstreams, attempt budget spent)",
    )
    overhead = clean.rps / faulty.rps - 1 if faulty.rps else float("nan")
    section.add(
        "Throughput overhead vs the no-fault run",
        "≤ 10%",
        f"{overhead:+.1%} ({faulty.rps:,.0f} vs {clean.rps:,.0f} calls/s)",
        overhead <= 0.10,
        ""
        if overhead <= 0.10
        else "calls that fail on both upstreams wait a jittered backoff (0.2 s initial) before their next attempt",
    )
    p50_overhead = faulty.total(50) / clean.total(50) - 1
    section.add(
        "Latency p50 / p99 vs the no-fault run",
        "—",
        f"p50 {faulty.total(50):.2f} vs {clean.total(50):.2f} ms ({p50_overhead:+.0%}); "
        f"p99 {faulty.total(99):.1f} vs {clean.total(99):.1f} ms",
    )
    section.add(
        "interlock CPU per call vs the no-fault run",
        "—",
        f"{faulty_cpu:.0f} vs {clean_cpu:.0f} µs ({faulty_cpu / clean_cpu - 1:+.0%})",
    )
    section.note(
        "Two bench/fake_upstream.py processes, each answering 5% of requests with 503 and resetting 2% of "
        "connections (TCP RST after reading the request), seeded; interlock's route lists both (priority order, "
        "default retry settings). The client is the bench's asyncio client, 32 connections."
    )
    return section
