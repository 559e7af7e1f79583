"""Fixtures for the MCP tests: real MCP servers on loopback (the `mcp` SDK 2.x in a thread, 1.x in its
own virtualenv as a subprocess), interlock in front of them, and the calls it recorded."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from interlock.testing import Running, free_port, run_interlock, settings_for_test
from tests import lockedvenv
from tests.mcp.servers import (
    MCP1_LOCK,
    MCP1_SCRIPT,
    MCP1_VENV,
    Collector,
    HangUp,
    ThreadServer,
    build_server,
    port_open,
    wait_for,
)


@pytest.fixture(scope="session")
def mcp2_server() -> Iterator[ThreadServer]:
    """The 2.x SDK's MCPServer over Streamable HTTP (both eras: it answers initialize and discover)."""
    with ThreadServer(HangUp(build_server().streamable_http_app())) as server:
        yield server


# -- recorded calls ----------------------------------------------------------------------------------


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def mcp_interlock(tmp_path: Path, collector: Collector) -> Iterator[Any]:
    """Start interlock with MCP routes (`extra` config merges in); yields a starter function."""
    stack: list[Any] = []

    def start(routes: dict[str, str], **config: Any) -> Running:
        data: dict[str, Any] = {
            "routes": {name: {"protocol": "mcp", "upstream": url} for name, url in routes.items()},
            "shutdown_grace": 1,
        }
        data.update(config)
        context = run_interlock(settings_for_test(data, tmp_path), stages=[collector])
        stack.append(context)
        return context.__enter__()

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


# -- the 1.x SDK, in its own virtualenv --------------------------------------------------------------


@pytest.fixture(scope="session")
def mcp1_python() -> Path:
    """`.venv-mcp1/bin/python`, with the `mcp` SDK 1.x from tests/mcp/mcp1.requirements.lock; created on
    first use (`make test` creates it too). 1.x and 2.x are both `import mcp`, so they cannot share a
    virtualenv."""
    return lockedvenv.build(MCP1_VENV, MCP1_LOCK)


@pytest.fixture(scope="session")
def mcp1_server(mcp1_python: Path) -> Iterator[str]:
    """The 1.x SDK's FastMCP over Streamable HTTP, as a subprocess; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [str(mcp1_python), str(MCP1_SCRIPT), "serve", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: port_open(port) or process.poll() is not None, 30, "the 1.x server to listen")
        if process.poll() is not None:
            raise RuntimeError(f"the 1.x server exited: {process.stderr.read().decode() if process.stderr else ''}")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
        if process.stderr is not None:
            process.stderr.close()
