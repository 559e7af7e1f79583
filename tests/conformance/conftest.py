"""The backends each conformance suite runs against. A new backend adds one parameter here (its
factory), and every test of the interface's suite runs against it too (docs/store.md)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from interlock.config import Guardrails
from interlock.policies.counters import Counters, open_counters
from interlock.policies.vault import Vault, open_vault
from interlock.tracing.backend import Store, open_store


def _sqlite_store(tmp_path: Path) -> Store:
    return open_store(tmp_path / "conformance.db")


#: name → a factory of a fresh, empty store (a PostgreSQL backend: a fresh schema in a test database).
STORE_BACKENDS = {"sqlite": _sqlite_store}


@pytest.fixture(params=sorted(STORE_BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    backend = STORE_BACKENDS[request.param](tmp_path)
    try:
        yield backend
    finally:
        backend.close()


def _embedded_counters(tmp_path: Path) -> Counters:
    return open_counters(str(tmp_path / "counters.db"))


#: name → a factory of counters kept at `tmp_path`: called again with the same path, it reopens the
#: same counters (a restart). A Redis backend: a fresh key prefix per test directory.
COUNTERS_BACKENDS = {"embedded": _embedded_counters}


@pytest.fixture(params=sorted(COUNTERS_BACKENDS))
def counters_factory(request: pytest.FixtureRequest) -> object:
    return COUNTERS_BACKENDS[request.param]


def _embedded_vault(values: int) -> Vault:
    return open_vault(Guardrails(vault_values=values))


#: name → a factory of an empty vault keeping at most `values` values a session. A shared backend's
#: factory returns a new client over the same place each time it is called within one test.
VAULT_BACKENDS = {"embedded": _embedded_vault}


@pytest.fixture(params=sorted(VAULT_BACKENDS))
def vault(request: pytest.FixtureRequest) -> Vault:
    return VAULT_BACKENDS[request.param](100)


@pytest.fixture(params=sorted(VAULT_BACKENDS))
def small_vault(request: pytest.FixtureRequest) -> Vault:
    return VAULT_BACKENDS[request.param](2)
