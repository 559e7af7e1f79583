"""interlock as a real subprocess (`interlock serve`), for what only a process can show: its memory
(RSS from /proc), its exit."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from interlock.testing import free_port


class Served:
    def __init__(self, process: subprocess.Popen[bytes], url: str, admin_url: str, db: Path, log: Path) -> None:
        self.process, self.url, self.admin_url, self.db, self.log = process, url, admin_url, db, log

    def rss_peak_mb(self) -> float:
        """The process's peak resident memory so far (VmHWM), in MB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")


def serve_process(tmp_path: Path, started: list[subprocess.Popen[bytes]], **config: Any) -> Served:
    """Start `interlock serve` with `config` (listen/admin ports and the store path are set here)."""
    port, admin_port = free_port(), free_port()
    db = tmp_path / "interlock.db"
    data: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": {"host": "127.0.0.1", "port": admin_port},
        "shutdown_grace": 5,
        "log_level": "warning",
        **config,
    }
    data["store"] = {"path": str(db), **(config.get("store") or {})}
    path = tmp_path / "interlock.yaml"
    path.write_text(yaml.safe_dump(data))
    log = tmp_path / "interlock.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "interlock.cli", "serve", "--config", str(path)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    started.append(process)
    served = Served(process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}", db, log)
    deadline = time.monotonic() + 120  # a cold start on a loaded 2-core machine
    while True:
        assert process.poll() is None, "interlock exited at startup: " + log.read_text()
        try:
            if httpx.get(served.admin_url + "/ready", timeout=1).status_code == 200:
                return served
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "interlock did not become ready"
        time.sleep(0.05)
