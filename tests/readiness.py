"""Waiting for an interlock process to be ready: its admin port's `/ready` answers 200."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx


def wait_ready(
    admin_url: str, process: subprocess.Popen[bytes], *, timeout: float = 120.0, log: Path | None = None
) -> httpx.Response:
    """`/ready`'s 200 answer, polled while `process` runs. `timeout` is a bound for a cold start on a
    loaded 2-core machine, not a pace; what the process wrote (`log`, else its pipes) explains a failure."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            written = log.read_text() if log else "".join(part.decode() for part in process.communicate() if part)
            raise AssertionError(f"interlock exited at startup ({process.returncode}):\n{written}")
        try:
            reply: httpx.Response | None = httpx.get(admin_url + "/ready", timeout=5)
        except httpx.TransportError:
            reply = None  # not listening yet
        if reply is not None and reply.status_code == 200:
            return reply
        assert time.monotonic() < deadline, (
            f"/ready did not answer 200 in {timeout} s:\n{log.read_text() if log else ''}"
        )
        time.sleep(0.05)
