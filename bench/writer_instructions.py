"""The recording writer's instructions per call at a real batch size, counted by callgrind.

`python -m bench.instructions` counts the writer thread too, but under valgrind interlock serves
about 20 calls a second, so the writer commits every ~3 calls instead of the ~75 a batch holds at
c8 without valgrind, and each commit's fixed cost is shared by fewer calls (docs/bench.md). This
counts the writer's own work apart from that: real calls are captured from an interlock served
in-process (the bench's fake upstream, default configuration, recording on, the writer's batches
taken instead of written), then turned into rows (`writing.Rows.add_call`) and written
(`Store.write_rows`) in batches of `--batch`, counting on only around that.

    python -m bench.writer_instructions                 # 300 non-streamed calls, batches of 75
    python -m bench.writer_instructions --stream        # streamed calls (13 events each)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import harness, load
from bench.instructions import callgrind_python, thread_counts
from interlock.core.call import Call
from interlock.testing import run_interlock, settings_for_test, wait_for
from interlock.tracing.store import Store
from interlock.tracing.writing import Rows


def capture_and_write(calls: int, batch: int, stream: bool) -> None:
    """Inside valgrind: serve, capture `calls` + one warm-up batch of calls, write them (counted)."""
    captured: list[Call] = []
    total = calls + batch
    with harness.fake_upstream(chunk_interval_ms=0.0) as up:
        workdir = Path(tempfile.mkdtemp(prefix="bench-writer-"))
        route = {"protocol": "openai", "upstream": up.url + "/v1"}
        settings = settings_for_test({"routes": {"openai": route}, "log_level": "warning"}, workdir)
        with run_interlock(settings) as running:
            recorder = running.runtime.recorder
            recorder._write_batch = captured.extend  # the writer hands its batches over, unwritten
            url = running.url + "/openai/chat/completions"
            stats = load.run(load.run_calls(url, load.chat_body(stream=stream), concurrency=8, total=total))
            if stats.failures:
                raise RuntimeError(f"calls failed: {stats.describe_failures()}")
            wait_for(lambda: len(captured) >= total, 120, "the writer's batches")
            store = Store(workdir / "written.db")
            limit = settings.store.record_max_bytes

            def write(part: list[Call]) -> None:
                rows = Rows()
                for call in part:
                    rows.add_call(call, recorder.capture, limit=limit)
                store.write_rows(rows)

            write(captured[:batch])  # warm: statements prepared, tables' first pages made
            _callgrind("-i", "on")
            for start in range(batch, total, batch):
                write(captured[start : start + batch])
            _callgrind("-i", "off")
            _callgrind("-d")
        shutil.rmtree(workdir, ignore_errors=True)


def _callgrind(*args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(os.getpid())], capture_output=True, check=True)


def measure(calls: int, batch: int, stream: bool) -> float:
    """Instructions per call of the thread that wrote (the main thread of the process under valgrind)."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-callgrind-"))
    out = workdir / "callgrind.out"
    command: list[Any] = [
        *callgrind_python(out),
        "-m",
        "bench.writer_instructions",
        "--inside",
        "--calls",
        str(calls),
        "--batch",
        str(batch),
        *(["--stream"] if stream else []),
    ]
    subprocess.run(command, cwd=harness.ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    count, _ = thread_counts(out).get(1, (0, False))
    shutil.rmtree(workdir, ignore_errors=True)
    return count / calls


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.writer_instructions", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--batch", type=int, default=75, help="calls a batch (75: what one holds at c8)")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inside:
        capture_and_write(args.calls, args.batch, args.stream)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: apt-get install -y valgrind", file=sys.stderr)
        return 2
    per_call = measure(args.calls, args.batch, args.stream)
    print(
        f"{per_call:,.0f} writer instructions per call ({args.calls} calls in batches of {args.batch}, "
        f"{'streamed' if args.stream else 'not streamed'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
