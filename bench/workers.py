"""`interlock serve --workers 2` vs 1 (issue 19): throughput and latency at c32 with wrk, recording on
to one SQLite file (both workers writing it), the fast fake provider behind, no policies.

`python -m bench.workers [--seconds S]`; prints a JSON line and RESULTS.md rows. On this machine the
2 cores are shared by the workers, wrk and the provider (and, here, other people's work): a second
worker can only win what one worker left idle, so read the figure as a floor for a bigger host.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from bench import harness, load


def measure(workers: int, upstream: str, seconds: float) -> tuple[load.WrkResult, float]:
    config = harness.interlock_config(upstream, Path(tempfile.mkdtemp(prefix="bench-workers-")))
    with harness.interlock(config, args=("--workers", str(workers))) as proc:
        url = f"http://127.0.0.1:{proc.port}/openai/chat/completions"
        load.wrk(url, load.chat_body(), connections=32, seconds=2)  # warm-up
        before = harness.cpu_seconds(proc.popen.pid)
        result = load.wrk(url, load.chat_body(), connections=32, seconds=seconds)
        after = harness.cpu_seconds(proc.popen.pid)
    return result, (after - before) / max(result.requests, 1) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    busy = harness.quiet_cpu(1.0)
    results = {}
    with harness.fake_upstream() as up:
        upstream = f"http://127.0.0.1:{up.port}/v1"
        for workers in (1, 2):
            result, cpu = measure(workers, upstream, args.seconds)
            results[workers] = {
                "rps": round(result.rps),
                "p50_ms": result.p50_ms,
                "p99_ms": result.p99_ms,
                "errors": result.errors,
                "non_2xx": result.non_2xx,
                "cpu_us_per_call": round(cpu),
            }
    print(
        json.dumps({"c": 32, "seconds": args.seconds, "machine_busy_before": busy, "cores": os.cpu_count(), **results})
    )
    one, two = results[1], results[2]
    print(
        f"| `--workers 2` vs 1, c32 (wrk), recording to one SQLite file | reported | {two['rps']:,} vs {one['rps']:,} "
        f"req/s ({two['rps'] / max(one['rps'], 1):.2f}×); p50 {two['p50_ms']:.1f} vs {one['p50_ms']:.1f} ms, p99 "
        f"{two['p99_ms']:.1f} vs {one['p99_ms']:.1f} ms; errors {two['errors'] + two['non_2xx']} vs "
        f"{one['errors'] + one['non_2xx']}; CPU per call {two['cpu_us_per_call']} vs {one['cpu_us_per_call']} µs | — | |"
    )


if __name__ == "__main__":
    main()
