"""Processes under test: the fake upstream and interlock as subprocesses on free loopback ports.

Also what the bench reads from /proc: resident memory (VmRSS, VmHWM) and CPU time (utime + stime,
all threads), which gives CPU per request, a number far less noisy than wall-clock latency when
other work shares the machine.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mib(pid: int, field_name: str = "VmRSS") -> float:
    """Resident memory of a process in MiB (`VmHWM` for the peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) and its live descendants, in seconds
    (interlock may run helpers, e.g. an export process)."""
    total = 0.0
    for each in [pid, *descendants(pid)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *descendants(child)]
    return found


@dataclass
class Proc:
    """A subprocess under test."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    admin_port: int | None = None
    spawned_at: float = 0.0
    ready_after: float = 0.0  # seconds from spawn to ready
    workdir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss(self) -> float:
        return rss_mib(self.pid)

    def peak_rss(self) -> float:
        return rss_mib(self.pid, "VmHWM")

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self, timeout: float = 30) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@contextlib.contextmanager
def fake_upstream(
    *,
    chunks: int = 10,
    chunk_interval_ms: float = 5.0,
    event_bytes: int = 0,
    fail_503: float = 0.0,
    reset: float = 0.0,
    seed: int = 1,
    sink: bool = False,
) -> Iterator[Proc]:
    """The fast fake provider (bench/fake_upstream.py) in its own process."""
    port = free_port()
    args = [
        PYTHON,
        "-m",
        "bench.fake_upstream",
        "--port",
        str(port),
        "--chunks",
        str(chunks),
        "--chunk-interval-ms",
        str(chunk_interval_ms),
        "--event-bytes",
        str(event_bytes),
        "--fail-503",
        str(fail_503),
        "--reset",
        str(reset),
        "--seed",
        str(seed),
        *(["--sink"] if sink else []),
    ]
    popen = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE)
    proc = Proc("fake-upstream", popen, port, spawned_at=time.perf_counter())
    try:
        assert popen.stdout is not None
        line = popen.stdout.readline().decode()
        if not line.startswith("ready"):
            raise RuntimeError(f"the fake upstream did not start: {line!r}")
        proc.ready_after = time.perf_counter() - proc.spawned_at
        yield proc
    finally:
        proc.stop()
        if popen.stdout is not None:
            for line in popen.stdout.read().decode().splitlines():
                if line.startswith("served "):
                    proc.extra["served"] = int(line.split()[1])


def interlock_config(upstreams: list[str] | str, workdir: Path, **sections: Any) -> dict[str, Any]:
    """An interlock.yaml (as a dict) with route `openai` → the given upstream(s), on free ports."""
    if isinstance(upstreams, str):
        route: dict[str, Any] = {"protocol": "openai", "upstream": upstreams}
    else:
        route = {
            "protocol": "openai",
            "upstreams": [{"url": u, "name": f"u{i}"} for i, u in enumerate(upstreams)],
        }
    route.update(sections.pop("route", {}))
    config: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": free_port()},
        "admin": {"host": "127.0.0.1", "port": free_port()},
        "store": {"path": str(workdir / "interlock.db")},
        "log_level": "warning",
        "routes": {"openai": route},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


#: How long a started server may take to be ready: guardrails' start (presidio, its warm-up) took
#: ~20 s at load average 12 on this 2-core machine, and 30 s failed runs under shared load.
READY_TIMEOUT = 120.0


def wait_ready(port: int, popen: subprocess.Popen[bytes], timeout: float = READY_TIMEOUT, path: str = "/ready") -> None:
    """Poll GET `path` on loopback until it answers 200 (a dead process fails at once)."""
    deadline = time.perf_counter() + timeout
    while True:
        if popen.poll() is not None:
            raise RuntimeError(f"the process exited with {popen.returncode} before it was ready")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", path)
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                return
        except OSError:
            pass
        if time.perf_counter() > deadline:
            raise RuntimeError(f"not ready on :{port}{path} after {timeout}s")
        time.sleep(0.005)


