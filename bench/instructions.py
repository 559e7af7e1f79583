"""Instructions per proxied call, counted by callgrind: a number that other work on the machine
cannot move, for before/after comparisons of hot-path changes (not part of `make bench`).

    python -m bench.instructions                 # 1,000 non-streamed calls at c8, default config
    python -m bench.instructions --stream        # streamed calls (13 events each, sent at once)
    python -m bench.instructions --stream --chunk-interval-ms 2   # events apart: each relayed alone
    python -m bench.instructions --store off     # recording off
    python -m bench.instructions --floor         # the Python floor (bench/floor.py) instead: the stack alone

interlock runs under `valgrind --tool=callgrind --instr-atstart=no`; counting is switched on only
around the measured calls (after 200 warm-up calls), so start-up is not counted. Needs valgrind
(`apt-get install -y valgrind`). Takes about half a minute.
"""

from __future__ import annotations

import argparse
import glob
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from bench import harness, load


def measure(
    calls: int, concurrency: int, stream: bool, store: bool, chunk_interval_ms: float = 0.0, floor: bool = False
) -> float:
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
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", harness.PYTHON]
            + served,
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
        total = 0
        for path in glob.glob(str(out) + "*"):
            for line in Path(path).read_text(errors="replace").splitlines():
                if line.startswith(("summary:", "totals:")):
                    total = max(total, int(line.split()[1]))
        shutil.rmtree(workdir, ignore_errors=True)
        return total / calls


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
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: apt-get install -y valgrind", file=sys.stderr)
        return 2
    per_call = measure(
        args.calls, args.concurrency, args.stream, args.store == "on", args.chunk_interval_ms, floor=args.floor
    )
    print(
        f"{per_call:,.0f} instructions per call ({args.calls} calls, c{args.concurrency}, "
        f"{'streamed' if args.stream else 'not streamed'}, "
        + ("the Python floor" if args.floor else f"recording {args.store}")
        + (f", events {args.chunk_interval_ms} ms apart)" if args.stream else ")")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
