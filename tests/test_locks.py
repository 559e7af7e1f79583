"""The side locks (tools/locks.py): one per requirements file, current, and every package pinned by hash.

uv.lock's agreement with pyproject.toml is `uv lock --check`, which `make test` runs first.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_locks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("locks", ROOT / "tools" / "locks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


locks = load_locks()


def test_every_requirements_file_has_a_current_lock() -> None:
    assert locks.stale() == []
    assert ROOT / "examples" / "langgraph" / "requirements.txt" in locks.inputs()


@pytest.mark.parametrize("requirements", locks.inputs(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_locked_package_is_pinned_by_hash(requirements: Path) -> None:
    text = locks.lock_of(requirements).read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1])  # one per `name==version \` line
    assert entries
    for entry in entries:
        assert re.match(r"[A-Za-z0-9._\-\[\],]+==[^\s;]+( ; [^\\\n]+)? \\\n", entry), entry  # exact, maybe a marker
        assert "--hash=sha256:" in entry, entry


def test_a_changed_requirements_file_makes_its_lock_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    requirements = tmp_path / "examples" / "demo" / "requirements.txt"
    requirements.parent.mkdir(parents=True)
    requirements.write_text("openai==3.57.0\n")
    monkeypatch.setattr(locks, "ROOT", tmp_path)
    monkeypatch.setattr(locks, "inputs", lambda: [requirements])
    assert locks.stale() == ["examples/demo/requirements.lock is missing"]
    locks.lock_of(requirements).write_text(locks.header(requirements) + "openai==3.57.0 \\\n    --hash=sha256:00\n")
    assert locks.stale() == []
    requirements.write_text("openai==3.58.0\n")
    assert locks.stale() == [
        "examples/demo/requirements.lock is stale: examples/demo/requirements.txt changed since it was locked"
    ]
