"""Rate limits and budgets: requests and tokens per minute, tokens and money per day, calls in flight.

Counters are kept per (rule, agent) or (rule, session), in memory. Minute windows slide (exact
timestamps, not fixed buckets). Daily counters (tokens, USD) reset at 00:00 UTC and are written to
the table `policy_counters` in the store's SQLite file, so a restart does not reset a budget.
Writes are coalesced and done by one worker thread, never on the event loop.

Tokens are only known after a response, so a call is admitted when the counters are *below* the
limit before it; the call that crosses a limit completes, the next one is refused.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from interlock.policies.engine import CompiledRule, Globs
from interlock.tracing.call import Call

log = logging.getLogger("interlock.policies")

WINDOW = 60.0
TABLE = "policy_counters"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    day TEXT NOT NULL,
    rule TEXT NOT NULL,
    key TEXT NOT NULL,
    tokens INTEGER NOT NULL DEFAULT 0,
    usd REAL NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    PRIMARY KEY (day, rule, key)
)
"""


@dataclass(frozen=True, slots=True)
class Exceeded:
    rule: CompiledRule
    code: str  # "rate_limited", "budget_exceeded" or "unpriced_model"
    message: str
    retry_after: int  # seconds

    @property
    def refusal(self) -> str:
        """What the agent is told (the proxy's 429 message; `policy whatif` says the same)."""
        if self.code == "unpriced_model":
            return f"refused by policy rule {self.rule.name!r}: {self.message} (limits.unpriced: deny)"
        if self.code == "budget_exceeded":
            return f"budget exceeded under policy rule {self.rule.name!r}: over {self.message}"
        return f"rate limited by policy rule {self.rule.name!r}: over {self.message}"


def today(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d")


def seconds_to_midnight(now: float) -> int:
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    midnight = (moment + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, math.ceil((midnight - moment).total_seconds()))


class Prices:
    """USD per million tokens by model glob: {model: {input: x, output: y}}."""

    def __init__(self, prices: Mapping[str, Mapping[str, float]]) -> None:
        self.table = [(Globs((pattern,)), dict(price)) for pattern, price in prices.items()]
        self.exact = {p: dict(v) for p, v in prices.items()}

    def price(self, model: str | None) -> dict[str, float] | None:
        """The model's price, or None when `prices:` lists no pattern for it (an unpriced model)."""
        if model is None:
            return None
        return self.exact.get(model) or next((p for g, p in self.table if g(model)), None)

    def cost(self, model: str | None, input_tokens: int | None, output_tokens: int | None) -> float:
        price = self.price(model)
        if price is None:
            return 0.0
        return ((input_tokens or 0) * price.get("input", 0.0) + (output_tokens or 0) * price.get("output", 0.0)) / 1e6


class _Window:
    """A sliding minute: (time, amount) entries and their running total."""

    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, int]] = deque()
        self.total = 0

    def expire(self, now: float) -> None:
        entries = self.entries
        while entries and entries[0][0] <= now - WINDOW:
            self.total -= entries.popleft()[1]

    def add(self, now: float, amount: int) -> None:
        self.entries.append((now, amount))
        self.total += amount

    def wait_until_below(self, limit: int, now: float) -> int:
        """Seconds until the total drops below `limit`."""
        total = self.total
        for t, amount in self.entries:
            total -= amount
            if total < limit:
                return max(1, math.ceil(t + WINDOW - now))
        return 1


def counter_key(rule: CompiledRule, call: Call) -> str:
    limits = rule.rule.limits
    if limits is not None and limits.per == "session" and call.session:
        return f"session:{call.session}"
    return f"agent:{call.agent}"


def _over(windows: dict[tuple[str, str], _Window], key: tuple[str, str], limit: int | None, now: float) -> int | None:
    """Seconds to wait when `key`'s sliding minute is at `limit`, else None."""
    window = windows.get(key) if limit is not None else None
    if window is None or limit is None:
        return None
    window.expire(now)
    return window.wait_until_below(limit, now) if window.total >= limit else None


#: Every this many admitted calls, minute windows left empty (ended sessions) and past days are dropped.
SWEEP_EVERY = 4096


