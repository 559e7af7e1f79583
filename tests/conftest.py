from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from click.testing import CliRunner

from interlock.cli import main
from interlock.scripted import ScriptedUpstream
from interlock.testing import Running, run_interlock, settings_for_test
from tests.servers import PostgresServer, RedisServer

Closable = TypeVar("Closable")
_OPEN_CLIENTS: list[Any] = []


def closed_after_test(client: Closable) -> Closable:
    """`client` (an SDK client, an httpx.Client) closed when the test ends. Left to the garbage
    collector, its pooled sockets raise an unclosed-socket ResourceWarning (an error here) in
    whichever test happens to run then (CI: tests/proxy/test_cost.py failed on one)."""
    _OPEN_CLIENTS.append(client)
    return client


def passes_policy_test(tmp_path: Path, config: str, rules: str, cases: str) -> None:
    """`interlock policy test` of `rules` against `cases` under `config` (each text written to a
    file in `tmp_path`) passes: every case's decision is the one it expects."""
    files = {name: tmp_path / f"{name}.yaml" for name in ("interlock", "rules", "cases")}
    for name, text in zip(files, (config, rules, cases), strict=True):
        files[name].write_text(text)
    args = ["policy", "test", str(files["rules"]), "--cases", str(files["cases"]), "-c", str(files["interlock"])]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output


#: Every sync httpx client (the openai and anthropic SDKs' included) made while a test runs: closed
#: when it ends, so a test that built one without `with` or `closed_after_test` cannot leave its
#: pooled sockets to the garbage collector, whose unclosed-socket ResourceWarning (an error here)
#: would fail whichever later test it happens in (CI: tests/otel/test_otel_metrics.py failed on an
#: SDK client the test before it left open).
_MADE_IN_TEST: weakref.WeakSet[httpx.Client] = weakref.WeakSet()
_tracking = False
_httpx_client_init = httpx.Client.__init__


def _tracked_init(self: httpx.Client, *args: Any, **kwargs: Any) -> None:
    _httpx_client_init(self, *args, **kwargs)
    if _tracking:
        _MADE_IN_TEST.add(self)


httpx.Client.__init__ = _tracked_init  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    global _tracking
    _tracking = True
    try:
        yield
    finally:
        _tracking = False
        while _OPEN_CLIENTS:
            _OPEN_CLIENTS.pop().close()
        for client in list(_MADE_IN_TEST):
            if not client.is_closed:
                client.close()
        _MADE_IN_TEST.clear()


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as server:
        yield server


@pytest.fixture
def upstream(upstream_server: ScriptedUpstream) -> Iterator[ScriptedUpstream]:
    upstream_server.reset()
    yield upstream_server
    upstream_server.reset()


def routes_for(upstream: ScriptedUpstream) -> dict[str, Any]:
    return {
        "openai": {"protocol": "openai", "upstream": upstream.url + "/v1", "api_key": "sk-real-openai"},
        "anthropic": {"protocol": "anthropic", "upstream": upstream.url, "api_key": "sk-ant-real"},
        "tools": {"protocol": "http", "upstream": upstream.url + "/tools"},
    }


@pytest.fixture
def make_interlock(upstream: ScriptedUpstream, tmp_path: Path) -> Iterator[Any]:
    """Start interlock on loopback with routes to the scripted upstream; extra config merges in."""
    stack: list[Any] = []

    def start(*, stages: Sequence[object] = (), **config: Any) -> Running:
        data: dict[str, Any] = {"routes": routes_for(upstream), "shutdown_grace": 2}
        data.update(config)
        context = run_interlock(settings_for_test(data, tmp_path), stages=stages)
        running = context.__enter__()
        stack.append(context)
        return running

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


@pytest.fixture
def interlock(make_interlock: Any) -> Running:
    return make_interlock()  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (tests/servers.py); each test takes a fresh database."""
    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server for the session (tests/servers.py); tests flush it or use key prefixes."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()
