"""cancel_and_wait: a background task is ended and waited for; the closer's own cancellation passes."""

from __future__ import annotations

import asyncio

import pytest

from interlock.core.tasks import cancel_and_wait


def test_a_running_task_is_cancelled_and_has_ended_when_it_returns() -> None:
    async def scenario() -> None:
        started, cleaned = asyncio.Event(), asyncio.Event()

        async def poller() -> None:
            started.set()
            try:
                await asyncio.Event().wait()  # forever, until cancelled
            finally:
                cleaned.set()

        task = asyncio.create_task(poller())
        await started.wait()
        await cancel_and_wait(task)
        assert task.cancelled() and cleaned.is_set()
        await cancel_and_wait(task)  # again, and with nothing: no-ops
        await cancel_and_wait(None)

    asyncio.run(scenario())


def test_the_closers_own_cancellation_is_not_swallowed() -> None:
    async def scenario() -> None:
        entered = asyncio.Event()

        async def stubborn() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                entered.set()
                await asyncio.Event().wait()  # takes its time to end: the closer waits on it

        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        closer = asyncio.create_task(cancel_and_wait(task))
        await entered.wait()
        closer.cancel()  # a shutdown cancels the closer meanwhile
        with pytest.raises(asyncio.CancelledError):
            await closer
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
