"""The stage contract: every hook a stage may implement, each with its one-line meaning.

A stage is a plain object with any subset of these methods, sync or async. Stages never call each
other; they talk only through the `Call`. A stage that refuses a call sets `call.answer(...)` and
records a `Decision`; it does not raise. `tests/proxy/test_hooks.py` fails if a hook here has no
test.
"""

from __future__ import annotations

from typing import Protocol

from interlock.tracing.call import Call

HOOKS = ("request", "response_head", "chunk", "response", "error", "done")


class Stage(Protocol):
    """Documentation of the hooks; stages implement any subset, and need not inherit from this."""

    name: str

    async def request(self, call: Call) -> None:
        """Before anything is sent upstream; may change the request or answer the call itself."""

    async def response_head(self, call: Call) -> None:
        """The upstream's status and headers arrived; `call.status`/`response_headers` may be changed."""

    async def chunk(self, call: Call, data: bytes, last: bool) -> bytes:
        """A streamed piece on its way to the agent; returns what to send (may hold some back until
        `last`, when it must release everything it holds)."""
        return data

    async def response(self, call: Call) -> None:
        """A whole response is in (body, or all chunks); for non-streams, may set `agent_response_body`."""

    async def error(self, call: Call, exc: BaseException) -> None:
        """No upstream answered (every attempt failed), or a stage raised. (An agent that left, a total
        timeout or a broken stream are recorded on the call and seen by `done`.)"""

    async def done(self, call: Call) -> None:
        """The agent has its answer (or has left); the call is final. Record and export here."""
