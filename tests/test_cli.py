"""The `interlock` command: version, config, and a real `serve` that starts, answers and stops on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner

from interlock import __version__
from interlock.cli import main
from interlock.scripted import ScriptedUpstream
from interlock.testing import free_port
from interlock.tracing.store import Store
from tests.readiness import wait_ready


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
        wait_ready(f"http://127.0.0.1:{admin}", process)
        reply = httpx.post(
            f"http://127.0.0.1:{port}/openai/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert reply.json()["choices"][0]["message"]["content"] == "echo: hi"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert process.stdout is not None
        first_line = process.stdout.read().decode().splitlines()[0]  # what `make run` shows first: where to point
        assert (
            first_line
            == f"interlock: point agents at http://127.0.0.1:{port}/openai (OpenAI); UI http://127.0.0.1:{admin}/"
        )
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
        # In a process of its own: `serve` runs its own event loop, which an in-process invoke cannot
        # start when an earlier test left one set on this thread.
        result = subprocess.run(
            [sys.executable, "-m", "interlock.cli", "serve", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"Error: cannot listen on 127.0.0.1:{port}")  # the first line, click's prefix


def test_flags_are_environment_variables_named_after_the_flag(tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "x.db"  # a store that cannot be opened: the error names it
    runner = CliRunner()
    result = runner.invoke(main, ["traces", "ls"], env={"INTERLOCK_TRACES_LS_STORE": str(missing)})
    assert result.exit_code != 0 and str(missing) in result.output
    store = tmp_path / "i.db"
    with Store(str(store)):
        pass
    assert runner.invoke(main, ["traces", "ls", "--store", str(store)]).exit_code == 0
    result = runner.invoke(main, ["traces", "ls", "--store", str(store)], env={"INTERLOCK_TRACES_LS_JSON": "1"})
    assert result.exit_code == 0 and result.output == ""  # JSON lines (none), not a table with a header
    assert runner.invoke(main, ["traces", "ls", "--store", str(store)]).output.strip() != ""


def test_help_shows_the_environment_variables() -> None:
    result = CliRunner().invoke(main, ["traces", "ls", "--help"])
    assert result.exit_code == 0
    for name in ("INTERLOCK_TRACES_LS_STORE", "INTERLOCK_TRACES_LS_JSON", "INTERLOCK_TRACES_LS_SEARCH"):
        assert name in result.output
    assert "STORE_PATH" not in result.output and "AS_JSON" not in result.output
    assert "INTERLOCK_SERVE_STORE" in CliRunner().invoke(main, ["serve", "--help"]).output


def test_negative_limits_are_usage_errors(tmp_path: Path) -> None:
    store = str(tmp_path / "i.db")
    runner = CliRunner()
    for args in (
        ["traces", "ls", "--store", store, "--limit", "-5"],
        ["traces", "ls", "--store", store, "-n", "0"],
        ["traces", "tail", "--store", store, "--lines", "-1"],
        ["traces", "tail", "--store", store, "--interval", "0"],
        ["policy", "whatif", str(tmp_path), "--store", store, "--limit", "-1"],
    ):
        result = runner.invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        assert "Invalid value" in result.output and "range" in result.output


def test_config_check_json(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["config", "check", "--json"])
    assert result.exit_code == 0 and json.loads(result.output) == {
        "ok": True,
        "file": "<embedded default>",
        "routes": 3,
        "warnings": [],
    }
    path = tmp_path / "bad.yaml"
    path.write_text("listen:\n  prot: 1\n")
    result = runner.invoke(main, ["config", "check", "--json", "-c", str(path)])
    assert result.exit_code == 2
    assert json.loads(result.output) == {
        "ok": False,
        "errors": [{"file": str(path), "line": 2, "col": 3, "message": "listen.prot: unknown field"}],
    }


def test_config_show_json_masks_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("INTERLOCK_STATE_URL", "INTERLOCK_VAULT_KEY"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "interlock.yaml"
    path.write_text(
        "admin: {token: admin-secret}\n"
        "routes:\n  openai: {upstream: 'http://127.0.0.1:9/v1', api_key: sk-very-secret}\n"
        "state: {url: 'redis://:redis-secret@127.0.0.1:6379/0', vault_key: vault-key-secret-of-32-characters-or-more}\n"
    )
    result = CliRunner().invoke(main, ["config", "show", "--json", "-c", str(path)])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["admin"]["token"] == "***" and data["listen"]["port"] == 4141
    assert "sk-very-secret" not in result.output and "admin-secret" not in result.output
    assert data["routes"]["openai"]["upstreams"][0]["api_key"] == "***"
    assert data["state"] == {**data["state"], "url": "redis://:***@127.0.0.1:6379/0", "vault_key": "***"}
    assert "redis-secret" not in result.output and "vault-key-secret" not in result.output


def test_config_show_prints_the_effective_store_and_state_the_environment_names_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The environment wins over the file (docs/fleet.md, "Configuration"): `config show` says what
    # `serve` would use, its passwords masked.
    path = tmp_path / "interlock.yaml"
    path.write_text("state: {url: 'redis://file-host:6379/0'}\nstore: {path: ./from-the-file.db}\n")
    monkeypatch.setenv("INTERLOCK_STATE_URL", "redis://:env-redis-secret@env-host:6379/1")
    monkeypatch.setenv("INTERLOCK_VAULT_KEY", "env-vault-key-secret-of-32-characters-or-more")
    monkeypatch.setenv("INTERLOCK_STORE_URL", "postgresql://interlock:env-pg-secret@db-host:5432/calls")
    for args in (["config", "show", "-c", str(path)], ["config", "show", "--json", "-c", str(path)]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        data = yaml.safe_load(result.output)  # JSON is YAML too
        assert data["state"]["url"] == "redis://:***@env-host:6379/1" and data["state"]["vault_key"] == "***"
        assert data["store"]["url"] == "postgresql://interlock:***@db-host:5432/calls"
        assert not any(f"env-{name}-secret" in result.output for name in ("redis", "vault-key", "pg"))
        assert "file-host" not in result.output


def test_config_show_masks_the_credentials_of_every_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A password can sit in a URL's user info or in its query (libpq and redis-py take any
    # connection parameter there), and an upstream, OTel or webhook URL can carry a key.
    for name in ("INTERLOCK_STATE_URL", "INTERLOCK_VAULT_KEY", "INTERLOCK_STORE_URL"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "interlock.yaml"
    path.write_text(
        "routes:\n  openai: {upstream: 'https://bob:upstream-pw@api.example.com/v1?key=upstream-key&v=2'}\n"
        "store: {url: 'postgresql://app@db.example/calls?password=pg-pw&sslmode=require'}\n"
        "state: {url: 'redis://cache.example:6379/0?password=redis-pw', vault_key: vault-key-secret-of-32-characters-ok}\n"
        "otel: {endpoint: 'https://otel:otel-pw@collector.example:4318'}\n"
        "escalation: {webhook: 'https://hooks.example/notify?token=hook-token'}\n"
    )
    result = CliRunner().invoke(main, ["config", "show", "--json", "-c", str(path)])
    assert result.exit_code == 0, result.output
    for secret in ("upstream-pw", "upstream-key", "pg-pw", "redis-pw", "vault-key-secret", "otel-pw", "hook-token"):
        assert secret not in result.output, secret
    data = json.loads(result.output)
    assert data["store"]["url"] == "postgresql://app@db.example/calls?password=***&sslmode=require"
    assert data["routes"]["openai"]["upstreams"][0]["url"] == "https://bob:***@api.example.com/v1?key=***&v=2"


def test_config_check_warns_what_a_store_on_a_server_does_not_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Checked without a server: `config check` reads the file, it does not connect.
    for name in ("INTERLOCK_STATE_URL", "INTERLOCK_STORE_URL"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text("rules:\n  - name: no-rm\n    deny: {tools: [rm]}\n")
    path = tmp_path / "interlock.yaml"
    head = "routes:\n  openai: {protocol: openai, upstream: 'http://127.0.0.1:9'}\npolicies: [policies]\nstore:\n  url: postgresql://u@db/interlock\n"

    def warnings(text: str) -> list[str]:
        path.write_text(text)
        result = CliRunner().invoke(main, ["config", "check", "--json", "-c", str(path)])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)["warnings"]  # type: ignore[no-any-return]

    state, spill = warnings(head)  # per-replica counters and vault; a local spill file
    assert state.startswith(f"{path}:5:3: store.url") and "state.url" in state and "budgets" in state
    assert spill.startswith(f"{path}:5:3: store.url") and "spill_path" in spill
    (spill,) = warnings(head + "state: {url: 'redis://cache:6379/0', vault_key: '" + "k" * 32 + "'}\n")
    assert "spill_path" in spill
    assert (
        warnings(
            head
            + "  spill_path: /data/interlock.spill\nstate: {url: 'redis://cache:6379/0', vault_key: '"
            + "k" * 32
            + "'}\n"
        )
        == []
    )
    # The environment's store is named as such; without one, nothing is said.
    monkeypatch.setenv("INTERLOCK_STORE_URL", "postgresql://u@db/other")
    assert all(
        w.split(": ", 1)[1].startswith("INTERLOCK_STORE_URL") for w in warnings("routes: {}\npolicies: [policies]\n")
    )
    monkeypatch.delenv("INTERLOCK_STORE_URL")
    assert warnings("routes: {}\npolicies: [policies]\n") == []
