"""psycopg's pool warns at every failed reconnect while PostgreSQL is down: interlock keeps one line
when the outage starts, one every `every` seconds with the count, and one when the store connects
again (tracing/pg_reconnects.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from interlock.testing import wait_for
from interlock.tracing.backend import StoreUnavailable, open_store
from interlock.tracing.pg_reconnects import RECONNECT_LOG, ReconnectLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def bounded() -> Iterator[tuple[ReconnectLog, Clock]]:
    clock = Clock()
    # Pools of its own name: the process's filter (installed by any PostgreSQL store opened in this
    # session) leaves them alone.
    limiter = ReconnectLog(every=60, clock=clock, prefix="test-pool-")
    pool_logger = logging.getLogger("psycopg.pool")
    pool_logger.addFilter(limiter)
    yield limiter, clock
    pool_logger.removeFilter(limiter)


def pool_warnings(caplog: Any) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "psycopg.pool"]


def fail(name: str) -> None:
    """A failed reconnect, logged as psycopg's pool logs it (the pool's name, the exception)."""
    logging.getLogger("psycopg.pool").warning("error connecting in %r: %s", name, OSError("connection refused"))


def test_an_outage_is_one_line_then_a_count_a_minute_then_one_line_when_it_ends(
    bounded: tuple[ReconnectLog, Clock], caplog: Any
) -> None:
    limiter, clock = bounded
    with caplog.at_level(logging.WARNING):
        for _ in range(30):  # 30 failures within a minute: one line
            fail("test-pool-91")
            clock.now += 1
        assert len(pool_warnings(caplog)) == 1
        clock.now += 31  # a minute after the first line: the next failure says the count
        fail("test-pool-91")
        said = pool_warnings(caplog)
        assert len(said) == 2 and 31 in said[1].args  # type: ignore[operator]
        fail("test-pool-91")
        assert len(pool_warnings(caplog)) == 2
        # Another pool's records, and a store pool's other warnings, pass untouched.
        fail("someone-elses-pool")
        logging.getLogger("psycopg.pool").warning("reconnection attempt in pool %r failed after %s sec", "x", 300)
        assert len(pool_warnings(caplog)) == 4
        limiter.connected("test-pool-91")
        ended = [r for r in caplog.records if r.name == "interlock.store"]
        assert len(ended) == 1 and 32 in ended[0].args  # type: ignore[operator]
        limiter.connected("test-pool-91")  # said once
        assert len([r for r in caplog.records if r.name == "interlock.store"]) == 1
        fail("test-pool-91")  # a new outage: its first line again
        assert len(pool_warnings(caplog)) == 5


@pytest.mark.slow
def test_a_real_outage_logs_the_pools_reconnects_bounded(postgres_server: Any, caplog: Any) -> None:
    store = open_store(postgres_server.database("reconnects"))
    try:
        with caplog.at_level(logging.WARNING):
            assert store.count_calls() == 0
            postgres_server.stop()
            try:

                def failed_three_times() -> bool:
                    # The server is down: every read fails, and a borrowed connection found broken
                    # starts the pool's reconnects.
                    with pytest.raises(StoreUnavailable):
                        store.count_calls()
                    outage = RECONNECT_LOG.outages.get(store.pool_name)  # type: ignore[attr-defined]
                    return outage is not None and outage.failures >= 3

                wait_for(failed_three_times, 120, "the pool's reconnects")
                assert len(pool_warnings(caplog)) == 1  # three failed reconnects, one line
            finally:
                postgres_server.start()
            wait_for(lambda: store.count_calls() == 0, 120, "the store back")
            ended = [r for r in caplog.records if r.name == "interlock.store"]
            assert len(ended) == 1  # and one line when it connects again
    finally:
        store.close()
