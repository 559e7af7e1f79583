"""The `Counters` interface behind limits, budgets and concurrency, and its embedded implementation.

The limiter (`limits.py`) knows what a policy's limits mean; a `Counters` backend only counts. It
offers two batched operations, each one round trip for a whole call:

- `admit(checks, adds, now)`: atomically, read every check's counter and, unless an *enforced*
  check is at or over its limit, apply every add. Returns the checks that were over (all of them,
  enforced or not, read before the adds). No other caller's add can land between the read and
  the adds: two concurrent admissions under a limit of one never both pass.
- `add(adds, now)`: apply increments (a negative one releases a concurrency slot).
- `read(counters, now)`: the values of several counters, changing none (the session page's caps
  consumed); one round trip too.

A counter is named by its `scope` (rule, subject) and `metric`, and has a window: `minute` (a
sliding minute of timestamped amounts), `day` (the UTC day of `now`: tokens and USD, kept across
restarts), `none` (a gauge: calls in flight) or `life` (a session's whole life, for run caps: calls,
tokens and USD added up, and `age`, the seconds since its first add, whose adds only start the
clock; kept across restarts, forgotten after `LIFE_IDLE` without an add). `now` is always passed in, so a test drives the
clock and a shared backend uses the callers' times. The embedded implementation keeps all of it in
memory on the event loop (its operations never wait) and saves the day counters to the table
`policy_counters` of the store's SQLite file from one worker thread. A Redis backend implements
the same two operations as Lua scripts (`counters_redis.py`) and passes
`tests/conformance/test_counters_contract.py`. A shared backend that cannot reach its server raises
`StateUnavailable` (within a bounded time); the limiter turns that into the concern's failure mode.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import math
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, NamedTuple, Protocol

from interlock.core.state_schema import create_state_tables

log = logging.getLogger("interlock.policies")

#: The length of a sliding window, in seconds.
WINDOW = 60.0
#: The tables (`core/state_schema.STATE_SCHEMA`, with the shared counters' and the vault's).
TABLE = "policy_counters"

Window = Literal["minute", "day", "none", "life"]
#: A `life` counter not added to for this long is forgotten (a session idle for a week starts afresh).
LIFE_IDLE = 7 * 86400.0
LIFE_TABLE = "policy_life"


def life_value(metric: str, stored: float | None, now: float) -> float:
    """A life counter's value: the sum, or for `age` the seconds since the stored first add."""
    if stored is None:
        return 0.0
    return max(0.0, now - stored) if metric == "age" else stored


#: The metrics a `day` counter may have (the columns of `policy_counters`).
DAY_METRICS = ("tokens", "usd")


class Counter(NamedTuple):
    """One counter: `scope` is (rule, subject) (`agent:NAME` or `session:ID`), `metric` what it counts."""

    scope: tuple[str, str]
    metric: str
    window: Window


class Check(NamedTuple):
    """`counter` is over when its value is at or above `limit`. An unenforced check is only read
    (a monitor-mode rule): it never stops the adds."""

    counter: Counter
    limit: float
    enforce: bool = True


class Add(NamedTuple):
    counter: Counter
    amount: float


class Over(NamedTuple):
    """A check that was over: its `position` in `checks`, the counter's value, and the seconds until
    it drops below the limit (a sliding minute's oldest entries expire; a day ends at 00:00 UTC; a
    gauge: 1, a guess, since a call in flight ends when it ends)."""

    position: int
    value: float
    retry_after: int


class Counters(Protocol):
    """Counters shared by every call (and, for a shared backend, by every interlock of a fleet)."""

    async def admit(self, checks: Sequence[Check], adds: Sequence[Add], now: float) -> list[Over]:
        """Atomically: the checks that are over; the adds applied unless an enforced check is over."""
        ...

    async def add(self, adds: Sequence[Add], now: float) -> None:
        """Apply increments (negative amounts release a gauge; a gauge never goes below zero)."""
        ...

    async def read(self, counters: Sequence[Counter], now: float) -> list[float]:
        """Each counter's value as a check would see it (0 for one never added to), in order."""
        ...

    async def snapshot(self, now: float) -> dict[str, Any]:
        """`{"inflight": {"rule subject": n}, "daily": {"rule subject": {"tokens", "usd"}}}` for today."""
        ...

    async def aclose(self) -> None:
        """Save what is pending and release resources (called once, at shutdown)."""
        ...


