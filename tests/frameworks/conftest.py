"""Fixtures for the framework tests: each example runs as a subprocess, on its framework's own
virtualenv, through a real interlock to the scripted upstream, with no way out to the network.

Nothing may reach past loopback: every example gets HTTP(S)_PROXY pointed at `NetworkTrap`, a
loopback listener that records whoever tries (a library fetching files, telemetry) and refuses them;
each test asserts it saw no one. Libraries that would phone home are switched off by environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from interlock.cli import main as interlock_cli
from interlock.testing import Running, recorded_answer
from interlock.tracing.store import Store
from tests.frameworks import venvs

EXAMPLES = venvs.EXAMPLES

#: Switches that keep the frameworks offline and quiet (see docs/frameworks.md).
OFFLINE_ENV = {
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_DISABLE_TRACKING": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "OTEL_SDK_DISABLED": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "ANONYMIZED_TELEMETRY": "False",
    "LANGCHAIN_TRACING_V2": "false",
    "LANGSMITH_TRACING": "false",
    "DO_NOT_TRACK": "1",
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}

#: Variables of the test process that must not leak into an example (keys, endpoints, our OTel).
_DROP_PREFIXES = ("OPENAI_", "ANTHROPIC_", "OTEL_", "LITELLM_", "PREFECT_", "CREWAI_", "LANGCHAIN_", "LANGSMITH_")
_DROP = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy"}


class NetworkTrap:
    """A loopback listener posing as the HTTP(S) proxy: records every connection attempt and refuses it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.seen: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="network-trap", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    head = conn.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
                except OSError:
                    head = "(no request line)"
                with self._lock:
                    self.seen.append(head)
                try:
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                except OSError:
                    pass  # the client may close first; what the test checks is `seen`, the request line

    def take(self) -> list[str]:
        with self._lock:
            seen, self.seen = self.seen, []
        return seen

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="session")
def network_trap() -> Iterator[NetworkTrap]:
    trap = NetworkTrap()
    yield trap
    trap.close()


@pytest.fixture
def trap(network_trap: NetworkTrap) -> Iterator[NetworkTrap]:
    network_trap.take()
    yield network_trap
    reached = network_trap.take()
    assert not reached, f"the example tried to reach the network: {reached}"


#: tiktoken caches an encoding file under the SHA-1 of its download URL.
TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
ENCODINGS = ("cl100k_base", "o200k_base")


@pytest.fixture(scope="session")
def tiktoken_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TIKTOKEN_CACHE_DIR holding the encodings, from the files the litellm package ships (tiktoken
    would download them at run time otherwise)."""
    python = venvs.ensure("litellm")
    shipped = next(python.parents[1].glob("lib/python*/site-packages/litellm/litellm_core_utils/tokenizers"))
    cache = tmp_path_factory.mktemp("tiktoken")
    for encoding in ENCODINGS:
        name = hashlib.sha1(TIKTOKEN_URL.format(encoding).encode()).hexdigest()
        shutil.copyfile(shipped / name, cache / name)
    return cache


@dataclass
class Example:
    """Runs one example on its interpreter, with an offline environment in a temporary HOME."""

    name: str
    python: Path
    home: Path
    trap: NetworkTrap
    tiktoken_cache: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(_DROP_PREFIXES) and k not in _DROP and k != "HOME"
        }
        env.update(OFFLINE_ENV)
        env.update(
            HOME=str(self.home),
            TIKTOKEN_CACHE_DIR=str(self.tiktoken_cache),
            XDG_CACHE_HOME=str(self.home / ".cache"),
            XDG_DATA_HOME=str(self.home / ".local" / "share"),
            HTTP_PROXY=self.trap.url,
            HTTPS_PROXY=self.trap.url,
            ALL_PROXY=self.trap.url,
            http_proxy=self.trap.url,
            https_proxy=self.trap.url,
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
        )
        env.update(extra)
        return env

    def run(self, *args: str, script: str = "agent.py", timeout: float = 180, **env: str) -> dict[str, Any]:
        """Run the example; its last stdout line is JSON (what the agent got), returned parsed."""
        started = time.monotonic()
        process = subprocess.run(
            [str(self.python), str(EXAMPLES / self.name / script), *args],
            env=self.env(**env),
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        took = time.monotonic() - started
        detail = f"exit {process.returncode} after {took:.1f}s\nstdout:\n{process.stdout[-4000:]}\nstderr:\n{process.stderr[-6000:]}"
        assert process.returncode == 0, detail
        lines = [line for line in process.stdout.splitlines() if line.startswith("{")]
        assert lines, detail
        return dict(json.loads(lines[-1]))


@pytest.fixture
def example(request: pytest.FixtureRequest, tmp_path: Path, trap: NetworkTrap, tiktoken_cache: Path) -> Example:
    """The example named by the test module's `FRAMEWORK`, its virtualenv created on first use."""
    name = request.module.FRAMEWORK
    home = tmp_path / "home"
    home.mkdir()
    return Example(name, venvs.ensure(name), home, trap, tiktoken_cache)


