"""The kill switch (issue 22): stop a session or an agent now, resume it later.

`Stops` holds which sessions and agents are stopped, mirrored from the store's `stops` table (so a
restart keeps them, and every interlock of a fleet on one PostgreSQL store sees them): it reads the
table at start and then every `poll_interval` seconds from a worker thread (bounded: the table
holds only stops), so a stop made elsewhere (`interlock sessions stop`, another replica) is applied
within that interval. A stop made here (the admin API, a loop rule's `stop_session`) is applied at
once. Applying a stop ends that session's (or agent's) calls in flight: each is cancelled with
`call.halted` set, and the proxy ends it with `session_stopped` (or `agent_stopped`) — the
protocol's error reply, or its error event for a stream already flowing.

`StopGate` is the stage: a new call of a stopped session or agent is refused, 403 in the protocol's
error shape with `x-should-retry: false` and the stop's reason; a call admitted is registered as in
flight until its response is in. Without a store (recording off) stops are kept in memory only.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from interlock.core.call import Call, Decision
from interlock.core.tasks import cancel_and_wait
from interlock.protocols import ADAPTERS
from interlock.proxy.escalation import Escalator

log = logging.getLogger("interlock.stops")

#: The error code of a call refused (or ended) because its session, or its agent, was stopped.
CODES = {"session": "session_stopped", "agent": "agent_stopped"}


def stop_message(kind: str, name: str, reason: str) -> str:
    return f"{kind} {name!r} was stopped: {reason} (resume it with `interlock {kind}s resume`)"


class Stops:
    """Stopped sessions and agents, and the calls in flight that a stop ends."""

    def __init__(self, store: Any = None, escalator: Escalator | None = None, poll_interval: float = 0.5) -> None:
        self.store = store
        self.escalator = escalator
        self.poll_interval = poll_interval
        #: (kind, name) → the stop row (`tracing.stops.STOP_COLUMNS`).
        self.stopped: dict[tuple[str, str], dict[str, Any]] = {}
        #: Calls in flight: id → (call, the task handling it).
        self.inflight: dict[str, tuple[Call, asyncio.Task[Any]]] = {}
        self._poller: asyncio.Task[None] | None = None
        self._reading: asyncio.Future[list[dict[str, Any]]] | None = None
        self._failing = False
        #: Set once the store's stops have been read (at once without a store). Until then a stopped
        #: session could be served: `/ready` waits for it (the gate's `warmed`), and a call meanwhile
        #: records that the kill switch was not checked.
        self.loaded = threading.Event()

    # -- lifetime ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the stops kept in the store, then poll for stops made elsewhere."""
        if self.store is None:
            self.loaded.set()
            return
        await self.refresh()
        self._poller = asyncio.get_running_loop().create_task(self._poll(), name="interlock-stops")

    async def aclose(self) -> None:
        """Stop polling. A read already running in its worker thread is waited for: cancelling the
        task does not stop the thread, and the store is closed next (a connection closed under a
        running query crashes SQLite)."""
        await cancel_and_wait(self._poller)
        self._poller = None
        if self._reading is not None:
            await asyncio.wait([self._reading])

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            await self.refresh()

    async def refresh(self) -> None:
        """Apply the store's stops (new ones end their calls in flight; resumed ones are lifted)."""
        reading = self._reading = asyncio.get_running_loop().run_in_executor(None, self.store.stops)
        try:
            rows = await asyncio.shield(reading)  # a cancel (aclose) leaves the read to finish
        except Exception as exc:  # noqa: BLE001 - the store is out of reach: keep what we know, say so once
            if not self._failing:
                log.error("cannot read the kill switch's stops from the store (keeping the last known): %s", exc)
            self._failing = True
            return
        if self._failing:
            log.info("the kill switch's stops are read from the store again")
        self._failing = False
        self.loaded.set()
        current = {(row["kind"], row["name"]): row for row in rows}
        for key, row in current.items():
            if key not in self.stopped:
                self._end_inflight(*key, row["reason"])
        self.stopped = current

    # -- stopping and resuming ---------------------------------------------------------------------

    async def stop(self, kind: str, name: str, reason: str) -> dict[str, Any]:
        """Stop a session or agent now: kept in the store, its calls in flight ended, escalated."""
        row = {"kind": kind, "name": name, "reason": reason, "stopped_at": time.time()}
        if self.store is not None:
            await asyncio.to_thread(self.store.set_stop, kind, name, reason, row["stopped_at"])
        self.stopped[(kind, name)] = row
        ended = self._end_inflight(kind, name, reason)
        log.warning("%s %r stopped: %s (%d call(s) in flight ended)", kind, name, reason, ended)
        if self.escalator is not None:
            self.escalator.emit(f"{kind}_stopped", **{kind: name}, reason=reason, calls_ended=ended)
        return {**row, "calls_ended": ended}

    async def resume(self, kind: str, name: str) -> bool:
        """Lift a stop; False when that session or agent was not stopped."""
        found = False
        if self.store is not None:
            found = await asyncio.to_thread(self.store.clear_stop, kind, name)
        found = self.stopped.pop((kind, name), None) is not None or found
        if found:
            log.warning("%s %r resumed", kind, name)
            if self.escalator is not None:
                self.escalator.emit(f"{kind}_resumed", **{kind: name})
        return found

    async def stop_session(self, session: str, reason: str) -> None:
        """A loop rule's `stop_session` (`policies.loops.SessionStopper`)."""
        await self.stop("session", session, reason)

    # -- calls -------------------------------------------------------------------------------------

    def refusal(self, call: Call) -> tuple[str, str] | None:
        """(code, message) when the call's session or agent is stopped."""
        if not self.stopped:
            return None
        for kind, name in (("session", call.session), ("agent", call.agent)):
            if name is not None:
                row = self.stopped.get((kind, name))
                if row is not None:
                    return CODES[kind], stop_message(kind, name, row["reason"])
        return None

    def _end_inflight(self, kind: str, name: str, reason: str) -> int:
        ended = 0
        for call, task in list(self.inflight.values()):
            if (call.session if kind == "session" else call.agent) != name or call.halted is not None:
                continue
            if call.reply is not None:
                continue  # a stage answered it already: it goes nowhere
            call.halted = (CODES[kind], stop_message(kind, name, reason))
            task.cancel()  # the proxy sees `call.halted` and ends the call in the protocol's shape
            ended += 1
        return ended