def today(now: float) -> str:
    """The UTC day of `now`, `YYYY-MM-DD` (POSIX time has 86,400 s a day)."""
    return _day_name(int(now // 86400))


@functools.lru_cache(maxsize=8)
def _day_name(day: int) -> str:
    # Cached: formatting a date was a fifth of the limiter's cost per call (strftime, 4 a call).
    return (_EPOCH + dt.timedelta(days=day)).isoformat()


_EPOCH = dt.date(1970, 1, 1)


def seconds_to_midnight(now: float) -> int:
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    midnight = (moment + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, math.ceil((midnight - moment).total_seconds()))


class _Window:
    """A sliding minute: (time, amount) entries and their running total."""

    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, float]] = deque()
        self.total = 0.0

    def expire(self, now: float) -> None:
        entries = self.entries
        while entries and entries[0][0] <= now - WINDOW:
            self.total -= entries.popleft()[1]
        if not entries:
            self.total = 0.0  # no drift from float sums

    def add(self, now: float, amount: float) -> None:
        self.entries.append((now, amount))
        self.total += amount

    def wait_until_below(self, limit: float, now: float) -> int:
        """Seconds until the total drops below `limit`."""
        total = self.total
        for t, amount in self.entries:
            total -= amount
            if total < limit:
                return max(1, math.ceil(t + WINDOW - now))
        return 1


#: Every this many admissions, minute windows left empty (ended sessions) and past days are dropped.
SWEEP_EVERY = 4096


