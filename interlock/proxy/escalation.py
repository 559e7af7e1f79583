"""Tell a human: POST a JSON event to a webhook when a call exhausts its retries or a breaker opens.

Off the hot path and bounded: `emit` only puts the event on a queue (dropping it, and counting the
drop, when the queue is full); one background task posts the events one at a time, each bounded by
`escalation.timeout`. A slow or dead webhook therefore never delays a call. Events carry no request
or response bodies (they may hold PII), only what happened and where.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from interlock.config import Escalation
from interlock.core.tasks import cancel_and_wait

log = logging.getLogger("interlock.escalation")


class Escalator:
    """Posts escalation events to `escalation.webhook`, if one is configured."""

    def __init__(self, config: Escalation, client: httpx.AsyncClient) -> None:
        self.config = config
        self.client = client
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._queue: asyncio.Queue[dict[str, Any]] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.config.webhook is not None

    def emit(self, event: str, **fields: Any) -> None:
        """Queue an event; never blocks, never raises. Call from the event loop."""
        if self.config.webhook is None:
            return
        if self._queue is None:
            self._queue = asyncio.Queue(self.config.queue_size)
            self._task = asyncio.get_running_loop().create_task(self._run(), name="interlock-escalation")
        try:
            self._queue.put_nowait({"event": event, "at": time.time(), **fields})
        except asyncio.QueueFull:
            self.dropped += 1

    async def _run(self) -> None:
        assert self._queue is not None and self.config.webhook is not None
        url = self.config.webhook
        headers = dict(self.config.headers)
        while True:
            event = await self._queue.get()
            try:
                response = await self.client.post(url, json=event, headers=headers, timeout=self.config.timeout)
                await response.aclose()
                if response.status_code >= 400:
                    raise httpx.HTTPStatusError(
                        f"the webhook answered {response.status_code}", request=response.request, response=response
                    )
                self.sent += 1
            except Exception as exc:  # a webhook problem must never end the worker
                self.failed += 1
                log.warning("escalation webhook failed for %s event: %s", event["event"], exc)

    async def aclose(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "sent": self.sent,
            "failed": self.failed,
            "dropped": self.dropped,
            "queued": self._queue.qsize() if self._queue is not None else 0,
        }


__all__ = ["Escalator"]
