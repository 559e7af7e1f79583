"""Arize Phoenix, a real OTLP backend, in its own virtualenv (its dependencies are not interlock's).

    python -m tests.tracing.phoenix install     # what `make test` runs first; idempotent

The tests start it offline on free loopback ports with its telemetry and agent features off, and
read back what it received through its REST API.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from interlock.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("INTERLOCK_PHOENIX_VENV", ROOT / ".venv-phoenix"))
#: Pinned: the tests read its REST API, whose shape is this version's.
REQUIREMENT = "arize-phoenix==20.26.1"
STAMP = VENV / ".installed"

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
    """Create the virtualenv with Phoenix once (a lock keeps concurrent test runs from racing)."""
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / ".venv-phoenix.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if STAMP.exists() and STAMP.read_text().strip() == REQUIREMENT:
            return VENV
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
        subprocess.run([*pip, "install", REQUIREMENT], check=True)
        STAMP.write_text(REQUIREMENT + "\n")
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
