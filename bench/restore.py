"""The guardrails' restored-stream CPU on its own (issue 18's "restore ≤ 1.8× plain"): the stream
rows of the PII section (bench/pii.py), without the rest of that section.

    python -m bench.restore                      # 640 streams at c32 per round, 2 alternating rounds
    python -m bench.restore --before ../old      # ... and another checkout (its .venv), in the same rounds

Guardrails on: the PII section's request actions (the e-mail in the request is redacted, so the
vault holds a value and the stream is restored) and every response finding logged (the stream is
scanned); recording off in both, so only the guardrails differ. CPU per stream is interlock's CPU
time (all threads) over the streams, after 128 warm-up streams; the figure is the median of the
rounds, which alternate off/on and on/off (and, with `--before`, the checkouts' order too).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path

from bench import harness, load
from bench.pii import ACTIONS, chat, message


def measure(streams: int, rounds: int, before: str | None = None) -> dict[str, dict[str, list[float]]]:
    """CPU µs per stream, per checkout ("after": this one; "before") and mode ("off", "on"), per round.
    Each interlock is started once and warmed; the rounds then take turns on them, in reverse order
    every other round, so that a change in the machine's load falls on all of them alike."""
    body = chat([{"role": "user", "content": message(400, marker=False)}], stream=True)
    pythons = {"after": harness.PYTHON}
    if before:
        pythons["before"] = str(Path(before) / ".venv" / "bin" / "python")
    cpu: dict[str, dict[str, list[float]]] = {name: {"off": [], "on": []} for name in pythons}
    with contextlib.ExitStack() as stack:
        up = stack.enter_context(harness.fake_upstream())
        procs: dict[tuple[str, str], tuple[harness.Proc, str]] = {}
        for name in pythons:
            for mode in ("off", "on"):
                workdir = Path(tempfile.mkdtemp(prefix=f"bench-restore-{name}-{mode}-"))
                guardrails = {"request": ACTIONS, "response": {"*": "log"}} if mode == "on" else {}
                config = harness.interlock_config(
                    up.url + "/v1", workdir, store={"enabled": False}, guardrails=guardrails
                )
                proc = stack.enter_context(harness.interlock(config, name=f"{name}-{mode}", python=pythons[name]))
                url = proc.url + "/openai/chat/completions"
                load.run(load.run_calls(url, body, concurrency=32, total=128))
                procs[name, mode] = proc, url
        order = list(procs)
        for round_ in range(rounds):
            for name, mode in order if round_ % 2 == 0 else order[::-1]:
                proc, url = procs[name, mode]
                cpu0 = proc.cpu()
                done = load.run(load.run_calls(url, body, concurrency=32, total=streams))
                if done.failures:
                    raise RuntimeError(f"streams failed: {done.describe_failures()}")
                cpu[name][mode].append((proc.cpu() - cpu0) / max(1, len(done.samples)) * 1e6)
    return cpu


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.restore", description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--before", help="another checkout of interlock (with its .venv), measured as 'before'")
    args = parser.parse_args(argv)
    cpu = measure(args.streams, args.rounds, args.before)
    for name in ("before", "after") if args.before else ("after",):
        on, off = statistics.median(cpu[name]["on"]), statistics.median(cpu[name]["off"])
        rounds = f"on {[round(x) for x in cpu[name]['on']]}, off {[round(x) for x in cpu[name]['off']]}"
        label = f"{name}: " if args.before else ""
        print(f"{label}restored stream CPU: {on:.0f} µs vs plain {off:.0f} µs per stream, {on / off:.2f}x ({rounds})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
