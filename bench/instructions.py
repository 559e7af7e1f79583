"""Instructions per proxied call, counted by callgrind: a number that other work on the machine
cannot move, for before/after comparisons of hot-path changes (not part of `make bench`).

    python -m bench.instructions                 # 1,000 non-streamed calls at c8, default config
    python -m bench.instructions --stream        # streamed calls (13 events each, sent at once)
    python -m bench.instructions --stream --chunk-interval-ms 2   # events apart: each relayed alone
    python -m bench.instructions --store off     # recording off
    python -m bench.instructions --floor         # the Python floor (bench/floor.py) instead: the stack alone

interlock runs under `valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes`; counting
is switched on only around the measured calls (after 200 warm-up calls), so start-up is not counted.
The total is printed with each thread's share: the event loop (the main thread) and the recording
writer apart, since valgrind's slowness changes how many calls a writer commit holds (docs/bench.md).
`--keep DIR` keeps the callgrind files for `callgrind_annotate`. Needs valgrind
(`apt-get install -y valgrind`). Takes about half a minute.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from bench import harness, load

#: callgrind's file of one thread in the dump `callgrind_control -d` wrote (dump 1, the measured
#: calls; the files without a dump number hold what ran after it, the shutdown).
_MEASURED = re.compile(r"\.1-(\d+)$")


def callgrind_python(out: Path) -> list[str]:
    """This Python under callgrind, counting nothing until `callgrind_control -i on` (the measured
    calls alone), each thread apart (so `thread_counts` can name them), into `out`."""
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        "--separate-threads=yes",
        f"--callgrind-out-file={out}",
        harness.PYTHON,
    ]


def thread_counts(out: Path) -> dict[int, tuple[int, bool]]:
    """Instructions per thread id over the measured calls, and whether the thread ran SQLite's VM
    (the recording writer does)."""
    counts: dict[int, tuple[int, bool]] = {}
    for path in out.parent.glob(out.name + ".1-*"):
        match = _MEASURED.search(path.name)
        if match is None:
            continue
        text = path.read_text(errors="replace")
        total = max((int(line.split()[1]) for line in text.splitlines() if line.startswith("totals:")), default=0)
        counts[int(match.group(1))] = (total, "sqlite3VdbeExec" in text)
    return counts


def measure(
    calls: int,
    concurrency: int,
    stream: bool,
    store: bool,
    chunk_interval_ms: float = 0.0,
    floor: bool = False,
    keep: Path | None = None,
) -> dict[str, float]:
    """Instructions per call: "total" and one entry per thread that counted any ("event loop" is
    the main thread, "writer" a thread that ran SQLite, "thread N" any other)."""
    with harness.fake_upstream(chunk_interval_ms=chunk_interval_ms) as up:
        workdir = Path(tempfile.mkdtemp(prefix="bench-callgrind-"))
        config = harness.interlock_config(up.url + "/v1", workdir, store={"enabled": store})
        (workdir / "interlock.yaml").write_text(yaml.safe_dump(config))
        out = workdir / "callgrind.out"
        port = config["listen"]["port"]
        if floor:
            served = ["-m", "bench.floor", "--port", str(port), "--upstream", up.url + "/v1"]
        else:
            served = ["-m", "interlock.cli", "serve", "--config", str(workdir / "interlock.yaml")]
        popen = subprocess.Popen(
            callgrind_python(out) + served,
            cwd=workdir if not floor else harness.ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            if floor:
                harness.wait_listening(port, popen, timeout=180)
            else:
                harness.wait_ready(config["admin"]["port"], popen, timeout=180)
            url = f"http://127.0.0.1:{port}/openai/chat/completions"
            body = load.chat_body(stream=stream)
            load.run(load.run_calls(url, body, concurrency=concurrency, total=200, timeout=120))
            subprocess.run(["callgrind_control", "-i", "on", str(popen.pid)], capture_output=True, check=True)
            stats = load.run(load.run_calls(url, body, concurrency=concurrency, total=calls, timeout=120))
            subprocess.run(["callgrind_control", "-d", str(popen.pid)], capture_output=True, check=True)
        finally:
            popen.terminate()
            popen.wait()
        if stats.failures:
            raise RuntimeError(f"calls failed: {stats.describe_failures()}")
        counts = thread_counts(out)
        total = sum(count for count, _ in counts.values())
        per_call: dict[str, float] = {"total": total / calls}
        for thread, (count, sqlite) in sorted(counts.items()):
            # Threads under 1% (aiohttp's resolver, the loop's executor) are summed as "other".
            if thread == 1:
                name = "event loop"
            elif count < total / 100:
                name = "other"
            else:
                name = "writer" if sqlite else f"thread {thread}"
            per_call[name] = per_call.get(name, 0.0) + count / calls
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for path in out.parent.glob(out.name + "*"):
                shutil.copy(path, keep / path.name)
        shutil.rmtree(workdir, ignore_errors=True)
        return per_call


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--store", choices=("on", "off"), default="on")
    parser.add_argument(
        "--chunk-interval-ms", type=float, default=0.0, help="gap between SSE events (0: the fake sends them at once)"
    )
    parser.add_argument("--floor", action="store_true", help="measure the Python floor (bench/floor.py) instead")
    parser.add_argument("--keep", type=Path, help="copy the callgrind files (one per thread) into this folder")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: apt-get install -y valgrind", file=sys.stderr)
        return 2
    per_call = measure(
        args.calls,
        args.concurrency,
        args.stream,
        args.store == "on",
        args.chunk_interval_ms,
        floor=args.floor,
        keep=args.keep,
    )
    threads = ", ".join(f"{name} {count:,.0f}" for name, count in per_call.items() if name != "total")
    print(
        f"{per_call['total']:,.0f} instructions per call [{threads}] ({args.calls} calls, c{args.concurrency}, "
        f"{'streamed' if args.stream else 'not streamed'}, "
        + ("the Python floor" if args.floor else f"recording {args.store}")
        + (f", events {args.chunk_interval_ms} ms apart)" if args.stream else ")")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
