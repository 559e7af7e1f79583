"""The `LoopHistory` contract (interlock/policies/loop_history.py), through the interface only: keys
appended and found within a session's window, error streaks, refused tools, loops announced once,
sessions bounded by count and idle time, and (for a shared backend) two clients seeing one history,
atomically. Runs against every backend in conftest.LOOP_BACKENDS."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from interlock.policies.loop_history import Repeat, Streak
from tests.conformance.conftest import LoopsFactory

A, B, C, D = (bytes([n]) * 16 for n in range(4))
HOUR = 3600.0


def _tool(key: bytes) -> list[Repeat]:
    return [Repeat("tool_calls", key)]


async def test_a_key_is_found_where_it_stands_among_the_latest(loops_factory: LoopsFactory) -> None:
    history = loops_factory()
    assert (await history.observe("s", 3, 1.0, _tool(A))).repeats == [[0]]
    assert (await history.observe("s", 3, 2.0, _tool(B))).repeats == [[0]]
    assert (await history.observe("s", 3, 3.0, _tool(A))).repeats == [[0, 2]]
    # Several in one call, in order: the second A sees the first.
    seen = await history.observe("s", 3, 4.0, [Repeat("tool_calls", A), Repeat("tool_calls", A)])
    assert seen.blocked is None and seen.repeats == [[0, 1], [0, 1, 2]]
    await history.observe("s", 3, 5.0, _tool(C))
    await history.observe("s", 3, 6.0, _tool(D))
    # Only the latest three are kept: [A, C, D] before this one, [C, D, A] after it.
    assert (await history.observe("s", 3, 7.0, _tool(A))).repeats == [[0]]
    assert (await history.observe("s", 3, 8.0, _tool(A))).repeats == [[0, 1]]


async def test_kinds_and_sessions_are_counted_apart(loops_factory: LoopsFactory) -> None:
    history = loops_factory()
    assert (await history.observe("s1", 10, 1.0, _tool(A))).repeats == [[0]]
    assert (await history.observe("s1", 10, 2.0, [Repeat("requests", A)])).repeats == [[0]]
    assert (await history.observe("s2", 10, 3.0, _tool(A))).repeats == [[0]]
    assert (await history.observe("s1", 10, 4.0, _tool(A))).repeats == [[0, 1]]


async def test_a_kind_no_backend_keeps_is_refused_and_nothing_is_kept(loops_factory: LoopsFactory) -> None:
    history = loops_factory()
    with pytest.raises(ValueError):
        await history.observe("s", 3, 1.0, [Repeat("tool_calls", A), Repeat("replies", A)])
    # The refusal came before anything was appended: the tool call's key is new to the session.
    assert (await history.observe("s", 3, 2.0, _tool(A))).repeats == [[0]]


async def test_a_wider_window_looks_further_back_and_a_narrower_one_never_forgets(
    loops_factory: LoopsFactory,
) -> None:
    history = loops_factory()
    for now in (1.0, 2.0, 3.0):
        await history.observe("s", 2, now, _tool(A))  # two kept
    assert (await history.observe("s", 4, 4.0, _tool(A))).repeats == [[0, 1, 2]]
    assert (await history.observe("s", 4, 5.0, _tool(A))).repeats == [[0, 1, 2, 3]]
    # A call under a rule with a smaller window does not trim what a larger one asked for.
    assert (await history.observe("s", 2, 6.0, _tool(A))).repeats == [[0, 1, 2, 3]]


async def test_error_streaks_lengthen_restart_and_end(loops_factory: LoopsFactory) -> None:
    history = loops_factory()

    async def step(*streaks: Streak) -> list[int]:
        return (await history.observe("s", 10, 1.0, streaks=streaks)).streaks

    assert await step(Streak("search", A)) == [1]
    assert await step(Streak("search", A), Streak("fetch", B)) == [2, 1]
    assert await step(Streak("search", A)) == [3]
    assert await step(Streak("search", B)) == [1]  # another error starts over
    assert await step(Streak("search", None), Streak("fetch", B)) == [0, 2]  # a success ends it
    assert await step(Streak("search", B)) == [1]


async def test_a_refused_tool_is_refused_and_nothing_else_changes(loops_factory: LoopsFactory) -> None:
    history = loops_factory()
    await history.block("s", "search", "error-loops", "the same error 3 times", 1.0)
    seen = await history.observe("s", 10, 2.0, _tool(A), tool="search")
    assert seen.blocked == ("error-loops", "the same error 3 times")
    assert (await history.observe("s", 10, 3.0, _tool(A), tool="fetch")).repeats == [[0]]  # A not kept before
    assert (await history.observe("other", 10, 4.0, _tool(A), tool="search")).blocked is None


async def test_a_loop_is_announced_once_per_session(loops_factory: LoopsFactory) -> None:
    history = loops_factory()
    assert await history.announce("s", "no-loops", "tool_calls", 1.0)
    assert not await history.announce("s", "no-loops", "tool_calls", 2.0)
    assert await history.announce("s", "no-loops", "requests", 3.0)
    assert await history.announce("t", "no-loops", "tool_calls", 4.0)


async def test_an_idle_session_starts_afresh(loops_factory: LoopsFactory) -> None:
    history = loops_factory(idle_ttl=HOUR)
    await history.block("s", "search", "rule", "why", 1000.0)
    assert await history.announce("s", "rule", "tool_calls", 1000.0)
    await history.observe("s", 10, 1000.0, _tool(A), [Streak("fetch", B)])
    assert (await history.observe("s", 10, 1000.0 + HOUR, _tool(A))).repeats == [[0, 1]]  # not idle yet
    later = 1000.0 + 2 * HOUR + 1
    seen = await history.observe("s", 10, later, _tool(A), [Streak("fetch", B)], tool="search")
    assert seen == (None, [[0]], [1])
    assert await history.announce("s", "rule", "tool_calls", later)


async def test_sessions_are_bounded_least_recently_seen_first(loops_factory: LoopsFactory) -> None:
    history = loops_factory(max_sessions=3)
    for index in range(5):
        await history.observe(f"s{index}", 10, float(index), _tool(A))
    assert (await history.observe("s4", 10, 5.0, _tool(A))).repeats == [[0, 1]]  # kept
    assert (await history.observe("s0", 10, 6.0, _tool(A))).repeats == [[0]]  # forgotten


async def test_streaks_and_refused_tools_are_bounded_per_session(loops_factory: LoopsFactory) -> None:
    history = loops_factory(max_tools=2)
    steps = [Streak("t1", A), Streak("t2", A), Streak("t3", A)]
    assert (await history.observe("s", 10, 1.0, streaks=steps)).streaks == [1, 1, 1]
    # t1 was the least recently stepped: forgotten; t3 kept.
    assert (await history.observe("s", 10, 2.0, streaks=[Streak("t3", A)])).streaks == [2]
    assert (await history.observe("s", 10, 3.0, streaks=[Streak("t1", A)])).streaks == [1]
    for tool in ("t1", "t2", "t3"):
        await history.block("s", tool, "rule", f"{tool} refused", 4.0)
    refused = [(await history.observe("s", 10, 5.0, tool=t)).blocked for t in ("t1", "t2", "t3")]
    assert refused == [None, ("rule", "t2 refused"), ("rule", "t3 refused")]


async def test_two_clients_see_one_history_atomically(loops_factory: LoopsFactory) -> None:
    """Two clients (two workers or replicas; the in-memory history: one, twice) appending one key at
    once: each append sees every one before it, so the counts are exactly 1..n."""
    first = loops_factory()
    second: Any = loops_factory() if getattr(loops_factory, "shared", False) else first
    await second.block("s", "search", "rule", "refused", 1.0)
    assert (await first.observe("s", 100, 2.0, tool="search")).blocked == ("rule", "refused")
    assert await first.announce("s", "rule", "tool_calls", 2.0)
    assert not await second.announce("s", "rule", "tool_calls", 2.0)
    results = await asyncio.gather(
        *(client.observe("s", 100, 3.0, _tool(A)) for _ in range(20) for client in (first, second))
    )
    assert sorted(len(seen.repeats[0]) for seen in results) == list(range(1, 41))
    streaks = await asyncio.gather(
        *(client.observe("s", 100, 4.0, streaks=[Streak("fetch", B)]) for _ in range(10) for client in (first, second))
    )
    assert sorted(seen.streaks[0] for seen in streaks) == list(range(1, 21))
