"""The import checks `make lint` runs (tools/import_cycles.py, tools/function_imports.py) catch what
they are there to catch: a cycle hidden in a function, an unexplained function-level import."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import grimp
import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def _tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _package(root: Path, name: str, modules: dict[str, str]) -> None:
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    for module, source in modules.items():
        (package / f"{module}.py").write_text(source)


def test_a_cycle_closed_inside_a_function_is_a_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _package(
        tmp_path,
        "cyclepkg",
        {
            "a": "from cyclepkg import b\n",
            "b": "def f():\n    from cyclepkg import a\n    return a\n",
            "c": "from cyclepkg import a\n",
            "d": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cyclepkg import c\n",
            "e": "from cyclepkg import d\n",
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("cyclepkg", exclude_type_checking_imports=True, cache_dir=None)
    cycles = _tool("import_cycles")
    # a <-> b through b's function; c only imports a; d -> c is a type-only import (never runs).
    assert cycles.cycles(graph) == [["cyclepkg.a", "cyclepkg.b"]]
    assert any(
        "cyclepkg.b:2 imports cyclepkg.a" in line for line in cycles.describe(graph, ["cyclepkg.a", "cyclepkg.b"])
    )


def test_a_function_level_import_must_say_why(tmp_path: Path) -> None:
    source = tmp_path / "module.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    import decimal\n"
        "def unexplained():\n"
        "    import json\n"
        "def optional():\n"
        "    # Optional dependency: only with the extra.\n"
        "    try:\n"
        "        import redis\n"
        "        import redis.asyncio\n"
        "    except ImportError:\n"
        "        pass\n"
        "def inline():\n"
        "    import csv  # Startup: measured\n"
    )
    assert _tool("function_imports").unexplained(source) == [(5, "import json")]
