"""The stage contract: every hook a stage may implement, each with its one-line meaning.

A stage is a plain object with any subset of these methods, sync or async. Stages never call each
other; they talk only through the `Call`. A stage that refuses a call sets `call.answer(...)` and
records a `Decision`; it does not raise. A stage that supplies the response itself (a cache, a
playback) sets `call.supplied`, and that response runs through `response_head`, `chunk` and
`response` like an upstream's. The end of a call has two phases: every stage's `seal`, then every
stage's `done`, so whatever consumes the record reads it sealed. `tests/proxy/test_hooks.py`
fails if a hook here has no test.

`Pipeline` runs them: a list of stages (`proxy/pipeline.py`'s `built_in_stages`, or replay's
playback) resolved into per-hook lists. It lives here, beside the contract, rather than beside the
built-in stage list, so that a proxy app with stages of its own (replay's) imports no built-in
stage, nor what they import (the HTTP client, the price catalogue).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

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


Hook = Callable[..., Awaitable[Any]]


def _as_async(method: Callable[..., Any]) -> Hook:
    if inspect.iscoroutinefunction(method):
        return method

    async def call(*args: Any) -> Any:
        return method(*args)

    return call


class Pipeline:
    """The stages' hooks, resolved once into per-event lists so the hot path only loops."""

    def __init__(self, stages: Sequence[object]) -> None:
        self.stages = list(stages)
        self.hooks: dict[str, list[Hook]] = {name: [] for name in HOOKS}
        for stage in self.stages:
            for name in HOOKS:
                method = getattr(stage, name, None)
                if method is not None:
                    self.hooks[name].append(_as_async(method))
        self.has_chunk_hooks = bool(self.hooks["chunk"])

    async def request(self, call: Call) -> None:
        """The request hooks in order, until one answers the call (`call.reply`) or supplies its
        response (`call.supplied`): the stages after it do not see the request."""
        for hook in self.hooks["request"]:
            await hook(call)
            if call.reply is not None or call.supplied is not None:
                return

    async def response_head(self, call: Call) -> None:
        for hook in self.hooks["response_head"]:
            await hook(call)

    async def chunk(self, call: Call, events: list[Event], last: bool) -> list[Event]:
        """A stream's events, split once by the proxy (the adapter's splitter), through every
        `chunk` hook in order: each gets what the one before it let through."""
        for hook in self.hooks["chunk"]:
            events = await hook(call, events, last)
        return events

    async def response(self, call: Call) -> None:
        for hook in self.hooks["response"]:
            await hook(call)

    async def error(self, call: Call, exc: BaseException) -> None:
        for hook in self.hooks["error"]:
            await hook(call, exc)

    async def finish(self, call: Call) -> None:
        """The end of a call: every `seal` hook, then every `done` hook. A seal that raises stops
        here: a record that may not be redacted is not consumed (the caller logs it)."""
        for hook in self.hooks["seal"]:
            await hook(call)
        for hook in self.hooks["done"]:
            await hook(call)
