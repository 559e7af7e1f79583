"""Which `Vault` backend the settings ask for (`open_vault`). Its own module, not vault.py: the
backends import vault.py for the interface and its value types, so the choice between them sits
above all of them (no import cycle), as `policies/counters_open.py` does for the counters."""

from __future__ import annotations

from typing import TYPE_CHECKING

from interlock.guardrails.vault import EmbeddedVault, Vault

if TYPE_CHECKING:
    from interlock.config import Guardrails, State


def open_vault(
    config: Guardrails, state: State | None = None, *, processes: int = 1, store_path: str | None = None
) -> Vault:
    """The vault as configured: on Redis with `state.url` (shared by a fleet; values encrypted with
    `state.vault_key`, which it then requires); else, for several worker processes on one host, in
    the store's SQLite file (`vault_sqlite.py`, encrypted with `state.vault_key`, which the
    supervisor draws when unset); else the embedded one, bounded by `vault_sessions` and `vault_values`."""
    if state is not None:
        state = state.resolved()
    if state is not None and state.url:
        # Imported here: redis-py is needed only for a fleet (and costs startup time otherwise).
        from interlock.core.redisstate import StateClient
        from interlock.guardrails.vault_redis import RedisVault

        return RedisVault(StateClient(state), state, config.vault_values)
    if processes > 1 and store_path and store_path != ":memory:" and state is not None and state.vault_key:
        # Imported here: the values' encryption needs `cryptography` (the `fleet` extra).
        from interlock.guardrails.vault_sqlite import SqliteVault

        return SqliteVault(store_path, state.vault_key, config.vault_values, state.vault_ttl)
    return EmbeddedVault(config.vault_sessions, config.vault_values)


__all__ = ["open_vault"]
