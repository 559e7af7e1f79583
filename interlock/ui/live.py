"""`GET /live`: server-sent events announcing newly recorded calls, so open pages update themselves.

Each connection follows the store's write position (`Store.written_since`) like `tail -f`: a cheap
indexed read every `POLL_SECONDS`, in a worker thread, never on the event loop. An event is
`event: calls` with the new calls' narrow rows as JSON; a comment line every `KEEPALIVE_SECONDS`
keeps proxies from closing an idle stream. Polling the store (rather than hooking the recorder)
also sees calls written by another interlock process sharing the file.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from interlock.tracing.backend import Store

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0


async def live(request: Request) -> Response:
    store: Store | None = getattr(request.app.state.runtime, "store", None)
    if store is None:
        return Response("recording is off\n", status_code=503, media_type="text/plain")
    _, position = await run_in_threadpool(store.written_since, None)

    async def events() -> AsyncIterator[str]:
        nonlocal position
        yield "retry: 2000\n: connected\n\n"
        quiet_since = time.monotonic()
        while True:
            rows, position = await run_in_threadpool(store.written_since, position, limit=200)
            if rows:
                quiet_since = time.monotonic()
                yield f"event: calls\ndata: {json.dumps(rows, separators=(',', ':'))}\n\n"
            elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"
            await asyncio.sleep(POLL_SECONDS)

    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


__all__ = ["live"]
