"""interlock as a real subprocess (`interlock serve`), for what only a process can show: its memory
(RSS from /proc), its exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from interlock.testing import free_port
from tests.readiness import wait_ready


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
    store = config.get("store") or {}
    # A database server's side file in the test's directory; else the SQLite file is there.
    data["store"] = (
        {"spill_path": str(tmp_path / "interlock.spill"), **store} if "url" in store else {"path": str(db), **store}
    )
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
    wait_ready(served.admin_url, process, log=log)
    return served
