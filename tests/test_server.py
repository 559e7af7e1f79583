"""`interlock serve`'s own care of the process: once startup is over, the startup heap is frozen and
young objects are collected less often."""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import Any

from interlock.server import YOUNG_THRESHOLD, freeze_startup_heap


class _Warming:
    """A runtime whose one stage warms until `warmed` is set (as the usage stage's price catalogue)."""

    def __init__(self) -> None:
        self.warmed = threading.Event()

    def warming(self) -> list[str]:
        return [] if self.warmed.is_set() else ["usage"]


async def test_the_heap_is_frozen_only_once_startup_is_over() -> None:
    runtime: Any = _Warming()
    threshold = gc.get_threshold()
    gc.unfreeze()
    try:
        task = asyncio.create_task(freeze_startup_heap(runtime, poll=0.001))
        for _ in range(5):  # several polls while warming: nothing frozen yet
            await asyncio.sleep(0.002)
        assert not task.done()
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == threshold
        runtime.warmed.set()
        await asyncio.wait_for(task, timeout=60)
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *threshold[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
