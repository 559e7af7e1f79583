"""The `interlock` command: version, config, and a real `serve` that starts, answers and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from click.testing import CliRunner

from interlock import __version__
from interlock.cli import main
from interlock.scripted import ScriptedUpstream
from interlock.testing import free_port


def test_version_and_help() -> None:
    runner = CliRunner()
    assert __version__ in runner.invoke(main, ["--version"]).output
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0 and "serve" in result.output


def test_config_show_prints_the_embedded_default() -> None:
    result = CliRunner().invoke(main, ["config", "show"])
    assert result.exit_code == 0
    assert "port: 4141" in result.output and "api.anthropic.com" in result.output


def test_bad_config_stops_with_file_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("listen:\n  prot: 1\n")
    result = CliRunner().invoke(main, ["serve", "--config", str(path)])
    assert result.exit_code == 2
    assert f"{path}:2:3: listen.prot: unknown field" in result.output


def test_config_comes_from_the_environment_too(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("nope: 1\n")
    result = CliRunner().invoke(main, ["config", "check"], env={"INTERLOCK_CONFIG_CHECK_CONFIG": str(path)})
    assert result.exit_code == 2 and "unknown field" in result.output


def test_serve_answers_then_stops_cleanly_on_sigterm(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    port, admin = free_port(), free_port()
    config = tmp_path / "interlock.yaml"
    config.write_text(
        f"listen: {{port: {port}}}\nadmin: {{port: {admin}}}\nstore: {{path: {tmp_path / 'i.db'}}}\n"
        f"routes:\n  openai: {{upstream: '{upstream.url}/v1'}}\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "interlock.cli", "serve", "--config", str(config)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{admin}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "interlock did not become ready"
            time.sleep(0.05)
        reply = httpx.post(
            f"http://127.0.0.1:{port}/openai/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert reply.json()["choices"][0]["message"]["content"] == "echo: hi"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "interlock.yaml"
        config.write_text(f"listen: {{port: {port}}}\nadmin: {{port: 0}}\nstore: {{path: {tmp_path / 'i.db'}}}\n")
        result = CliRunner().invoke(main, ["serve", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert f"error: cannot listen on 127.0.0.1:{port}" in result.output
