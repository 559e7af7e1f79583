"""The backends each conformance suite runs against. A new backend adds one parameter here (its
factory), and every test of the interface's suite runs against it too (docs/store.md)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
