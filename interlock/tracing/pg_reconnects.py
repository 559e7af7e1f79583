"""psycopg's pool logs a WARNING for every failed reconnect while the PostgreSQL server is down (its
backoff starts at 1 s, and every pool of every replica does it: one line a second, then hundreds over
an outage, burying the lines that say what interlock does about it). `ReconnectLog`, a filter on the
`psycopg.pool` logger, keeps one line when a pool of the store starts failing, then one line every
`every` seconds with the count, and logs one line when the store connects again (`connected`, from
`PostgresStore.connection`). The recorder's own fault lines (`faults.Holding`: once when writes
start failing, once when they work again) are unchanged; this bounds only the pool's.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("interlock.store")

#: Seconds between two lines of one outage's failed reconnects (the count in between is kept).
EVERY = 60.0
#: The pools this module bounds: the store's, named `<PREFIX><n>` (one name a store, so two stores
#: of one process keep their outages apart). Other pools' records pass untouched.
PREFIX = "interlock-store-"
_NUMBERS = itertools.count(1)


def pool_name() -> str:
    """A new store pool's name."""
    return f"{PREFIX}{next(_NUMBERS)}"


@dataclass(slots=True)
class _Outage:
    since: float
    said: float
    failures: int = 1


class ReconnectLog(logging.Filter):
    """Bounds the pool's failed-reconnect warnings: recognised by their arguments (a store pool's name
    and the exception), not by psycopg's wording."""

    def __init__(self, every: float = EVERY, clock: Callable[[], float] = time.monotonic, prefix: str = PREFIX) -> None:
        super().__init__()
        self.every = every
        self.clock = clock
        self.prefix = prefix  # the pools it bounds (a test's own, apart from the process's filter)
        self.lock = threading.Lock()
        #: Pool name → its outage; an entry lives from a pool's first failure until it connects
        #: again or its store closes (bounded by the stores open).
        self.outages: dict[str, _Outage] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.levelno != logging.WARNING or not isinstance(args, tuple) or len(args) != 2:
            return True
        name, error = args
        if not (isinstance(name, str) and name.startswith(self.prefix) and isinstance(error, Exception)):
            return True
        now = self.clock()
        with self.lock:
            outage = self.outages.get(name)
            if outage is None:
                self.outages[name] = _Outage(now, now)
                record.msg = (
                    "store pool %r cannot connect: %s (retried with backoff; said again every %g s, with a count)"
                )
                record.args = (name, error, self.every)
                return True
            outage.failures += 1
            if now - outage.said < self.every:
                return False
            outage.said = now
            since, failures = now - outage.since, outage.failures
        record.msg = "store pool %r still cannot connect after %.0f s (%d failed reconnects): %s"
        record.args = (name, since, failures, error)
        return True

    def connected(self, name: str) -> None:
        """The store got a connection: an outage of this pool, if one was said, is over (said once)."""
        if name not in self.outages:  # the usual case, without the lock: a dict lookup
            return
        with self.lock:
            outage = self.outages.pop(name, None)
        if outage is not None:
            log.warning(
                "store pool %r connects again after %.1f s (%d failed reconnects)",
                name,
                self.clock() - outage.since,
                outage.failures,
            )

    def forget(self, name: str) -> None:
        """The store closed: its pool's outage, if any, is not reported."""
        with self.lock:
            self.outages.pop(name, None)


#: The one filter of the process (installed on `psycopg.pool` by the first PostgreSQL store).
RECONNECT_LOG = ReconnectLog()


def install() -> ReconnectLog:
    logger = logging.getLogger("psycopg.pool")
    if RECONNECT_LOG not in logger.filters:
        logger.addFilter(RECONNECT_LOG)
    return RECONNECT_LOG


__all__ = ["EVERY", "PREFIX", "RECONNECT_LOG", "ReconnectLog", "install", "pool_name"]