# -- what interlock recorded -------------------------------------------------------------------------


def recorded(running: Running, session: str, count: int, timeout: float = 60) -> list[dict[str, Any]]:
    """The session's calls (narrow rows, oldest first), once at least `count` are in the store."""
    recorder = running.runtime.recorder
    deadline = time.monotonic() + timeout
    with Store(running.settings.store.path, readonly=True) as store:
        while True:
            recorder.flush()
            summary = store.session(session)
            if summary is not None and len(summary["calls"]) >= count:
                return list(summary["calls"])
            assert time.monotonic() < deadline, f"session {session!r}: {summary and len(summary['calls'])} calls"
            time.sleep(0.02)


def tool_calls(running: Running, call_id: str) -> list[str]:
    """Names of the tools the model asked for in this call's response (streamed or not)."""
    with Store(running.settings.store.path, readonly=True) as store:
        return [t.name for t in recorded_answer(store, call_id).tool_calls]


def request_json(running: Running, call_id: str) -> Any:
    with Store(running.settings.store.path, readonly=True) as store:
        call = store.get_call(call_id)
        assert call is not None
        return json.loads(call.request_body)


def cli_traces(running: Running, session: str) -> list[dict[str, Any]]:
    """`interlock traces ls --json --session S`, as a user would run it (and its table agrees)."""
    result = CliRunner().invoke(
        interlock_cli, ["traces", "ls", "--json", "--session", session, "--store", running.settings.store.path]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines() if line.strip()]
    table = CliRunner().invoke(
        interlock_cli, ["traces", "ls", "--session", session, "--store", running.settings.store.path]
    )
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].split()[:4] == ["ID", "TIME", "AGENT", "SESSION"] and len(lines) == len(rows) + 1
    assert all(line.split()[0] == row["id"] and row["agent"] in line for line, row in zip(lines[1:], rows, strict=True))
    return rows


def ui_shows(running: Running, session: str, agent: str) -> None:
    """The session as a person sees it: in the admin API, on the UI's sessions page and its own page."""
    import httpx

    response = httpx.get(f"{running.admin_url}/api/sessions/{session}", timeout=10)
    assert response.status_code == 200, response.text
    assert agent in json.dumps(response.json())
    sessions_page = httpx.get(running.admin_url + "/", timeout=10)
    assert sessions_page.status_code == 200
    assert session in sessions_page.text and agent in sessions_page.text
    page = httpx.get(running.admin_url + "/session", params={"id": session}, timeout=10)
    assert page.status_code == 200, page.text
    assert agent in page.text


def assert_session(
    running: Running,
    session: str,
    *,
    agent: str,
    calls: int,
    tools: list[str],
    route: str = "openai",
    stream: bool | None = None,
) -> list[dict[str, Any]]:
    """What every framework test checks: one session, the right agent, every call ok with its tokens,
    the tools the model called, and the same calls through the CLI and the admin API."""
    rows = recorded(running, session, calls)
    assert len(rows) == calls, [(r["path"], r["outcome"]) for r in rows]
    for row in rows:
        assert row["agent"] == agent
        assert row["route"] == route
        assert row["outcome"] == "ok", row
        assert row["status"] == 200
        assert (row["input_tokens"], row["output_tokens"]) == (11, 7), row
        if stream is not None:
            assert row["stream"] is stream, row
    asked = [name for row in rows for name in tool_calls(running, row["id"])]
    assert asked == tools
    listed = cli_traces(running, session)
    assert sorted(r["id"] for r in listed) == sorted(r["id"] for r in rows)
    assert {r["agent"] for r in listed} == {agent}
    ui_shows(running, session, agent)
    return rows
