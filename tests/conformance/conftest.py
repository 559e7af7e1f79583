"""The backends each conformance suite runs against. A new backend adds one parameter here (its
factory), and every test of the interface's suite runs against it too (docs/store.md)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from interlock.config import Guardrails, State
from interlock.guardrails.vault import Vault
from interlock.guardrails.vault_open import open_vault
from interlock.policies.counters import Counters
from interlock.policies.counters_open import open_counters
from interlock.policies.loop_history import LoopHistory, LoopMemory
from interlock.tracing.backend import Store, open_store


def _sqlite_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return open_store(tmp_path / "conformance.db")


def _postgres_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    # A fresh database per test on the session's one server (tests/servers.py).
    server = request.getfixturevalue("postgres_server")
    return open_store(server.database(f"conformance_{abs(hash(tmp_path.name)):x}"))


#: name → a factory of a fresh, empty store.
STORE_BACKENDS = {"sqlite": _sqlite_store, "postgres": _postgres_store}


@pytest.fixture(params=sorted(STORE_BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    backend = STORE_BACKENDS[request.param](request, tmp_path)
    try:
        yield backend
    finally:
        backend.close()


def _redis_state(request: pytest.FixtureRequest, place: str, **more: object) -> State:
    """Settings for the session's real redis-server (tests/servers.py), under a key prefix of `place`
    alone: a fresh, empty namespace per test, the same one when a test reopens it."""
    server = request.getfixturevalue("redis_server")
    prefix = "conformance:" + hashlib.blake2b(place.encode(), digest_size=8).hexdigest() + ":"
    return State(url=server.url, key_prefix=prefix, timeout=5.0, **more)  # type: ignore[arg-type]


def _embedded_counters(request: pytest.FixtureRequest, tmp_path: Path) -> Counters:
    return open_counters(str(tmp_path / "counters.db"))


def _sqlite_counters(request: pytest.FixtureRequest, tmp_path: Path) -> Counters:
    from interlock.policies.counters_sqlite import SqliteCounters

    return SqliteCounters(str(tmp_path / "counters.db"))


def _redis_counters(request: pytest.FixtureRequest, tmp_path: Path) -> Counters:
    return open_counters(None, _redis_state(request, str(tmp_path)))


#: name → a factory of counters kept at `tmp_path`: called again with the same path, it reopens the
#: same counters (a restart). Redis: a fresh key prefix per test directory.
COUNTERS_BACKENDS = {"embedded": _embedded_counters, "redis": _redis_counters, "sqlite": _sqlite_counters}


@pytest.fixture(params=sorted(COUNTERS_BACKENDS))
def counters_factory(request: pytest.FixtureRequest) -> Callable[[Path], Counters]:
    backend = COUNTERS_BACKENDS[request.param]
    return lambda path: backend(request, path)


def _embedded_vault(request: pytest.FixtureRequest, values: int) -> Vault:
    return open_vault(Guardrails(vault_values=values))


def _redis_vault(request: pytest.FixtureRequest, values: int) -> Vault:
    key = "conformance vault key, not a secret: 0123456789"
    return open_vault(Guardrails(vault_values=values), _redis_state(request, request.node.nodeid, vault_key=key))


def _sqlite_vault(request: pytest.FixtureRequest, values: int) -> Vault:
    from interlock.guardrails.vault_sqlite import SqliteVault

    folder = request.getfixturevalue("tmp_path")
    return SqliteVault(str(folder / "vault.db"), "conformance vault key, not a secret: 0123456789", values, 3600)


#: name → a factory of an empty vault keeping at most `values` values a session. A shared backend's
#: factory returns a new client over the same place each time it is called within one test.
VAULT_BACKENDS = {"embedded": _embedded_vault, "redis": _redis_vault, "sqlite": _sqlite_vault}


@pytest.fixture(params=sorted(VAULT_BACKENDS))
async def vault(request: pytest.FixtureRequest) -> AsyncIterator[Vault]:
    backend = VAULT_BACKENDS[request.param](request, 100)
    yield backend
    await backend.aclose()


@pytest.fixture(params=sorted(VAULT_BACKENDS))
async def small_vault(request: pytest.FixtureRequest) -> AsyncIterator[Vault]:
    backend = VAULT_BACKENDS[request.param](request, 2)
    yield backend
    await backend.aclose()


@pytest.fixture(params=sorted(VAULT_BACKENDS))
async def vault_pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Vault, Vault]]:
    """Two clients over one vault (two replicas of a fleet; the embedded vault: one, twice)."""
    first = VAULT_BACKENDS[request.param](request, 100)
    second = first if request.param == "embedded" else VAULT_BACKENDS[request.param](request, 100)
    yield first, second
    await first.aclose()
    await second.aclose()


def _memory_loops(request: pytest.FixtureRequest, place: Path, bounds: dict[str, Any]) -> LoopHistory:
    return LoopMemory(**bounds)


def _sqlite_loops(request: pytest.FixtureRequest, place: Path, bounds: dict[str, Any]) -> LoopHistory:
    from interlock.policies.loop_history_sqlite import SqliteLoopHistory

    return SqliteLoopHistory(str(place / "loops.db"), **bounds)


def _redis_loops(request: pytest.FixtureRequest, place: Path, bounds: dict[str, Any]) -> LoopHistory:
    from interlock.core.redisstate import StateClient
    from interlock.policies.loop_history_redis import RedisLoopHistory

    return RedisLoopHistory(StateClient(_redis_state(request, str(place))), **bounds)


#: name → a factory of loop histories kept at a folder, with the given bounds (`max_sessions`,
#: `idle_ttl`, `max_tools`): a shared backend's factory called again with the same folder opens
#: another client over the same histories (another worker or replica); the in-memory one cannot.
LOOP_BACKENDS = {"memory": _memory_loops, "redis": _redis_loops, "sqlite": _sqlite_loops}

LoopsFactory = Callable[..., LoopHistory]


@pytest.fixture(params=sorted(LOOP_BACKENDS))
async def loops_factory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LoopsFactory]:
    """`factory(**bounds)`: a client over this test's histories; every client is closed after the test."""
    opened: list[LoopHistory] = []

    def factory(**bounds: Any) -> LoopHistory:
        history = LOOP_BACKENDS[request.param](request, tmp_path, bounds)
        opened.append(history)
        return history

    factory.shared = request.param != "memory"  # type: ignore[attr-defined]
    yield factory
    for history in opened:
        await history.aclose()
