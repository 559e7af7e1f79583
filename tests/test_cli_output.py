"""What the CLI prints: one error prefix everywhere (click's own `Error: `), and `serve`'s log lines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from interlock.cli import main
from interlock.testing import free_port
from tests.readiness import wait_ready


def failing_commands(tmp_path: Path) -> dict[str, list[str]]:
    bad = tmp_path / "bad.yaml"
    bad.write_text("nope: 1\n")
    junk = tmp_path / "junk.db"
    junk.write_text("not a bundle")
    return {
        "config check": ["config", "check", "--config", str(bad)],  # interlock's config error
        "serve": ["serve", "--config", str(bad)],
        "traces ls": ["traces", "ls", "--store", str(tmp_path / "missing" / "x.db")],  # click.ClickException
        "import": ["import", str(junk), "--store", str(tmp_path / "i.db")],  # replay's commands
        "usage": ["traces", "ls", "--limit", "0"],  # click's own usage error
    }


@pytest.mark.parametrize("command", ["config check", "serve", "traces ls", "import", "usage"])
def test_every_error_line_begins_with_clicks_own_prefix(tmp_path: Path, command: str) -> None:
    result = CliRunner().invoke(main, failing_commands(tmp_path)[command])
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.lower().startswith("error")]
    assert lines and all(line.startswith("Error: ") for line in lines), result.stderr


@pytest.mark.parametrize("log_level", ["info", "warning"])
def test_serve_logs_ready_once_at_info_with_otel_on(tmp_path: Path, log_level: str) -> None:
    # `interlock ready` is news, not a warning: at INFO, once (the OTel exporter on or not); the first
    # line on stdout is where to point agents.
    admin = free_port()
    config = tmp_path / "interlock.yaml"
    config.write_text(
        f"listen: {{port: 0}}\nadmin: {{port: {admin}}}\nstore: {{path: {tmp_path / 'i.db'}}}\n"
        f"log_level: {log_level}\notel: {{endpoint: 'http://127.0.0.1:9'}}\n"
        "routes:\n  openai: {upstream: 'http://127.0.0.1:9/v1'}\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "interlock.cli", "serve", "--config", str(config)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_ready(f"http://127.0.0.1:{admin}", process)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    output = stdout.decode() + stderr.decode()
    ready = [line for line in output.splitlines() if "interlock ready" in line]
    assert [" INFO " in line for line in ready] == ([True] if log_level == "info" else []), output
    assert stdout.decode().startswith("interlock: point agents at")
