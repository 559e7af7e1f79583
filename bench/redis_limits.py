"""The Redis limiter's added latency (issue 19): one call at a time (c1) through `Limiter.admit` and
`Limiter.finish` with one rate limit and one money budget rule, on a real local redis-server
(tests/servers.py) and on the embedded counters, on uvloop as `interlock serve` runs; p50 and p99.

Measured at the limiter, not through the proxy: at c1 the proxy's own per-call time and its jitter
on a shared machine would hide a 0.1 ms difference. What the agent waits for is `admit` (before the
call goes upstream); `finish` (tokens and cost counted, slots released) runs in the seal phase, after
the response has been relayed, so it costs the worker's time, not the agent's. Both are reported.
`python -m bench.redis_limits [--calls N]`; prints a JSON line and a RESULTS.md row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import uvloop

from interlock.config import State
from interlock.core.call import Call
from interlock.policies.counters import Counters, EmbeddedCounters
from interlock.policies.counters_open import open_counters
from interlock.policies.counters_sqlite import SqliteCounters
from interlock.policies.engine import CompiledRule
from interlock.policies.limits import Limiter
from interlock.policies.model import Rule
from interlock.prices import Pricing

PRICES = {"gpt-4o*": {"input": 2.5, "output": 10.0}}


def rules() -> list[CompiledRule]:
    return [
        CompiledRule(Rule.model_validate({"name": "rate", "limits": {"requests_per_minute": 10**9}})),
        CompiledRule(Rule.model_validate({"name": "budget", "limits": {"budget_usd_per_day": 10**9}})),
    ]


async def ping(state: State, calls: int) -> list[float]:
    """The floor: a bare PING through the same client, call after call."""
    from interlock.core.redisstate import StateClient

    client = StateClient(state)
    times: list[float] = []
    for _ in range(calls):
        start = time.perf_counter()
        await client.run(client.redis.ping)
        times.append(time.perf_counter() - start)
    await client.aclose()
    return times[calls // 10 :]


async def measure(counters: Counters, calls: int) -> tuple[list[float], list[float]]:
    """Seconds per `admit` and per `finish`, call after call."""
    limiter = Limiter(counters, Pricing(PRICES))
    limited = rules()
    admits: list[float] = []
    finishes: list[float] = []
    for i in range(calls + calls // 10):  # the first tenth warms up (connections, script load)
        call = Call(id=f"c{i}", route="openai", protocol="openai", method="POST", path="/chat/completions")
        call.agent, call.model, call.input_tokens, call.output_tokens = "bench", "gpt-4o", 11, 7
        call.cost_usd = 0.0001  # priced by the usage stage in the proxy
        start = time.perf_counter()
        admission = await limiter.admit(limited, call, time.time())
        admitted = time.perf_counter()
        assert admission.refused is None
        await limiter.finish(limited, admission.keys, call, time.time())
        if i >= calls // 10:
            admits.append(admitted - start)
            finishes.append(time.perf_counter() - admitted)
    await limiter.aclose()
    return admits, finishes


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 4),
        "p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    from tests.servers import RedisServer

    with tempfile.TemporaryDirectory() as root:
        server = RedisServer(Path(root) / "redis")
        try:
            state = State(url=server.url, key_prefix="bench:")
            redis_admit, redis_finish = uvloop.run(measure(open_counters(None, state), args.calls))
            embedded_admit, embedded_finish = uvloop.run(measure(EmbeddedCounters(), args.calls))
            floor = uvloop.run(ping(state, args.calls))
            # The workers' SQLite counters (`serve --workers N` without Redis), for comparison.
            sqlite_admit, sqlite_finish = uvloop.run(measure(SqliteCounters(str(Path(root) / "c.db")), args.calls))
        finally:
            server.stop()
    result = {
        "calls": args.calls,
        "redis": {"admit": summary(redis_admit), "finish": summary(redis_finish)},
        "embedded": {"admit": summary(embedded_admit), "finish": summary(embedded_finish)},
        "redis_ping": summary(floor),
        "sqlite": {"admit": summary(sqlite_admit), "finish": summary(sqlite_finish)},
    }
    added = round(result["redis"]["admit"]["p50_ms"] - result["embedded"]["admit"]["p50_ms"], 4)
    after = round(result["redis"]["finish"]["p50_ms"] - result["embedded"]["finish"]["p50_ms"], 4)
    result["added_p50_ms"] = {"admit (the agent waits)": added, "finish (after the reply)": after}
    print(json.dumps(result))
    verdict = "met" if added <= 0.3 else "missed"
    print(
        f"| Redis limiter: added p50 at c1, one rate limit + one budget rule | ≤ 0.3 ms | {added} ms before "
        f"the call goes upstream (admit; p99 {result['redis']['admit']['p99_ms']} ms), plus {after} ms after "
        f"the reply (finish) | {verdict} | local redis-server 7, {args.calls} sequential calls, uvloop; a bare "
        f"PING took {result['redis_ping']['p50_ms']} ms in the same run; 2 cores shared with other work |"
    )


if __name__ == "__main__":
    main()
