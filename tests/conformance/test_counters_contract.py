"""The `Counters` contract (interlock/policies/counters.py), through the interface only: atomic,
batched add-and-check, windows that roll over on the caller's clock, gauges, day counters that
survive a restart. Runs against every backend in conftest.COUNTERS_BACKENDS."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest

from interlock.policies.counters import Add, Check, Counter, Counters

Factory = Callable[[Path], Counters]

REQUESTS = Counter(("rule", "agent:a"), "requests", "minute")
INFLIGHT = Counter(("rule", "agent:a"), "inflight", "none")
TOKENS_DAY = Counter(("rule", "agent:a"), "tokens", "day")
USD_DAY = Counter(("rule", "agent:a"), "usd", "day")
#: Noon UTC yesterday: any fixed time works for the windows, and day counters are kept a week
#: (a backend may expire older ones by the wall clock).
NOON = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0).timestamp()


async def test_admit_adds_below_the_limit_and_nothing_at_it(counters_factory: Factory, tmp_path: Path) -> None:
    counters = counters_factory(tmp_path)
    try:
        check, add = [Check(REQUESTS, 2)], [Add(REQUESTS, 1)]
        assert await counters.admit(check, add, NOON) == []
        assert await counters.admit(check, add, NOON + 1) == []
        over = await counters.admit(check, add, NOON + 2)
        assert [(o.position, o.value) for o in over] == [(0, 2)]
        assert 1 <= over[0].retry_after <= 60
        # the refused admission added nothing: still over by exactly the limit
        assert [o.value for o in await counters.admit(check, add, NOON + 3)] == [2]
    finally:
        await counters.aclose()


async def test_a_sliding_minute_rolls_over_on_the_callers_clock(counters_factory: Factory, tmp_path: Path) -> None:
    counters = counters_factory(tmp_path)
    try:
        check, add = [Check(REQUESTS, 1)], [Add(REQUESTS, 1)]
        assert await counters.admit(check, add, NOON) == []
        over = await counters.admit(check, add, NOON + 59)
        assert over and over[0].retry_after == 1
        assert await counters.admit(check, add, NOON + 60) == []  # the first entry is a minute old
    finally:
        await counters.aclose()


async def test_day_counters_reset_at_utc_midnight_and_survive_a_restart(
    counters_factory: Factory, tmp_path: Path
) -> None:
    counters = counters_factory(tmp_path)
    await counters.add([Add(TOKENS_DAY, 700), Add(USD_DAY, 0.25)], NOON)
    await counters.aclose()
    counters = counters_factory(tmp_path)  # a restart
    try:
        checks = [Check(TOKENS_DAY, 500), Check(USD_DAY, 1.0)]
        over = await counters.admit(checks, [], NOON + 60)
        assert [(o.position, o.value) for o in over] == [(0, 700)]
        assert over[0].retry_after == 12 * 3600 - 60  # until 00:00 UTC
        snapshot = await counters.snapshot(NOON + 60)
        assert snapshot["daily"] == {"rule agent:a": {"tokens": 700, "usd": 0.25}}
        assert await counters.admit(checks, [], NOON + 12 * 3600) == []  # the next day
    finally:
        await counters.aclose()


async def test_a_gauge_is_released_and_never_negative(counters_factory: Factory, tmp_path: Path) -> None:
    counters = counters_factory(tmp_path)
    try:
        check, take = [Check(INFLIGHT, 1)], [Add(INFLIGHT, 1)]
        assert await counters.admit(check, take, NOON) == []
        assert (await counters.snapshot(NOON))["inflight"] == {"rule agent:a": 1}
        assert await counters.admit(check, take, NOON)
        await counters.add([Add(INFLIGHT, -1)], NOON)
        await counters.add([Add(INFLIGHT, -1)], NOON)  # a second release does not go below zero
        assert (await counters.snapshot(NOON))["inflight"] == {}
        assert await counters.admit(check, take, NOON) == []
        assert await counters.admit(check, take, NOON)  # one in flight again, not two free slots
    finally:
        await counters.aclose()


async def test_an_unenforced_check_is_reported_but_never_stops_the_adds(
    counters_factory: Factory, tmp_path: Path
) -> None:
    counters = counters_factory(tmp_path)
    try:
        watch = Check(REQUESTS, 1, enforce=False)
        assert await counters.admit([watch], [Add(REQUESTS, 1)], NOON) == []
        over = await counters.admit([watch], [Add(REQUESTS, 1)], NOON)
        assert [o.value for o in over] == [1]
        assert [o.value for o in await counters.admit([watch], [], NOON)] == [2]  # that add was applied
    finally:
        await counters.aclose()


async def test_scopes_are_counted_apart(counters_factory: Factory, tmp_path: Path) -> None:
    counters = counters_factory(tmp_path)
    try:
        other = Counter(("rule", "session:s2"), "requests", "minute")
        assert await counters.admit([Check(REQUESTS, 1)], [Add(REQUESTS, 1)], NOON) == []
        assert await counters.admit([Check(other, 1)], [Add(other, 1)], NOON) == []
        assert await counters.admit([Check(REQUESTS, 1)], [], NOON)
    finally:
        await counters.aclose()


async def test_admission_is_atomic_under_concurrent_tasks(counters_factory: Factory, tmp_path: Path) -> None:
    counters = counters_factory(tmp_path)
    try:
        checks = [Check(INFLIGHT, 10), Check(REQUESTS, 1000)]
        adds = [Add(INFLIGHT, 1), Add(REQUESTS, 1)]
        results = await asyncio.gather(*(counters.admit(checks, adds, NOON) for _ in range(100)))
        assert sum(1 for over in results if not over) == 10  # exactly the limit passed
        requests = await counters.admit([Check(REQUESTS, 0)], [], NOON)
        assert [o.value for o in requests] == [10]  # a refused batch added none of its parts
    finally:
        await counters.aclose()


async def test_life_counters_never_roll_over_and_survive_a_restart(counters_factory: Factory, tmp_path: Path) -> None:
    calls = Counter(("cap", "session:s1"), "calls", "life")
    usd = Counter(("cap", "session:s1"), "usd", "life")
    age = Counter(("cap", "session:s1"), "age", "life")
    # A wall-clock time: a backend may forget life counters idle for a week by the wall clock.
    now = dt.datetime.now(dt.UTC).timestamp()
    counters = counters_factory(tmp_path)
    try:
        checks = [Check(calls, 2), Check(age, 3600)]
        assert await counters.admit(checks, [Add(calls, 1), Add(age, 0)], now) == []
        await counters.add([Add(usd, 0.25)], now + 1)
        # Two days later (no minute or day window applies), the age counts from the first add.
        later = now + 2 * 86400
        over = await counters.admit(checks, [Add(calls, 1), Add(age, 0)], later)
        assert [(o.position, o.retry_after) for o in over] == [(1, 0)]  # over its age, and no waiting lifts it
        assert over[0].value == pytest.approx(2 * 86400)
        assert await counters.admit([Check(usd, 1.0)], [], later) == []
    finally:
        await counters.aclose()
    counters = counters_factory(tmp_path)  # a restart
    try:
        over = await counters.admit([Check(usd, 0.25), Check(calls, 1)], [], now + 5)
        assert [(o.position, o.value) for o in over] == [(0, 0.25), (1, 1)]  # the refused admission added nothing
    finally:
        await counters.aclose()


async def test_read_returns_each_counters_value_and_changes_none(counters_factory: Factory, tmp_path: Path) -> None:
    calls = Counter(("cap", "session:s1"), "calls", "life")
    usd = Counter(("cap", "session:s1"), "usd", "life")
    age = Counter(("cap", "session:s1"), "age", "life")
    never = Counter(("cap", "session:other"), "calls", "life")
    now = dt.datetime.now(dt.UTC).timestamp()  # wall clock: life counters idle for a week may be forgotten
    counters = counters_factory(tmp_path)
    try:
        assert await counters.read([], now) == []
        await counters.add([Add(calls, 1), Add(age, 0), Add(REQUESTS, 1), Add(INFLIGHT, 1)], now)
        await counters.add([Add(calls, 1), Add(usd, 0.25), Add(TOKENS_DAY, 70), Add(REQUESTS, 1)], now + 10)
        every = [calls, usd, age, never, REQUESTS, INFLIGHT, TOKENS_DAY, USD_DAY]
        values = await counters.read(every, now + 30)
        # `age` to a millisecond: Redis keeps the first add's time as Lua's 14-digit text of it.
        assert values == [2, 0.25, pytest.approx(30, abs=1e-3), 0, 2, 1, 70, 0]
        assert await counters.read(every, now + 30) == values  # reading added nothing
        # The minute window slides as a check sees it: the first request is a minute old at +60.
        assert await counters.read([REQUESTS, age], now + 60) == [1, pytest.approx(60, abs=1e-3)]
        # What read says is what a check sees: at its limit, the check is over.
        over = await counters.admit([Check(calls, 2)], [], now + 60)
        assert [o.value for o in over] == [2]
    finally:
        await counters.aclose()
