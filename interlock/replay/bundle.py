"""Bundles: an exported store file (`interlock export`), opened read-only and checked before use.

A bundle IS a store file with the store's own schema, holding only the exported calls. Opening one
never writes to it: SQLite is opened with `mode=ro`, and a bundle without a WAL beside it (every
export) is also opened `immutable`, so not even a `-shm` file appears next to it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from interlock.core.call import Call
from interlock.tracing.backend import StoreError, open_store
from interlock.tracing.schema import SCHEMA_VERSION
from interlock.tracing.transfer import bundle_facts

_SQLITE_MAGIC = b"SQLite format 3\x00"


class BundleError(Exception):
    """The file cannot be replayed: not a bundle, a newer schema, or no calls. The CLI exits 2."""


@dataclass(slots=True)
class Bundle:
    path: str
    schema_version: int
    calls: list[Call]

    @property
    def sessions(self) -> list[str]:
        return sorted({c.session for c in self.calls if c.session})

    @property
    def routes(self) -> dict[str, str]:
        """Route name → protocol, in the order the recording first used them."""
        routes: dict[str, str] = {}
        for call in self.calls:
            routes.setdefault(call.route, call.protocol)
        return routes

    def describe(self) -> str:
        routes = ", ".join(f"/{name}/ ({protocol})" for name, protocol in self.routes.items())
        sessions = self.sessions
        session_text = sessions[0] if len(sessions) == 1 else f"{len(sessions)} sessions"
        return f"{self.path}: {len(self.calls)} calls, {session_text}, routes {routes}"


def check_bundle(path: str | os.PathLike[str]) -> int:
    """The schema version of a readable bundle file; raises BundleError with a clear reason."""
    where = str(path)
    file = Path(where)
    if not file.exists():
        raise BundleError(f"{where}: no such file")
    if not file.is_file():
        raise BundleError(f"{where}: not a file")
    with file.open("rb") as handle:
        magic = handle.read(len(_SQLITE_MAGIC))
    if magic != _SQLITE_MAGIC:
        raise BundleError(f"{where}: not an interlock bundle (not a SQLite database)")
    try:
        version, tables, total, full = bundle_facts(where)
        counts = (total, full)
    except sqlite3.DatabaseError as exc:
        raise BundleError(f"{where}: not an interlock bundle ({exc})") from None
    if version > SCHEMA_VERSION:
        raise BundleError(
            f"{where}: written by a newer interlock (schema version {version}; this one reads up to "
            f"{SCHEMA_VERSION}): upgrade interlock to replay it"
        )
    if version == 0 or "calls" not in tables:
        raise BundleError(f"{where}: not an interlock bundle (a SQLite database without interlock's tables)")
    if counts[0] == 0:
        raise BundleError(f"{where}: the bundle holds no calls")
    if counts[1] == 0:
        raise BundleError(f"{where}: recorded with `store.capture: metadata`, so it holds no bodies to replay")
    return version


def open_bundle(path: str | os.PathLike[str], *, session: str | None = None, route: str | None = None) -> Bundle:
    """Every call of the bundle (or of one session / route), oldest first. Raises BundleError."""
    where = str(path)
    version = check_bundle(where)
    try:
        with open_store(where, readonly=True) as store:
            calls = list(store.iter_calls(session=session, route=route))
    except (StoreError, sqlite3.DatabaseError) as exc:
        raise BundleError(f"{where}: cannot be read: {exc}") from None
    if not calls:
        scope = " ".join(f"{k} {v!r}" for k, v in (("session", session), ("route", route)) if v)
        raise BundleError(f"{where}: the bundle holds no calls" + (f" for {scope}" if scope else ""))
    return Bundle(where, version, calls)


def bundle_from_calls(calls: Iterable[Call], path: str = "<calls>") -> Bundle:
    """A bundle held in memory (tests, tools that already have Calls)."""
    return Bundle(path, SCHEMA_VERSION, list(calls))
