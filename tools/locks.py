"""The side locks: one hash-pinned `*.lock` next to each requirements file of a virtualenv that is not .venv.

    python3 tools/locks.py lock [uv pip compile options, e.g. --upgrade]   # what `make lock` runs after `uv lock`
    python3 tools/locks.py check                                           # what `make test` runs first

.venv is locked by uv.lock (from pyproject.toml). The other virtualenvs (each framework example's,
.venv-mcp1, .venv-phoenix, and .venv-uv, which holds uv itself) install from `<name>.lock`, compiled
by `uv pip compile --universal --generate-hashes` from `<name>.txt`. A lock's first line holds the
sha256 of the file it was compiled from, so `check` finds a requirements file changed without
`make lock` offline, in milliseconds. Stdlib only: it runs before any virtualenv exists.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UV = os.environ.get("UV", str(ROOT / ".venv-uv" / "bin" / "uv"))
#: The interpreter the side virtualenvs are made from; a universal lock also serves every other one.
PYTHON_VERSION = "3.11"


def inputs() -> list[Path]:
    """Every requirements file that has (or needs) a lock: each example's, and the test and tool venvs'."""
    fixed = ["tools/uv.requirements.txt", "tests/mcp/mcp1.requirements.txt", "tests/otel/phoenix.requirements.txt"]
    return sorted(ROOT.glob("examples/*/requirements.txt")) + [ROOT / name for name in fixed]


def lock_of(requirements: Path) -> Path:
    return requirements.with_suffix(".lock")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def header(requirements: Path) -> str:
    name = requirements.relative_to(ROOT)
    return f"# Locked by `make lock` from {name} (sha256 {digest(requirements)}); do not edit.\n"


def lock(requirements: Path, options: list[str]) -> None:
    target = lock_of(requirements)
    command = [UV, "pip", "compile", "--quiet", "--universal", "--python-version", PYTHON_VERSION]
    command += ["--generate-hashes", "--no-header", "--output-file", str(target), *options, str(requirements)]
    subprocess.run(command, check=True, cwd=ROOT)
    target.write_text(header(requirements) + target.read_text())


def stale() -> list[str]:
    """One reason per lock that is missing or was compiled from a different requirements file."""
    reasons = []
    for requirements in inputs():
        target = lock_of(requirements)
        name = target.relative_to(ROOT)
        if not target.exists():
            reasons.append(f"{name} is missing")
        elif not target.read_text().startswith(header(requirements)):
            reasons.append(f"{name} is stale: {requirements.relative_to(ROOT)} changed since it was locked")
    return reasons


def main(argv: list[str]) -> int:
    if argv[:1] == ["lock"]:
        for requirements in inputs():
            print(f"locking {requirements.relative_to(ROOT)}", file=sys.stderr)
            lock(requirements, argv[1:])
        return 0
    if argv == ["check"]:
        reasons = stale()
        for reason in reasons:
            print(f"{reason}; run `make lock`", file=sys.stderr)
        return 1 if reasons else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
