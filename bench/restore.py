"""The guardrails' restored-stream CPU on its own (issue 18's "restore ≤ 1.8× plain"): the stream
rows of the PII section (bench/pii.py), without the rest of that section.

    python -m bench.restore                      # 640 streams at c32 per round, 2 alternating rounds

Guardrails on: the PII section's request actions (the e-mail in the request is redacted, so the
vault holds a value and the stream is restored) and every response finding logged (the stream is
scanned); recording off in both, so only the guardrails differ. CPU per stream is interlock's CPU
time (all threads) over the streams, after 128 warm-up streams; the figure is the median of the
rounds, which alternate off/on and on/off.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from bench import harness, load
from bench.pii import ACTIONS, chat, message


def measure(streams: int, rounds: int) -> tuple[float, float, dict[str, list[float]]]:
    body = chat([{"role": "user", "content": message(400, marker=False)}], stream=True)
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    with harness.fake_upstream() as up:
        for round_ in range(rounds):
            for mode in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
                workdir = Path(tempfile.mkdtemp(prefix=f"bench-restore-{mode}-"))
                guardrails = {"request": ACTIONS, "response": {"*": "log"}} if mode == "on" else {}
                config = harness.interlock_config(
                    up.url + "/v1", workdir, store={"enabled": False}, guardrails=guardrails
                )
                with harness.interlock(config) as proc:
                    url = proc.url + "/openai/chat/completions"
                    load.run(load.run_calls(url, body, concurrency=32, total=128))
                    cpu0 = proc.cpu()
                    done = load.run(load.run_calls(url, body, concurrency=32, total=streams))
                    if done.failures:
                        raise RuntimeError(f"streams failed: {done.describe_failures()}")
                    cpu[mode].append((proc.cpu() - cpu0) / max(1, len(done.samples)) * 1e6)
    return statistics.median(cpu["on"]), statistics.median(cpu["off"]), cpu


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.restore", description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    on, off, cpu = measure(args.streams, args.rounds)
    rounds = f"on {[round(x) for x in cpu['on']]}, off {[round(x) for x in cpu['off']]}"
    print(f"restored stream CPU: {on:.0f} µs vs plain {off:.0f} µs per stream, {on / off:.2f}x ({rounds})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
