"""Which `LoopHistory` backend the settings ask for (`open_loop_history`). Its own module, as
`counters_open.py` is: the backends import loop_history.py for the interface, so the choice between
them sits above all of them (no import cycle)."""

from __future__ import annotations

from interlock.config import State
from interlock.policies.loop_history import LoopHistory, LoopMemory
from interlock.policies.loop_history_sqlite import SqliteLoopHistory


def open_loop_history(store_path: str | None, state: State | None = None, *, processes: int = 1) -> LoopHistory:
    """The loop histories as configured: on Redis with `state.url` (shared by a fleet); else, for
    several worker processes on one host, in the store's SQLite file; else in this process."""
    if state is not None:
        state = state.resolved()
    if state is not None and state.url:
        # Imported here: redis-py is needed only for a fleet (and costs startup time otherwise).
        from interlock.core.redisstate import StateClient
        from interlock.policies.loop_history_redis import RedisLoopHistory

        return RedisLoopHistory(StateClient(state))
    if processes > 1 and store_path and store_path != ":memory:":
        return SqliteLoopHistory(store_path)
    return LoopMemory()


__all__ = ["open_loop_history"]
