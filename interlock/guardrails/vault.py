"""The `Vault` interface for reversible redaction (placeholder ↔ original, per session), and its
embedded implementation.

A call works on its session's table synchronously (redaction rewrites text value by value, a
stream restores placeholders chunk by chunk: no I/O may sit in those loops), so the interface is a
checkout and a commit, each one round trip per call:

- `await open(session, create=..., reserve=...)`: the session's `SessionVault` (its placeholders and
  values, and the next number of each entity); None when the session has none and `create` is false.
  `reserve` lists the (entity, value) pairs the call is about to replace: each gets its placeholder
  in the same round trip (the one it has, or a new number reserved for it). On a shared backend this
  is what keeps two replicas from handing out one placeholder for two values: numbers are only
  issued by the backend, atomically.
- `await commit(session, table)`: placeholders the call issued locally (values it did not reserve)
  become visible to the session's next calls, wherever they run. A value already stored keeps its
  placeholder, and a placeholder is never remapped to another value: a local placeholder that
  another replica issued meanwhile for another value makes `commit` raise `VaultConflict`, and the
  caller refuses the call (fail closed) rather than send or restore a placeholder that means two things.

The embedded vault keeps the tables in this process (bounded: the least recently used session is
forgotten first past `guardrails.vault_sessions`, a session's oldest values past `vault_values`):
`open` hands out the live table, so `commit` has nothing to do. The Redis vault (`vault_redis.py`)
loads the table in `open` and writes its new entries in `commit`; both pass
`tests/conformance/test_vault_contract.py`. Callers always commit: none may assume the table is live.
A shared backend out of reach raises `StateUnavailable` (`core/state.py`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    pass


class VaultConflict(Exception):
    """A placeholder issued locally was issued meanwhile, elsewhere, for another value."""


class SessionVault:
    """Values ↔ placeholders for one session, oldest values forgotten first past `limit`."""

    __slots__ = ("limit", "by_value", "by_placeholder", "counters", "issued")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.by_value: OrderedDict[tuple[str, str], str] = OrderedDict()
        self.by_placeholder: dict[str, str] = {}
        self.counters: dict[str, int] = {}
        #: (entity, value, placeholder) issued here and not yet committed; None: not tracked (a live
        #: table, the embedded vault's, needs no commit).
        self.issued: list[tuple[str, str, str]] | None = None

    def put(self, entity: str, value: str, placeholder: str) -> None:
        """Load one entry as the backend has it (the most recently used last)."""
        self.by_value[(entity, value)] = placeholder
        self.by_placeholder[placeholder] = value

    def __len__(self) -> int:
        return len(self.by_placeholder)

    def placeholder(self, entity: str, value: str) -> str:
        key = (entity, value)
        found = self.by_value.get(key)
        if found is not None:
            self.by_value.move_to_end(key)
            return found
        number = self.counters.get(entity, 0) + 1
        self.counters[entity] = number
        placeholder = f"<{entity}_{number}>"
        self.by_value[key] = placeholder
        self.by_placeholder[placeholder] = value
        if self.issued is not None:
            self.issued.append((entity, value, placeholder))
        while len(self.by_value) > self.limit:
            _, old = self.by_value.popitem(last=False)
            self.by_placeholder.pop(old, None)
        return placeholder

    def value(self, placeholder: str) -> str | None:
        return self.by_placeholder.get(placeholder)


class Unreachable(SessionVault):
    """The table of a session whose vault is out of reach, for a call with nothing to redact: the
    call goes on, and its response is refused (or its stream ended) only if it holds a placeholder
    that would need restoring: `missed` is the first one asked for."""

    __slots__ = ("missed", "reason")

    def __init__(self, reason: str) -> None:
        super().__init__(0)
        self.missed: str | None = None
        self.reason = reason

    def __len__(self) -> int:
        return 1  # "may hold placeholders": the response is read for them

    def value(self, placeholder: str) -> str | None:
        if self.missed is None:
            self.missed = placeholder
        return None


class Vault(Protocol):
    """Per-session placeholder tables shared by every call of a session."""

    async def open(self, session: str, *, create: bool, reserve: Sequence[tuple[str, str]] = ()) -> SessionVault | None:
        """The session's table to work on (None: the session has none and `create` is false), with a
        placeholder for every (entity, value) in `reserve`."""
        ...

    async def commit(self, session: str, table: SessionVault) -> None:
        """Make the table's new placeholders visible to the session's next calls (`VaultConflict`:
        one of them means another value elsewhere)."""
        ...

    async def aclose(self) -> None:
        """Release the backend's resources (at shutdown)."""
        ...


class EmbeddedVault:
    """Per-session tables in this process, the least recently used session forgotten first past `sessions`."""

    def __init__(self, sessions: int = 10000, values: int = 1000) -> None:
        self.max_sessions = sessions
        self.max_values = values
        self._sessions: OrderedDict[str, SessionVault] = OrderedDict()

    async def open(self, session: str, *, create: bool, reserve: Sequence[tuple[str, str]] = ()) -> SessionVault | None:
        table = self.get(session, create or bool(reserve))
        if table is not None:
            for entity, value in reserve:
                table.placeholder(entity, value)
        return table

    async def commit(self, session: str, table: SessionVault) -> None:
        """Nothing to write: `open` handed out the live table."""

    async def aclose(self) -> None:
        """Nothing to release: the tables go with the process."""

    def get(self, session: str, create: bool = True) -> SessionVault | None:
        vault = self._sessions.get(session)
        if vault is not None:
            self._sessions.move_to_end(session)
            return vault
        if not create:
            return None
        vault = self._sessions[session] = SessionVault(self.max_values)
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return vault


__all__ = ["EmbeddedVault", "SessionVault", "Unreachable", "Vault", "VaultConflict"]
