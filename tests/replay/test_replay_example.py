"""examples/replay: the documented incident-as-regression-test runs, through the pytest plugin."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_example_incident_test_passes_with_the_plugin() -> None:
    registered = any(e.value == "interlock.pytest_plugin" for e in entry_points(group="pytest11"))
    # An installed interlock registers the plugin itself; a stale editable install may predate it.
    plugin = [] if registered else ["-p", "interlock.pytest_plugin"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin, str(ROOT / "examples" / "replay")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
