"""`python -m bench` (`make bench`): start the fake upstream and interlock, measure, write bench/RESULTS.md.

python -m bench                      # every section, ~5 minutes on 2 cores
python -m bench --only proxy         # one or more sections
python -m bench --sustain-seconds 60 # the full sustained-recording run of issue 3
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import encoding, faults, otel, pii, policy, postgres, proxy, recording, replay
from bench.context import Context
from bench.harness import ROOT, quiet_cpu
from bench.load import have_wrk
from bench.report import Section, render

SECTIONS: dict[str, Callable[[Context], Section]] = {
    "proxy": proxy.run,
    "recording": recording.run,
    "large-calls": recording.run_large,
    "faults": faults.run,
    "policy": policy.run,
    "pii": pii.run,
    "otel": otel.run,
    "replay": replay.run,
    "encoding": encoding.run,
    "postgres": postgres.run,
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), help="run only these sections")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per wrk run (default 5)")
    parser.add_argument(
        "--sustain-seconds", type=float, default=15.0, help="sustained-recording run length (issue 3 asks 60)"
    )
    parser.add_argument("--streams", type=int, default=640, help="streams per first-byte run (default 640)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--note", action="append", default=[], help="a line for the top of RESULTS.md")
    args = parser.parse_args(argv)

    if not have_wrk():
        print("wrk is not installed: `apt-get install -y wrk` (make bench does this)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="interlock-bench-"))
    ctx = Context(seconds=args.seconds, sustain_seconds=args.sustain_seconds, streams=args.streams, workdir=workdir)
    busy = quiet_cpu(1.0)
    ctx.log(f"machine busy before the run: {busy:.0%} of all cores (other processes)")
    sections: list[Section] = []
    for name in args.only or list(SECTIONS):
        ctx.log(f"section {name}")
        began = time.perf_counter()
        try:
            section = SECTIONS[name](ctx)
        except Exception as exc:  # a broken section is reported, the others still run
            traceback.print_exc()
            section = Section(name, skipped=f"the harness failed: {type(exc).__name__}: {exc}")
        section.seconds = time.perf_counter() - began
        sections.append(section)
        args.out.write_text(render(sections, preamble=_preamble(args, busy), command=_command(argv)))
    shutil.rmtree(workdir, ignore_errors=True)
    ctx.log(f"wrote {args.out}")
    return 0


def _preamble(args: argparse.Namespace, busy: float) -> list[str]:
    lines = list(args.note)
    lines.append(
        "Produced by `make bench` (`python -m bench`): bench/fake_upstream.py and interlock run as separate "
        "processes on loopback; wrk and the bench's asyncio client drive them. Target rows say met or missed; "
        "rows marked — are context. How to read and reproduce: docs/bench.md."
    )
    lines.append(f"- Other load on the machine when the run began: {busy:.0%} of all cores busy.")
    return lines


def _command(argv: list[str]) -> str:
    shown: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--note":
            skip = True
            continue
        if not arg.startswith("--note="):
            shown.append(arg)
    return " ".join(["python -m bench", *shown])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
