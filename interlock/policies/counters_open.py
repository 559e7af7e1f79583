"""Which `Counters` backend the settings ask for (`open_counters`). Its own module, not counters.py:
the backends import counters.py for the interface and its value types, so the choice between them
sits above all of them (no import cycle)."""

from __future__ import annotations

from interlock.config import State
from interlock.policies.counters import Counters, EmbeddedCounters
from interlock.policies.counters_sqlite import SqliteCounters


def open_counters(store_path: str | None, state: State | None = None, *, processes: int = 1) -> Counters:
    """The counters as configured: on Redis with `state.url` (shared by a fleet); else, for several
    worker processes on one host, in the store's SQLite file (`counters_sqlite.py`); else the
    embedded ones, saving day counters beside the store."""
    if state is not None:
        state = state.resolved()
    if state is not None and state.url:
        # Imported here: redis-py is needed only for a fleet (and costs startup time otherwise).
        from interlock.core.redisstate import StateClient
        from interlock.policies.counters_redis import RedisCounters

        return RedisCounters(StateClient(state), state.slot_lease)
    if processes > 1 and store_path and store_path != ":memory:":
        return SqliteCounters(store_path)
    return EmbeddedCounters(store_path)


__all__ = ["open_counters"]
