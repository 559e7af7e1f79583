"""A virtualenv installed from a hash-pinned lock (tools/locks.py), rebuilt when the lock changes.

    python -m tests.lockedvenv TARGET LOCK      # e.g. .venv-mcp1 tests/mcp/mcp1.requirements.lock

Every virtualenv the suite needs besides .venv (the frameworks', .venv-mcp1, .venv-phoenix) is made
here: `uv venv`, then `uv pip sync --require-hashes` of its lock, so it holds exactly the lock and
nothing a registry changed since. A stamp in the venv holds the lock's sha256; a file lock keeps
concurrent test runs from building the same one twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def uv() -> str:
    """uv as the Makefile bootstrapped it (.venv-uv, pinned by hash), else $UV, else one on PATH."""
    found = os.environ.get("UV") or shutil.which("uv", path=str(ROOT / ".venv-uv" / "bin")) or shutil.which("uv")
    if not found:
        raise RuntimeError("uv not found: run `make .venv-uv/bin/uv` (any make target does) or set UV")
    return found


def digest(lock: Path) -> str:
    return hashlib.sha256(lock.read_bytes()).hexdigest()


def ready(target: Path, lock: Path) -> bool:
    stamp = target / ".stamp"
    return stamp.exists() and stamp.read_text().strip() == digest(lock)


def build(target: Path, lock: Path, timeout: float = 1500) -> Path:
    """`target`'s interpreter, (re)creating the virtualenv from `lock` if it is missing or stale."""
    python = target / "bin" / "python"
    if not lock.exists():
        raise FileNotFoundError(f"{lock} is missing: run `make lock` (it compiles one per requirements file)")
    if ready(target, lock):
        return python
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(f"{target.name}.lock"), "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if not ready(target, lock):
            started = time.monotonic()
            env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
            base = getattr(sys, "_base_executable", sys.executable)
            subprocess.run([uv(), "venv", "--quiet", "--clear", "--python", base, str(target)], check=True, env=env)
            sync = [uv(), "pip", "sync", "--quiet", "--require-hashes", "--python", str(python), str(lock)]
            subprocess.run(sync, check=True, env=env, timeout=timeout)
            (target / ".stamp").write_text(digest(lock) + "\n")
            print(f"{target.name}: virtualenv created in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return python


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(build(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()))
