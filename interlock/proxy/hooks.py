"""The stage contract: every hook a stage may implement, each with its one-line meaning.

A stage is a plain object with any subset of these methods, sync or async. Stages never call each
other; they talk only through the `Call`. A stage that refuses a call sets `call.answer(...)` and
records a `Decision`; it does not raise. A stage that supplies the response itself (a cache, a
playback) sets `call.supplied`, and that response runs through `response_head`, `chunk` and
`response` like an upstream's. The end of a call has two phases: every stage's `seal`, then every
stage's `done`, so whatever consumes the record reads it sealed. `tests/proxy/test_hooks.py`
fails if a hook here has no test.
"""

from __future__ import annotations

from typing import Protocol

from interlock.core.call import Call
from interlock.core.views import Event

HOOKS = ("request", "response_head", "chunk", "response", "error", "seal", "done")


class Stage(Protocol):
    """Documentation of the hooks; stages implement any subset, and need not inherit from this."""

    name: str

    async def request(self, call: Call) -> None:
        """Before anything is sent upstream; may change the request, answer the call (`call.answer`) or
        supply its response (`call.supplied`); the stages after one that does are not asked."""

    async def response_head(self, call: Call) -> None:
        """The response's status and headers arrived (the upstream's or a supplied one);
        `call.status`/`response_headers` may be changed."""

    async def chunk(self, call: Call, events: list[Event], last: bool) -> list[Event]:
        """A stream's whole events on their way to the agent (split once, by the adapter's splitter;
        `event.json()` is each one's parse, shared by every stage: never changed in place); returns
        the events to send (may hold some back until `last`, when it must release everything it
        holds; a rewritten event is made by `Adapter.new_event`)."""
        return events

    async def response(self, call: Call) -> None:
        """A whole response is in (body, or all chunks); for non-streams, may set `agent_response_body`."""

    async def error(self, call: Call, exc: BaseException) -> None:
        """No upstream answered (every attempt failed), or a stage raised. (An agent that left, a total
        timeout or a broken stream are recorded on the call and seen by `seal`.)"""

    async def seal(self, call: Call) -> None:
        """The agent has its answer (or has left): settle the record (outcome, counted usage,
        redaction of what is stored) and forget per-call state. Runs before any `done`."""

    async def done(self, call: Call) -> None:
        """The record is sealed: consume it (record, export, collect); must not change the call."""
