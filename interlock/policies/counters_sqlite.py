"""`SqliteCounters`: the `Counters` interface in the store's SQLite file, shared by the worker
processes of `interlock serve --workers N` on one host when there is no Redis (`state.url`).

Each operation is one `BEGIN IMMEDIATE` transaction (SQLite's write lock: one process at a time, the
others wait up to the busy timeout), so an admission's reads and adds are atomic across the workers,
as the Redis scripts are across replicas. The transactions run in a thread of each worker, never on
its event loop. The counters keep the embedded ones' meaning:

- a sliding minute: rows (time, amount) in `policy_windows`, those a minute old deleted as they are
  read (the callers' clock);
- a gauge (calls in flight): a row per worker process in `policy_gauges`; a row whose process is gone
  (killed with calls in flight) is dropped by the next read, so a crash frees its slots at once;
- a day: `policy_counters`, the table the embedded counters save to, added to in place.

For one host only (process ids are checked with `kill(pid, 0)`); a fleet of hosts uses Redis.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from interlock.core.sqlite_state import SqliteState
from interlock.policies.counters import (
    DAY_METRICS,
    LIFE_TABLE,
    SWEEP_EVERY,
    TABLE,
    WINDOW,
    Add,
    Check,
    Counter,
    Over,
    life_value,
    seconds_to_midnight,
    today,
)


class SqliteCounters(SqliteState):
    """Counters in SQLite, shared by the processes that open the same file; see the module's docstring."""

    def __init__(self, path: str) -> None:
        super().__init__(path, "the counters", "policy-counters")
        self.pid = os.getpid()
        self._admitted = 0

    # -- the interface --------------------------------------------------------------------------

    async def admit(self, checks: Sequence[Check], adds: Sequence[Add], now: float) -> list[Over]:
        self._admitted += 1
        sweep = self._admitted % SWEEP_EVERY == 0

        def work(db: sqlite3.Connection) -> list[Over]:
            if sweep:  # windows no check reads any more (ended sessions): a minute old is gone
                db.execute("DELETE FROM policy_windows WHERE t <= ?", (now - WINDOW,))
            over: list[Over] = []
            for index, check in enumerate(checks):
                value = self._value(db, check.counter, now)
                if value >= check.limit:
                    over.append(Over(index, _number(value), self._retry_after(db, check, value, now)))
            if not any(checks[o.position].enforce for o in over):
                self._apply(db, adds, now)
            return over

        return await self._run(work)

    async def add(self, adds: Sequence[Add], now: float) -> None:
        if adds:
            await self._run(lambda db: self._apply(db, adds, now))

    async def read(self, counters: Sequence[Counter], now: float) -> list[float]:
        if not counters:
            return []
        return await self._run(lambda db: [_number(self._value(db, counter, now)) for counter in counters])

    async def snapshot(self, now: float) -> dict[str, Any]:
        def work(db: sqlite3.Connection) -> dict[str, Any]:
            self._drop_dead(db)
            inflight = {
                f"{rule} {key}": int(n)
                for rule, key, n in db.execute(
                    "SELECT rule, key, SUM(n) FROM policy_gauges GROUP BY rule, key, metric HAVING SUM(n) > 0"
                )
            }
            daily = {
                f"{rule} {key}": {"tokens": int(tokens), "usd": round(usd, 6)}
                for rule, key, tokens, usd in db.execute(
                    f"SELECT rule, key, tokens, usd FROM {TABLE} WHERE day = ?", (today(now),)
                )
            }
            return {"inflight": inflight, "daily": daily}

        return await self._run(work)

    # -- inside a transaction -------------------------------------------------------------------

    def _value(self, db: sqlite3.Connection, counter: Counter, now: float) -> float:
        rule, key = counter.scope
        if counter.window == "minute":
            db.execute(
                "DELETE FROM policy_windows WHERE rule = ? AND key = ? AND metric = ? AND t <= ?",
                (rule, key, counter.metric, now - WINDOW),
            )
            row = db.execute(
                "SELECT SUM(amount) FROM policy_windows WHERE rule = ? AND key = ? AND metric = ?",
                (rule, key, counter.metric),
            ).fetchone()
            return float(row[0] or 0.0)
        if counter.window == "none":
            self._drop_dead(db)
            row = db.execute(
                "SELECT SUM(n) FROM policy_gauges WHERE rule = ? AND key = ? AND metric = ?",
                (rule, key, counter.metric),
            ).fetchone()
            return float(row[0] or 0.0)
        if counter.window == "life":
            found_life = db.execute(
                f"SELECT value FROM {LIFE_TABLE} WHERE rule = ? AND key = ? AND metric = ?", (rule, key, counter.metric)
            ).fetchone()
            return life_value(counter.metric, None if found_life is None else float(found_life[0]), now)
        column = _day_column(counter)
        row = db.execute(
            f"SELECT {column} FROM {TABLE} WHERE day = ? AND rule = ? AND key = ?", (today(now), rule, key)
        )
        found = row.fetchone()
        return float(found[0]) if found else 0.0

    def _retry_after(self, db: sqlite3.Connection, check: Check, value: float, now: float) -> int:
        counter = check.counter
        if counter.window == "day":
            return seconds_to_midnight(now)
        if counter.window == "life":
            return 0  # a run cap does not lift with time
        if counter.window == "none":
            return 1
        rule, key = counter.scope
        total = value
        for t, amount in db.execute(
            "SELECT t, amount FROM policy_windows WHERE rule = ? AND key = ? AND metric = ? ORDER BY t",
            (rule, key, counter.metric),
        ):
            total -= amount
            if total < check.limit:
                return max(1, math.ceil(float(t) + WINDOW - now))
        return 1

    def _apply(self, db: sqlite3.Connection, adds: Sequence[Add], now: float) -> None:
        for item in adds:
            counter = item.counter
            rule, key = counter.scope
            if counter.window == "minute":
                if item.amount:
                    db.execute(
                        "INSERT INTO policy_windows (rule, key, metric, t, amount) VALUES (?, ?, ?, ?, ?)",
                        (rule, key, counter.metric, now, item.amount),
                    )
            elif counter.window == "none":
                where = (rule, key, counter.metric, self.pid)
                db.execute(
                    "INSERT INTO policy_gauges (rule, key, metric, pid, n) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (rule, key, metric, pid) DO UPDATE SET n = n + excluded.n",
                    (*where, item.amount),
                )
                db.execute(
                    "DELETE FROM policy_gauges WHERE rule = ? AND key = ? AND metric = ? AND pid = ? AND n <= 0", where
                )
            elif counter.window == "life":
                # `age` keeps its first add's time (the clock starts once); the others add up.
                update = "value" if counter.metric == "age" else "value + excluded.value"
                db.execute(
                    f"INSERT INTO {LIFE_TABLE} (rule, key, metric, value, updated_at) VALUES (?, ?, ?, ?, ?)"
                    f" ON CONFLICT (rule, key, metric) DO UPDATE SET value = {update}, updated_at = excluded.updated_at",
                    (rule, key, counter.metric, now if counter.metric == "age" else item.amount, now),
                )
            elif item.amount:
                column = _day_column(counter)
                db.execute(
                    f"INSERT INTO {TABLE} (day, rule, key, {column}, updated_at) VALUES (?, ?, ?, ?, ?)"
                    f" ON CONFLICT (day, rule, key) DO UPDATE SET {column} = {column} + excluded.{column},"
                    " updated_at = excluded.updated_at",
                    (today(now), rule, key, item.amount, time.time()),
                )

    def _drop_dead(self, db: sqlite3.Connection) -> None:
        """Forget the slots of worker processes that are gone (killed with calls in flight)."""
        pids = [pid for (pid,) in db.execute("SELECT DISTINCT pid FROM policy_gauges") if pid != self.pid]
        for pid in pids:
            if not _alive(pid):
                db.execute("DELETE FROM policy_gauges WHERE pid = ?", (pid,))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _day_column(counter: Counter) -> str:
    if counter.metric not in DAY_METRICS:
        raise ValueError(f"a day counter counts {' or '.join(DAY_METRICS)}, not {counter.metric!r}")
    return counter.metric


def _number(value: float) -> float:
    return int(value) if float(value).is_integer() else value


__all__ = ["SqliteCounters"]
