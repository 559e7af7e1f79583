"""What every section gets: run lengths from the command line, a scratch folder, a logger."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Context:
    #: Seconds per throughput/latency run (wrk).
    seconds: float = 5.0
    #: Seconds of the sustained-recording run (issue 3 asks for 60).
    sustain_seconds: float = 15.0
    #: Streams per concurrency-32 first-byte run.
    streams: int = 640
    workdir: Path = field(default_factory=lambda: Path("/tmp"))
    started: float = field(default_factory=time.perf_counter)

    def log(self, text: str) -> None:
        elapsed = time.perf_counter() - self.started
        sys.stderr.write(f"[bench {elapsed:6.1f}s] {text}\n")
        sys.stderr.flush()
