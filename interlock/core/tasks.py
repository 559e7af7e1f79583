"""Ending a background task (a poller, a webhook worker, a lease renewer) when its owner closes."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and wait until it has ended, so nothing of it runs after its owner closed
    (the store or the client it uses is closed next). Its cancellation is swallowed; the caller's
    own is not: `asyncio.Task.cancelling()` tells them apart, so a shutdown that cancels the closer
    still ends it. A task already done is only waited for (None: nothing to do)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    current = asyncio.current_task()
    if current is not None and current.cancelling():
        raise asyncio.CancelledError  # the closer itself was cancelled meanwhile: not ours to swallow
