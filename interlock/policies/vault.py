"""The `Vault` interface for reversible redaction (placeholder ↔ original, per session), and its
embedded implementation.

A call works on its session's table synchronously (redaction rewrites text value by value, a
stream restores placeholders chunk by chunk: no I/O may sit in those loops), so the interface is a
checkout and a commit, each one round trip per call:

- `await open(session, create=...)`: the session's `SessionVault` (its placeholders and values,
  and the next number of each entity); None when the session has none and `create` is false.
- `await commit(session, table)`: the placeholders the call added become visible to the session's
  next calls, wherever they run. A value already stored keeps its placeholder, and a placeholder
  is never remapped to another value (the first commit wins).

The embedded vault keeps the tables in this process (bounded: the least recently used session is
forgotten first past `guardrails.vault_sessions`, a session's oldest values past `vault_values`):
`open` hands out the live table, so `commit` has nothing to do. A shared backend (Redis) loads the
table in `open` and writes its new entries in `commit`, and passes
`tests/conformance/test_vault_contract.py`. Callers always commit: none may assume the table is live.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from interlock.config import Guardrails


class SessionVault:
    """Values ↔ placeholders for one session, oldest values forgotten first past `limit`."""

    __slots__ = ("limit", "by_value", "by_placeholder", "counters")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.by_value: OrderedDict[tuple[str, str], str] = OrderedDict()
        self.by_placeholder: dict[str, str] = {}
        self.counters: dict[str, int] = {}

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
        while len(self.by_value) > self.limit:
            _, old = self.by_value.popitem(last=False)
            self.by_placeholder.pop(old, None)
        return placeholder

    def value(self, placeholder: str) -> str | None:
        return self.by_placeholder.get(placeholder)


class Vault(Protocol):
    """Per-session placeholder tables shared by every call of a session."""

    async def open(self, session: str, *, create: bool) -> SessionVault | None:
        """The session's table to work on (None: the session has none and `create` is false)."""
        ...

    async def commit(self, session: str, table: SessionVault) -> None:
        """Make the table's new placeholders visible to the session's next calls."""
        ...


class EmbeddedVault:
    """Per-session tables in this process, the least recently used session forgotten first past `sessions`."""

    def __init__(self, sessions: int = 10000, values: int = 1000) -> None:
        self.max_sessions = sessions
        self.max_values = values
        self._sessions: OrderedDict[str, SessionVault] = OrderedDict()

    async def open(self, session: str, *, create: bool) -> SessionVault | None:
        return self.get(session, create)

    async def commit(self, session: str, table: SessionVault) -> None:
        """Nothing to write: `open` handed out the live table."""

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


def open_vault(config: Guardrails) -> Vault:
    """The vault as configured: the embedded one, bounded by `vault_sessions` and `vault_values`."""
    return EmbeddedVault(config.vault_sessions, config.vault_values)


__all__ = ["EmbeddedVault", "SessionVault", "Vault", "open_vault"]