def wait_listening(port: int, popen: subprocess.Popen[bytes], timeout: float = READY_TIMEOUT) -> None:
    """Poll until something accepts TCP connections on loopback `port`."""
    deadline = time.perf_counter() + timeout
    while True:
        if popen.poll() is not None:
            raise RuntimeError(f"the process exited with {popen.returncode} before it listened")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.perf_counter() > deadline:
            raise RuntimeError(f"nothing listening on :{port} after {timeout}s")
        time.sleep(0.002)


@contextlib.contextmanager
def interlock(
    config: dict[str, Any],
    *,
    name: str = "interlock",
    env: dict[str, str] | None = None,
    args: Sequence[str] = (),
    python: str = PYTHON,
) -> Iterator[Proc]:
    """`python -m interlock.cli serve --config <generated yaml> [args]` until the block ends. `python`:
    another checkout's interpreter (its `.venv/bin/python`), for a before/after in one run."""
    workdir = Path(tempfile.mkdtemp(prefix="interlock-bench-"))
    path = workdir / "interlock.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    log = (workdir / "interlock.log").open("wb")
    spawned = time.perf_counter()
    popen = subprocess.Popen(
        [python, "-m", "interlock.cli", "serve", "--config", str(path), *args],
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    proc = Proc(name, popen, config["listen"]["port"], config["admin"]["port"], spawned, workdir=workdir)
    try:
        wait_ready(config["admin"]["port"], popen)
        proc.ready_after = time.perf_counter() - spawned
        yield proc
    except BaseException:
        log.flush()
        sys.stderr.write((workdir / "interlock.log").read_text()[-4000:])
        raise
    finally:
        proc.stop()
        log.close()


@contextlib.contextmanager
def floor(upstream: str) -> Iterator[Proc]:
    """The Python floor (bench/floor.py: a bare starlette + httpx-aiohttp relay) in its own process."""
    port = free_port()
    popen = subprocess.Popen(
        [PYTHON, "-m", "bench.floor", "--port", str(port), "--upstream", upstream], cwd=ROOT, stdout=subprocess.PIPE
    )
    proc = Proc("floor", popen, port, spawned_at=time.perf_counter())
    try:
        assert popen.stdout is not None
        if not popen.stdout.readline().startswith(b"ready"):
            raise RuntimeError("the Python floor did not start")
        proc.ready_after = time.perf_counter() - proc.spawned_at
        yield proc
    finally:
        proc.stop()


def quiet_cpu(seconds: float = 0.5) -> float:
    """Fraction of the machine's CPU busy over `seconds` (other work running alongside the bench)."""

    def sample() -> tuple[int, int]:
        parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = parts[3] + parts[4]
        return sum(parts), idle

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


_SCRIPTED = """
import asyncio, sys
from interlock.scripted import ScriptedUpstream

async def main():
    upstream = ScriptedUpstream(port=int(sys.argv[1]))
    task = asyncio.create_task(upstream.serve_forever())
    while upstream._server is None or not upstream._server.started:
        await asyncio.sleep(0.01)
    print("ready", flush=True)
    await task

asyncio.run(main())
"""


@contextlib.contextmanager
def scripted_upstream() -> Iterator[Proc]:
    """interlock/scripted/ (the tests' fake provider) in its own process, for comparison."""
    port = free_port()
    popen = subprocess.Popen([PYTHON, "-c", _SCRIPTED, str(port)], cwd=ROOT, stdout=subprocess.PIPE)
    proc = Proc("scripted-upstream", popen, port, spawned_at=time.perf_counter())
    try:
        assert popen.stdout is not None
        if not popen.stdout.readline().startswith(b"ready"):
            raise RuntimeError("the scripted upstream did not start")
        yield proc
    finally:
        proc.stop()