class EmbeddedCounters:
    """The counters of one interlock process: in memory, on the event loop (no operation awaits,
    so each is atomic there), day counters saved to `store_path`'s SQLite file (None: not saved)."""

    def __init__(self, store_path: str | None = None) -> None:
        self.store_path = store_path if store_path and store_path != ":memory:" else None
        #: (rule, subject, metric) → sliding minute
        self.minute: dict[tuple[str, str, str], _Window] = {}
        #: (rule, subject, metric) → calls in flight
        self.gauges: dict[tuple[str, str, str], float] = {}
        #: (day, rule, subject) → [tokens, usd]
        self.daily: dict[tuple[str, str, str], list[float]] = {}
        self._dirty: set[tuple[str, str, str]] = set()
        #: (rule, subject, metric) → [value (`age`: the first add's time), last add's time]
        self.life: dict[tuple[str, str, str], list[float]] = {}
        self._life_dirty: set[tuple[str, str, str]] = set()
        self._flush_pending = False
        self._lock = threading.Lock()
        self._writer: ThreadPoolExecutor | None = None
        self._admitted = 0
        if self.store_path:
            self._load()

    # -- the interface --------------------------------------------------------------------------

    async def admit(self, checks: Sequence[Check], adds: Sequence[Add], now: float) -> list[Over]:
        return self.admit_now(checks, adds, now)

    async def add(self, adds: Sequence[Add], now: float) -> None:
        self.add_now(adds, now)

    async def read(self, counters: Sequence[Counter], now: float) -> list[float]:
        return [self.value(counter, now) for counter in counters]

    async def snapshot(self, now: float) -> dict[str, Any]:
        day = today(now)
        return {
            "inflight": {f"{r} {k}": int(n) for (r, k, _), n in self.gauges.items()},
            "daily": {
                f"{r} {k}": {"tokens": int(v[0]), "usd": round(v[1], 6)}
                for (d, r, k), v in self.daily.items()
                if d == day
            },
        }

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)  # the save is a blocking write

    def close(self) -> None:
        """`aclose`, blocking (a simulation, or a caller already in a worker thread)."""
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        self.flush()

    # -- the same, synchronously (a simulation such as `policy whatif` drives its own clock) --------

    def value(self, counter: Counter, now: float) -> float:
        key = (*counter.scope, counter.metric)
        if counter.window == "minute":
            window = self.minute.get(key)
            if window is None:
                return 0.0
            window.expire(now)
            return window.total
        if counter.window == "none":
            return self.gauges.get(key, 0.0)
        if counter.window == "life":
            entry = self.life.get(key)
            return life_value(counter.metric, None if entry is None else entry[0], now)
        values = self.daily.get((today(now), *counter.scope))
        return 0.0 if values is None else values[_day_column(counter)]

    def admit_now(self, checks: Sequence[Check], adds: Sequence[Add], now: float) -> list[Over]:
        over: list[Over] = []
        for index, check in enumerate(checks):
            value = self.value(check.counter, now)
            if value >= check.limit:
                over.append(Over(index, value, self._retry_after(check, now)))
        if not any(checks[o.position].enforce for o in over):
            self.add_now(adds, now)
            self._admitted += 1
            if self._admitted % SWEEP_EVERY == 0:
                self.sweep(now)
        return over

    def add_now(self, adds: Sequence[Add], now: float) -> None:
        flush = False
        for item in adds:
            counter = item.counter
            key = (*counter.scope, counter.metric)
            if counter.window == "minute":
                if item.amount:
                    self.minute.setdefault(key, _Window()).add(now, item.amount)
            elif counter.window == "none":
                left = self.gauges.get(key, 0.0) + item.amount
                if left > 0:
                    self.gauges[key] = left
                else:
                    self.gauges.pop(key, None)
            elif counter.window == "life":
                with self._lock:
                    entry = self.life.get(key)
                    if entry is None:  # `age` keeps its first add's time: the clock starts once
                        entry = self.life[key] = [now if counter.metric == "age" else 0.0, now]
                    if counter.metric != "age":
                        entry[0] += item.amount
                    entry[1] = now
                    self._life_dirty.add(key)
                flush = True
            elif item.amount:
                daily_key = (today(now), *counter.scope)
                with self._lock:
                    self.daily.setdefault(daily_key, [0, 0.0])[_day_column(counter)] += item.amount
                    self._dirty.add(daily_key)
                flush = True
        if flush:
            self._schedule_flush()

    def _retry_after(self, check: Check, now: float) -> int:
        counter = check.counter
        if counter.window == "minute":
            window = self.minute.get((*counter.scope, counter.metric))  # none yet: a limit of 0 or less
            return 1 if window is None else window.wait_until_below(check.limit, now)
        if counter.window == "day":
            return seconds_to_midnight(now)
        if counter.window == "life":
            return 0  # a run cap does not lift with time
        return 1

    def sweep(self, now: float) -> None:
        """Forget what can no longer limit anything: empty minute windows (with `per: session`, one is
        left behind by every session) and daily counters of past days that are already saved."""
        for window in self.minute.values():
            window.expire(now)
        for key in [k for k, w in self.minute.items() if not w.entries]:
            del self.minute[key]
        day = today(now)
        with self._lock:
            unsaved = self._dirty if self.store_path else set()  # without a store there is nothing to save
            for daily_key in [k for k in self.daily if k[0] != day and k not in unsaved]:
                del self.daily[daily_key]
                self._dirty.discard(daily_key)
            for life_key in [k for k, (_, at) in self.life.items() if at < now - LIFE_IDLE]:
                del self.life[life_key]  # its saved row is dropped when the store is next loaded

    # -- persistence ----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        assert self.store_path is not None
        connection = sqlite3.connect(self.store_path, timeout=10.0)
        connection.execute("PRAGMA busy_timeout = 10000")
        create_state_tables(connection)  # nothing when the store has migrated the file (version 6)
        return connection

    def _load(self) -> None:
        # Startup, before serving: a brief blocking read is fine here.
        try:
            connection = self._connect()
            try:
                now = time.time()
                with connection:  # yesterday's counters are kept a week, for people asking what happened
                    connection.execute(f"DELETE FROM {TABLE} WHERE day < ?", (today(now - 7 * 86400),))
                # Every kept day, not only today's: callers pass their own clock (`now`), which a
                # restart must not second-guess; past days cost a few rows until the next sweep.
                rows = connection.execute(f"SELECT day, rule, key, tokens, usd FROM {TABLE}").fetchall()
                with connection:
                    connection.execute(f"DELETE FROM {LIFE_TABLE} WHERE updated_at < ?", (now - LIFE_IDLE,))
                lives = connection.execute(f"SELECT rule, key, metric, value, updated_at FROM {LIFE_TABLE}").fetchall()
            finally:
                connection.close()
        except sqlite3.Error as exc:
            log.error("cannot read daily policy counters from %s: %s", self.store_path, exc)
            return
        for day, rule, key, tokens, usd in rows:
            self.daily[(day, rule, key)] = [tokens, usd]
        for rule, key, metric, value, at in lives:
            self.life[(rule, key, metric)] = [value, at]

    def _schedule_flush(self) -> None:
        if self.store_path is None:
            return
        with self._lock:
            if self._flush_pending:
                return
            self._flush_pending = True
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-counters")
        self._writer.submit(self.flush)

    def flush(self) -> None:
        """Write changed daily counters (blocking; the worker thread calls it)."""
        with self._lock:
            self._flush_pending = False
            rows = [(*k, int(self.daily[k][0]), float(self.daily[k][1]), time.time()) for k in self._dirty]
            self._dirty.clear()
            lives = [(*k, *self.life[k]) for k in self._life_dirty if k in self.life]
            self._life_dirty.clear()
        if not (rows or lives) or self.store_path is None:
            return
        try:
            connection = self._connect()
            try:
                with connection:
                    connection.executemany(
                        f"INSERT OR REPLACE INTO {TABLE} (day, rule, key, tokens, usd, updated_at)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                    connection.executemany(
                        f"INSERT OR REPLACE INTO {LIFE_TABLE} (rule, key, metric, value, updated_at) VALUES (?, ?, ?, ?, ?)",
                        lives,
                    )
            finally:
                connection.close()
        except sqlite3.Error as exc:
            log.error("cannot save daily policy counters to %s: %s", self.store_path, exc)


def _day_column(counter: Counter) -> int:
    if counter.metric not in DAY_METRICS:
        raise ValueError(f"a day counter counts {' or '.join(DAY_METRICS)}, not {counter.metric!r}")
    return DAY_METRICS.index(counter.metric)


__all__ = [
    "Add",
    "Check",
    "Counter",
    "Counters",
    "EmbeddedCounters",
    "LIFE_IDLE",
    "Over",
    "seconds_to_midnight",
    "today",
]
