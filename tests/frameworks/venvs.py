"""One virtualenv per agent framework, under .venvs/<name>, from examples/<name>/requirements.lock.

    python -m tests.frameworks.venvs            # create or refresh every one (what `make test` runs)
    python -m tests.frameworks.venvs crewai     # just these

The frameworks are heavy and pin conflicting versions, so they stay out of .venv and out of each
other's way. Each installs exactly its example's lock (hash-pinned, compiled by `make lock` from the
example's requirements.txt; tests/lockedvenv.py); a changed lock rebuilds the venv.
The examples for the plain SDKs (openai, anthropic, mcp) run on .venv's own interpreter.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests import lockedvenv

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
VENVS = Path(os.environ.get("INTERLOCK_FRAMEWORK_VENVS", ROOT / ".venvs"))

#: Examples whose requirements are already in .venv (the test dependencies).
IN_MAIN_VENV = ("openai_sdk", "anthropic_sdk", "mcp_client")
#: Frameworks with a virtualenv of their own: every other example with a requirements.txt, so a new
#: example directory is built (and `make lock` locks it) with no list to update.
FRAMEWORKS = tuple(
    sorted(path.parent.name for path in EXAMPLES.glob("*/requirements.txt") if path.parent.name not in IN_MAIN_VENV)
)


def lock(name: str) -> Path:
    """The example's hash-pinned lock (`make lock` compiles it from requirements.txt next to it)."""
    return EXAMPLES / name / "requirements.lock"


def python(name: str) -> Path:
    """The interpreter that runs example `name`."""
    if name in IN_MAIN_VENV:
        return Path(sys.executable)
    return VENVS / name / "bin" / "python"


def ready(name: str) -> bool:
    return name in IN_MAIN_VENV or lockedvenv.ready(VENVS / name, lock(name))


def ensure(name: str) -> Path:
    """The example's interpreter, creating its virtualenv first if it is missing or stale."""
    if name in IN_MAIN_VENV:
        return python(name)
    return lockedvenv.build(VENVS / name, lock(name))


if __name__ == "__main__":
    from concurrent.futures import ThreadPoolExecutor

    names = sys.argv[1:] or list(FRAMEWORKS)
    unknown = [n for n in names if n not in FRAMEWORKS]
    if unknown:
        sys.exit(f"unknown framework(s): {', '.join(unknown)}; known: {', '.join(FRAMEWORKS)}")
    # Downloading and unpacking dominate: three at once about halves the wait on 2 cores.
    with ThreadPoolExecutor(max_workers=3) as pool:
        for path in pool.map(ensure, names):
            print(path)
