"""The PostgreSQL store (issue 19): the writer's sustained rate of 2 KB calls with zero loss, and what
recording to PostgreSQL costs the proxy at c32 next to recording to SQLite.

The writer is measured alone, in this process: the recorder (the same code `serve` runs) is fed
2 KB calls at a paced 2,000 calls/s, then as fast as it takes them; the proxy's end-to-end rate on
2 shared cores is bounded by the proxy (the recording section's sustained row), so an end-to-end
run could not tell whether the writer keeps up. A throwaway PostgreSQL (tests/servers.py, fsync off:
what is measured is interlock's work, not this machine's disk) serves both parts.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import harness, load
from bench.context import Context
from bench.report import Section


def available() -> str | None:
    try:
        import psycopg  # noqa: F401

        from interlock.tracing import postgres  # noqa: F401
        from tests.servers import PostgresServer  # noqa: F401
    except ImportError as exc:
        return f"the PostgreSQL store or psycopg is missing ({exc})"
    return None


def _calls(count: int) -> list[Any]:
    from interlock.core.call import Call, new_id

    text = "where is the lighthouse keeper tonight? " * 46  # ~2 KB of request, as the recording section's
    request = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}).encode()
    response = b'{"choices":[{"message":{"role":"assistant","content":"on the northern cape"}}],"usage":{}}'
    return [
        Call(
            id=new_id(),
            route="openai",
            protocol="openai",
            method="POST",
            path="/chat/completions",
            request_headers=[("content-type", "application/json")],
            request_body=request,
            model="gpt-4o",
            status=200,
            response_headers=[("content-type", "application/json")],
            response_body=response,
            agent="bench",
            session=f"s{i % 100}",
        )
        for i in range(count)
    ]


def _feed(target: str, calls: list[Any], rate: float | None) -> dict[str, float]:
    """Feed `calls` to a recorder on `target` (paced at `rate`, or all at once); what it did."""
    from interlock.config import Store as StoreSettings
    from interlock.tracing.backend import open_store
    from interlock.tracing.recorder import Recorder

    settings = StoreSettings.model_validate(
        {"url": target, "spill_path": str(Path(tempfile.mkdtemp()) / "spill")} if "://" in target else {"path": target}
    )
    store = open_store(settings)
    recorder = Recorder(store, settings)
    recorder.start()
    peak = 0

    async def feed() -> None:
        nonlocal peak
        began = time.perf_counter()
        for i, call in enumerate(calls):
            if rate is not None:
                due = began + i / rate
                if (wait := due - time.perf_counter()) > 0:
                    await asyncio.sleep(wait)
            await recorder.done(call)
            peak = max(peak, len(recorder.queue))

    began = time.perf_counter()
    asyncio.run(feed())
    fed = time.perf_counter() - began
    drained = recorder.flush(timeout=300)
    took = time.perf_counter() - began
    counters = recorder.counters()
    recorder.close()
    stored = store.count_calls()
    store.close()
    return {
        "fed_rate": len(calls) / fed,
        "rate": len(calls) / took,
        "drained": float(drained),
        "stored": stored,
        "peak": peak,
        "overflow": counters["overflow"],
        "errors": counters["write_errors"] + counters["lost"],
        "cpu_us": counters["writer_cpu_us_per_call"] or 0.0,
    }


def run(ctx: Context) -> Section:
    section = Section("PostgreSQL store: the writer, and recording's cost at c32", issue=19)
    if reason := available():
        section.skipped = reason
        return section
    from tests.servers import PostgresServer

    server = PostgresServer(Path(tempfile.mkdtemp(prefix="interlock-bench-pg-")))
    try:
        paced_seconds = max(5.0, ctx.sustain_seconds)
        count = int(2000 * paced_seconds)
        ctx.log(f"postgres writer: {count} calls of 2 KB paced at 2,000/s")
        paced = _feed(server.database("paced"), _calls(count), 2000.0)
        section.add(
            f"PostgreSQL writer, 2 KB calls paced at 2,000/s for {paced_seconds:.0f} s",
            "≥ 2,000 calls/s, 0 lost",
            f"{paced['rate']:,.0f} calls/s written end to end ({paced['stored']:,} of {count:,} stored, queue peak "
            f"{paced['peak']:,.0f}, overflow {paced['overflow']:.0f}, {paced['cpu_us']:.0f} µs writer CPU a call)",
            paced["rate"] >= 1940 and paced["stored"] == count and not paced["errors"],
            ""
            if paced["rate"] >= 1940
            else "the feeder (this process's event loop), the writer and PostgreSQL share 2 loaded cores;"
            " the queue absorbs what the writer is behind (its peak above), nothing is dropped",
        )
        ctx.log("writers' capacity: 20,000 calls at once, SQLite then PostgreSQL")
        burst = {
            "SQLite": _feed(str(ctx.workdir / "pg-bench-burst.db"), _calls(20000), None),
            "PostgreSQL": _feed(server.database("burst"), _calls(20000), None),
        }
        for name, result in burst.items():
            section.add(
                f"{name} writer capacity (20,000 calls of 2 KB queued at once)",
                "—",
                f"{result['rate']:,.0f} calls/s ({result['stored']:,} stored, {result['cpu_us']:.0f} µs writer CPU a call)",
                None,
            )
        section.rows.extend(_c32_cost(ctx, server))
    finally:
        server.close()
    section.note(
        "PostgreSQL 15 (Debian's), a throwaway cluster on loopback with fsync off, on the same 2 cores as"
        " the bench and other work; the writer rows run the recorder in the bench's process."
    )
    return section


def _c32_cost(ctx: Context, server: Any) -> list[Any]:
    from bench.report import Row

    body = load.chat_body()
    best: dict[str, float] = {}
    with harness.fake_upstream() as up:
        for round_ in range(2):  # alternating rounds, best of each: other work moves wall-clock numbers
            for name in ("off", "SQLite", "PostgreSQL"):
                workdir = ctx.workdir / f"pg-c32-{name}-{round_}"
                workdir.mkdir(exist_ok=True)
                store: dict[str, Any] = {"enabled": name != "off"}
                if name == "PostgreSQL":
                    store = {"url": server.database(f"c32_{round_}"), "spill_path": str(workdir / "spill")}
                config = harness.interlock_config(up.url + "/v1", workdir, store=store)
                if name == "PostgreSQL":
                    config["store"].pop("path")
                with harness.interlock(config) as proc:
                    url = proc.url + "/openai/chat/completions"
                    ctx.log(f"c32 recording {name}, round {round_ + 1}")
                    load.wrk(url, body, connections=32, seconds=1)
                    result = load.wrk(url, body, connections=32, seconds=ctx.seconds)
                    best[name] = max(best.get(name, 0.0), result.rps)
    off = best["off"]
    cost = {name: 1 - best[name] / off for name in ("SQLite", "PostgreSQL")}
    return [
        Row(
            "Throughput cost at c32: recording to PostgreSQL vs to SQLite",
            "PostgreSQL ≤ SQLite",
            f"PostgreSQL {cost['PostgreSQL']:.1%}, SQLite {cost['SQLite']:.1%} (off {off:,.0f}, SQLite"
            f" {best['SQLite']:,.0f}, PostgreSQL {best['PostgreSQL']:,.0f} req/s)",
            cost["PostgreSQL"] <= cost["SQLite"] + 0.02,
            ""
            if cost["PostgreSQL"] <= cost["SQLite"] + 0.02
            else "building rows is the same work; psycopg's sends and the server's work share the 2 cores",
        )
    ]