class StopGate:
    """Refuses calls of stopped sessions and agents; keeps the others findable while in flight."""

    name = "stops"

    def __init__(self, stops: Stops) -> None:
        self.stops = stops
        self.warmed = stops.loaded  # `/ready` is 503 until the stops kept in the store are known

    async def request(self, call: Call) -> None:
        if not self.stops.loaded.is_set():  # the store could not be read yet: say so on the call
            call.decide(Decision("stops", "error", None, "the kill switch's stops could not be read yet: not checked"))
        refused = self.stops.refusal(call)
        if refused is not None:
            code, message = refused
            call.decide(Decision("stops", "deny", None, message))
            reply = ADAPTERS[call.protocol].error_reply(403, code, message, retryable=False)
            call.answer(reply, "denied", code, message)
            return
        task = asyncio.current_task()
        if task is not None:
            self.stops.inflight[call.id] = (call, task)

    async def response(self, call: Call) -> None:
        # The whole response is in: too late to end it (and a cancel now could land outside the
        # proxy's handling of it).
        self.stops.inflight.pop(call.id, None)

    async def error(self, call: Call, exc: BaseException) -> None:
        self.stops.inflight.pop(call.id, None)

    async def seal(self, call: Call) -> None:
        self.stops.inflight.pop(call.id, None)
        if call.halted is not None:
            call.decide(Decision("stops", "deny", None, call.halted[1]))


__all__ = ["CODES", "StopGate", "Stops", "stop_message"]
