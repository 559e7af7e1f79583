"""Arize Phoenix, a real OTLP backend, in its own virtualenv (its dependencies are not interlock's).

    python -m tests.otel.phoenix install     # what `make test` runs first; idempotent

It installs exactly tests/otel/phoenix.requirements.lock (hash-pinned; `make lock` compiles it).

The tests start it offline on free loopback ports with its telemetry and agent features off, and
read back what it received through its REST API.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from interlock.testing import free_port
from tests import lockedvenv

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("INTERLOCK_PHOENIX_VENV", ROOT / ".venv-phoenix"))
#: Pinned in phoenix.requirements.txt: the tests read its REST API, whose shape is that version's.
LOCK = Path(__file__).with_name("phoenix.requirements.lock")

#: Nothing phones home, nothing reaches past loopback.
OFFLINE_ENV = {
    "PHOENIX_TELEMETRY_ENABLED": "false",
    "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
    "PHOENIX_DISABLE_AGENT_ASSISTANT": "true",
    "PHOENIX_AGENTS_DISABLE_WEB_ACCESS": "true",
    "PHOENIX_AGENTS_DISABLE_BASH": "true",
    "PHOENIX_AGENTS_DISABLE_GITHUB": "true",
    "PHOENIX_HOST": "127.0.0.1",
    "HF_HUB_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
}


def install() -> Path:
    """Create the virtualenv with Phoenix once (tests/lockedvenv.py; rebuilt when the lock changes)."""
    lockedvenv.build(VENV, LOCK)
    return VENV


@dataclass
class Phoenix:
    http_port: int
    grpc_port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def spans(self, trace_id: str, project: str = "default") -> list[dict[str, Any]]:
        response = httpx.get(
            f"{self.url}/v1/projects/{project}/spans", params={"trace_id": trace_id, "limit": 1000}, timeout=10
        )
        if response.status_code == 404:  # the project appears with its first span
            return []
        response.raise_for_status()
        return list(response.json()["data"])

    def wait_for_spans(self, trace_id: str, names: set[str], timeout: float = 30) -> list[dict[str, Any]]:
        """The trace's spans, once every one of `names` is among them."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans(trace_id)
            if names <= {s["name"] for s in spans}:
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"Phoenix has {[s['name'] for s in spans]} for {trace_id}, wanted {names}")
            time.sleep(0.1)


@contextlib.contextmanager
def run_phoenix(working_dir: Path, timeout: float = 120) -> Iterator[Phoenix]:
    """Serve Phoenix on free loopback ports until the block ends."""
    install()
    http_port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        **OFFLINE_ENV,
        "PHOENIX_PORT": str(http_port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_WORKING_DIR": str(working_dir),
    }
    for name in list(env):  # its own tracing must not be pointed anywhere by ours
        if name.startswith("OTEL_"):
            del env[name]
    log = working_dir / "phoenix.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(VENV / "bin" / "phoenix"), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=working_dir
        )
    phoenix = Phoenix(http_port, grpc_port, process, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"Phoenix exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(phoenix.url + "/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"Phoenix did not start in {timeout}s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield phoenix
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        sys.exit(__doc__)
    print(install())
