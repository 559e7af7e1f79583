"""Fail on a function-level import that does not say why it is one (`make lint` runs it; issue 18 part 9).

    .venv/bin/python tools/function_imports.py

An import inside a function hides a dependency from the reader and once hid five import cycles.
It is kept only where it buys something, and a comment says what: startup time measured (a command
that does not need the server should not import it), or an optional dependency (redis-py for a
fleet, presidio for PII, botocore for Bedrock signing...). The comment sits on the import's line or
just above the run of imports it belongs to. Imports under `if TYPE_CHECKING:` never run: not counted.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def unexplained(path: Path) -> list[tuple[int, str]]:
    """(line, text) of each function-level import in `path` without a comment saying why."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    type_only = {
        id(sub)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for sub in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom) or node.col_offset == 0 or id(node) in type_only:
            continue
        if any("#" in lines[n - 1] for n in range(node.lineno, (node.end_lineno or node.lineno) + 1)):
            continue
        # Up through the run of imports above it (and a `try:`), to the comment that heads the run.
        above = node.lineno - 2
        while above >= 0 and (lines[above].strip().startswith(("from ", "import ")) or lines[above].strip() == "try:"):
            above -= 1
        if above >= 0 and lines[above].strip().startswith("#"):
            continue
        found.append((node.lineno, lines[node.lineno - 1].strip()))
    return found


def main() -> int:
    files = sorted((ROOT / "interlock").rglob("*.py"))
    missing = [(path.relative_to(ROOT), line, text) for path in files for line, text in unexplained(path)]
    for path, line, text in missing:
        print(f"{path}:{line}: a function-level import without a comment saying why: {text}")
    if missing:
        print(f"{len(missing)} function-level import(s) unexplained: import at module level, or say what it buys")
        return 1
    print(f"every function-level import in interlock's {len(files)} files says why it is one")
    return 0


if __name__ == "__main__":
    sys.exit(main())
