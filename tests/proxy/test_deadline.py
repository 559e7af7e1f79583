"""`proxy.deadline.Deadline` does what `asyncio.timeout` does: each case runs with both."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from interlock.proxy.deadline import Deadline


@contextlib.asynccontextmanager
async def _asyncio(delay: float | None) -> AsyncIterator[Any]:
    async with asyncio.timeout(delay) as cm:
        yield cm


@contextlib.asynccontextmanager
async def _deadline(delay: float | None) -> AsyncIterator[Any]:
    with Deadline(delay) as cm:
        yield cm


Kind = Callable[[float | None], contextlib.AbstractAsyncContextManager[Any]]
KINDS = pytest.mark.parametrize("kind", [_asyncio, _deadline], ids=["asyncio.timeout", "Deadline"])


async def _outcome(body: Callable[[], Awaitable[Any]]) -> tuple[str, int]:
    """What a task running `body` ended with, and how many cancel requests it still had pending."""
    task = asyncio.create_task(body())
    try:
        await task
        result = "returned"
    except BaseException as exc:  # noqa: BLE001 - the outcome is what is compared
        result = type(exc).__name__
    return result, task.cancelling()


@KINDS
async def test_a_block_that_finishes_in_time_is_untouched(kind: Kind) -> None:
    async def body() -> None:
        async with kind(60) as cm:
            await asyncio.sleep(0)
        assert not cm.expired()

    assert await _outcome(body) == ("returned", 0)


@KINDS
async def test_none_never_expires(kind: Kind) -> None:
    async def body() -> None:
        async with kind(None):
            await asyncio.sleep(0.01)

    assert await _outcome(body) == ("returned", 0)


@KINDS
@pytest.mark.parametrize("delay", [0.01, 0, -1])
async def test_an_expired_block_raises_timeout_error_and_leaves_no_cancel_pending(kind: Kind, delay: float) -> None:
    async def body() -> None:
        async with kind(delay) as cm:
            try:
                await asyncio.Event().wait()
            finally:
                assert cm.expired()

    assert await _outcome(body) == ("TimeoutError", 0)


@KINDS
async def test_a_cancel_from_outside_stays_a_cancel(kind: Kind) -> None:
    entered = asyncio.Event()

    async def body() -> None:
        async with kind(60):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(body())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelling() == 1


@KINDS
async def test_an_expiry_together_with_a_cancel_from_outside_stays_a_cancel(kind: Kind) -> None:
    async def body() -> None:
        async with kind(0):
            task = asyncio.current_task()
            assert task is not None
            task.cancel()  # a second request, besides the timeout's own
            await asyncio.Event().wait()

    assert await _outcome(body) == ("CancelledError", 1)


@KINDS
async def test_nested_the_one_that_expires_raises(kind: Kind) -> None:
    async def inner_expires() -> str:
        async with kind(60):
            try:
                async with kind(0.01):
                    await asyncio.Event().wait()
            except TimeoutError:
                return "inner"
        return "none"

    async def outer_expires() -> None:
        async with kind(0.01):
            async with kind(60):
                await asyncio.Event().wait()

    task = asyncio.create_task(inner_expires())
    assert await task == "inner" and task.cancelling() == 0
    assert await _outcome(outer_expires) == ("TimeoutError", 0)


@KINDS
async def test_another_exception_passes_through_and_cancels_the_timer(kind: Kind) -> None:
    async def body() -> None:
        with contextlib.suppress(KeyError):
            async with kind(0.01):
                raise KeyError("x")
        await asyncio.sleep(0.05)  # past the deadline: the timer must not cancel the task now

    assert await _outcome(body) == ("returned", 0)


def test_outside_a_task_it_refuses() -> None:
    with pytest.raises(RuntimeError):
        Deadline(1).__enter__()
