"""One virtualenv per agent framework, under .venvs/<name>, from examples/<name>/requirements.txt.

    python -m tests.frameworks.venvs            # create or refresh every one (what `make test` runs)
    python -m tests.frameworks.venvs crewai     # just these

The frameworks are heavy and pin conflicting versions, so they stay out of .venv and out of each
other's way. A venv is reused while its stamp holds the hash of its requirements file; a changed
file rebuilds it. A lock per venv keeps concurrent test runs from building the same one twice.
The examples for the plain SDKs (openai, anthropic, mcp) run on .venv's own interpreter.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
VENVS = Path(os.environ.get("INTERLOCK_FRAMEWORK_VENVS", ROOT / ".venvs"))

#: Frameworks with a virtualenv of their own.
FRAMEWORKS = ("langgraph", "crewai", "autogen", "prefect", "temporal", "litellm")
#: Examples whose requirements are already in .venv (the test dependencies).
IN_MAIN_VENV = ("openai_sdk", "anthropic_sdk", "mcp_client")


def requirements(name: str) -> Path:
    return EXAMPLES / name / "requirements.txt"


def digest(name: str) -> str:
    return hashlib.sha256(requirements(name).read_bytes()).hexdigest()


def python(name: str) -> Path:
    """The interpreter that runs example `name`."""
    if name in IN_MAIN_VENV:
        return Path(sys.executable)
    return VENVS / name / "bin" / "python"


def ready(name: str) -> bool:
    stamp = VENVS / name / ".stamp"
    return name in IN_MAIN_VENV or (stamp.exists() and stamp.read_text().strip() == digest(name))


def ensure(name: str) -> Path:
    """The example's interpreter, creating its virtualenv first if it is missing or stale."""
    if ready(name):
        return python(name)
    VENVS.mkdir(parents=True, exist_ok=True)
    with open(VENVS / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready(name):
            target = VENVS / name
            started = time.monotonic()
            venv.EnvBuilder(with_pip=True, clear=True).create(target)
            pip = [str(target / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
            subprocess.run([*pip, "install", "-r", str(requirements(name))], check=True, timeout=1500)
            (target / ".stamp").write_text(digest(name) + "\n")
            print(f"{name}: virtualenv created in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return python(name)


if __name__ == "__main__":
    from concurrent.futures import ThreadPoolExecutor

    names = sys.argv[1:] or list(FRAMEWORKS)
    unknown = [n for n in names if n not in FRAMEWORKS]
    if unknown:
        sys.exit(f"unknown framework(s): {', '.join(unknown)}; known: {', '.join(FRAMEWORKS)}")
    # pip spends most of its time downloading and unpacking: three at once about halves the wait on 2 cores.
    with ThreadPoolExecutor(max_workers=3) as pool:
        for path in pool.map(ensure, names):
            print(path)