class Limiter:
    """All counters of a running interlock. Event-loop only (no locks), except the SQLite worker."""

    def __init__(self, store_path: str | None = None, prices: Mapping[str, Mapping[str, float]] | None = None) -> None:
        self.prices = Prices(prices or {})
        self.store_path = store_path if store_path and store_path != ":memory:" else None
        self.requests: dict[tuple[str, str], _Window] = {}
        self.tokens: dict[tuple[str, str], _Window] = {}
        self.inflight: dict[tuple[str, str], int] = {}
        #: (day, rule, key) → [tokens, usd]
        self.daily: dict[tuple[str, str, str], list[float]] = {}
        self._dirty: set[tuple[str, str, str]] = set()
        self._flush_pending = False
        self._lock = threading.Lock()
        self._writer: ThreadPoolExecutor | None = None
        self._admitted = 0
        if self.store_path:
            self._load()

    # -- admission ----------------------------------------------------------------------------

    def exceeded(self, rule: CompiledRule, call: Call, now: float) -> Exceeded | None:
        """The first limit of `rule` this call would break, or None. No side effects."""
        limits = rule.rule.limits
        assert limits is not None
        if (
            limits.budget_usd_per_day is not None
            and limits.unpriced == "deny"
            and self.prices.price(call.model) is None
        ):
            # A money budget cannot count a call it cannot price: refused, not counted as $0 (issue 16).
            model = "a call without a model" if call.model is None else f"model {call.model!r}"
            message = f"{model} has no price in `prices:`, and the money budget of rule {rule.name!r} needs one"
            return Exceeded(rule, "unpriced_model", message, 0)
        key = (rule.name, counter_key(rule, call))
        who = key[1].replace(":", " ", 1)
        if limits.concurrent is not None and self.inflight.get(key, 0) >= limits.concurrent:
            return Exceeded(rule, "rate_limited", f"{limits.concurrent} concurrent calls for {who}", 1)
        for windows, limit, unit in (
            (self.requests, limits.requests_per_minute, "requests"),
            (self.tokens, limits.tokens_per_minute, "tokens"),
        ):
            retry = _over(windows, key, limit, now)
            if retry is not None:
                return Exceeded(rule, "rate_limited", f"{limit} {unit} per minute for {who}", retry)
        if limits.tokens_per_day is not None or limits.budget_usd_per_day is not None:
            tokens, usd = self.daily.get((today(now), *key), (0, 0.0))
            if limits.tokens_per_day is not None and tokens >= limits.tokens_per_day:
                message = f"{limits.tokens_per_day} tokens per day for {who}"
                return Exceeded(rule, "budget_exceeded", message, seconds_to_midnight(now))
            if limits.budget_usd_per_day is not None and usd >= limits.budget_usd_per_day:
                message = f"a budget of ${limits.budget_usd_per_day:g} per day for {who} (spent ${usd:.4f})"
                return Exceeded(rule, "budget_exceeded", message, seconds_to_midnight(now))
        return None

    def admit(self, rules: Sequence[CompiledRule], call: Call, now: float) -> list[tuple[str, str]]:
        """Count the call against these rules' limits; returns the keys to `finish` later."""
        keys = []
        for rule in rules:
            limits = rule.rule.limits
            assert limits is not None
            key = (rule.name, counter_key(rule, call))
            keys.append(key)
            if limits.requests_per_minute is not None:
                self.requests.setdefault(key, _Window()).add(now, 1)
            if limits.concurrent is not None:
                self.inflight[key] = self.inflight.get(key, 0) + 1
        self._admitted += 1
        if self._admitted % SWEEP_EVERY == 0:
            self.sweep(now)
        return keys

    def sweep(self, now: float) -> None:
        """Forget what can no longer limit anything: empty minute windows (with `per: session`, one is
        left behind by every session) and daily counters of past days that are already saved."""
        for windows in (self.requests, self.tokens):
            for window in windows.values():
                window.expire(now)
            for key in [k for k, w in windows.items() if not w.entries]:
                del windows[key]
        day = today(now)
        with self._lock:
            unsaved = self._dirty if self.store_path else set()  # without a store there is nothing to save
            for daily_key in [k for k in self.daily if k[0] != day and k not in unsaved]:
                del self.daily[daily_key]
                self._dirty.discard(daily_key)

    def finish(self, rules: Sequence[CompiledRule], keys: Sequence[tuple[str, str]], call: Call, now: float) -> float:
        """The call is over: release its concurrency slots, count its tokens and cost. Returns the cost."""
        tokens = (call.input_tokens or 0) + (call.output_tokens or 0)
        cost = self.prices.cost(call.model, call.input_tokens, call.output_tokens)
        day = today(now)
        for rule, key in zip(rules, keys, strict=True):
            limits = rule.rule.limits
            assert limits is not None
            if limits.concurrent is not None:
                left = self.inflight.get(key, 0) - 1
                if left > 0:
                    self.inflight[key] = left
                else:
                    self.inflight.pop(key, None)
            if limits.tokens_per_minute is not None and tokens:
                self.tokens.setdefault(key, _Window()).add(now, tokens)
            if (limits.tokens_per_day is not None or limits.budget_usd_per_day is not None) and (tokens or cost):
                daily_key = (day, *key)
                with self._lock:
                    counters = self.daily.setdefault(daily_key, [0, 0.0])
                    counters[0] += tokens
                    counters[1] += cost
                    self._dirty.add(daily_key)
                self._schedule_flush()
        return cost

    # -- persistence --------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        assert self.store_path is not None
        connection = sqlite3.connect(self.store_path, timeout=10.0)
        connection.execute("PRAGMA busy_timeout = 10000")
        connection.execute(_SCHEMA)
        return connection

    def _load(self) -> None:
        # Startup, before serving: a brief blocking read is fine here.
        try:
            connection = self._connect()
            try:
                now = time.time()
                with connection:  # yesterday's counters are kept a week, for people asking what happened
                    connection.execute(f"DELETE FROM {TABLE} WHERE day < ?", (today(now - 7 * 86400),))
                rows = connection.execute(
                    f"SELECT day, rule, key, tokens, usd FROM {TABLE} WHERE day = ?", (today(now),)
                ).fetchall()
            finally:
                connection.close()
        except sqlite3.Error as exc:
            log.error("cannot read daily policy counters from %s: %s", self.store_path, exc)
            return
        for day, rule, key, tokens, usd in rows:
            self.daily[(day, rule, key)] = [tokens, usd]

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
        if not rows or self.store_path is None:
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
            finally:
                connection.close()
        except sqlite3.Error as exc:
            log.error("cannot save daily policy counters to %s: %s", self.store_path, exc)

    def close(self) -> None:
        """Flush what is pending and stop the worker."""
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        self.flush()

    def snapshot(self) -> dict[str, Any]:
        """Current counters, for the admin API."""
        now = time.time()
        day = today(now)
        return {
            "inflight": {f"{r} {k}": n for (r, k), n in self.inflight.items()},
            "daily": {
                f"{r} {k}": {"tokens": int(v[0]), "usd": round(v[1], 6)}
                for (d, r, k), v in self.daily.items()
                if d == day
            },
        }


__all__ = ["Exceeded", "Limiter", "Prices", "counter_key"]
