"""Which upstream (and which model) an attempt goes to.

A route's *plan* for a call is an ordered list of targets, each an (upstream, model) pair with a
rank in the fallback chain:

- no alias: every upstream of the route, model as requested, all rank 0 (sorted by `priority`,
  lower first, then the order in the config);
- a model alias (`models: {smart: [{upstream: a, model: gpt-4o}, {model: gpt-4o-mini}]}`): the
  chain's entries in order, rank = position; an entry without `upstream` stands for every upstream.

Tries, `Retry-After` and circuit breakers are kept per *slot*: one (upstream, model) pair at run time
(issue 21), so a chain that lists the same pair twice shares them, and an outage of one model never
blocks another model on the same upstream. Each upstream also has an upstream-wide breaker that only
transport failures (connect errors, resets, malformed responses) feed.

`Router.pick` takes the available target (both breakers not open) whose slot this call has tried the
fewest times, then the lowest rank; among equals the route's `strategy` decides: `priority` (first in
order), `weight` (weighted random) or `least_inflight` (fewest calls in flight). The forwarder stays
on a target for `retry.same_target` tries before it asks for another.

The first pick allocates nothing (no list, no dict): most calls succeed first time.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import httpx

from interlock.config import Route, Timeouts, Upstream
from interlock.proxy.breaker import CLOSED, CircuitBreaker
from interlock.proxy.upstream import httpx_timeout

#: Slots (one breaker each) kept per upstream for models asked for by name (no alias): agents choose
#: the names, so the table is bounded; past it, closed slots are forgotten, else one shared slot serves.
MAX_SLOTS = 256

_OVERFLOW = "*"


@dataclass(slots=True, eq=False)
class Slot:
    """One (upstream, model) pair at run time: its breaker. Tries and `Retry-After` are keyed by it."""

    state: UpstreamState
    model: str
    breaker: CircuitBreaker
    #: Named by a model alias: never forgotten.
    pinned: bool = False

    def available(self) -> bool:
        return self.breaker.available() and self.state.breaker.available()


@dataclass(slots=True, eq=False)
class UpstreamState:
    """One upstream of one route at run time: its upstream-wide (transport) breaker, its slots, and
    the calls in flight to it."""

    upstream: Upstream
    name: str
    breaker: CircuitBreaker
    route: Route
    route_name: str
    on_change: Callable[[CircuitBreaker, str], None] | None
    clock: Callable[[], float] = time.monotonic
    inflight: int = 0
    slots: dict[str, Slot] = field(default_factory=dict)

    def slot(self, model: str | None, *, pinned: bool = False) -> Slot:
        """The slot for `model` (None: the model the call asked for was not given: one slot)."""
        key = model or ""
        slot = self.slots.get(key)
        if slot is not None:
            return slot
        if len(self.slots) >= MAX_SLOTS and not pinned:
            for name, old in self.slots.items():
                if not old.pinned and old.breaker.state == CLOSED and name != _OVERFLOW:
                    del self.slots[name]
                    break
            else:
                key = _OVERFLOW
                slot = self.slots.get(key)
                if slot is not None:
                    return slot
        breaker = CircuitBreaker(
            self.route.breaker,
            route=self.route_name,
            upstream=self.name,
            model=key,
            on_change=self.on_change,
            clock=self.clock,
        )
        slot = self.slots[key] = Slot(self, key, breaker, pinned)
        return slot


@dataclass(slots=True, frozen=True, eq=False)
class Target:
    """Where one attempt goes: an upstream, the model to ask it for (None: as requested), the
    position in the fallback chain, and what the alias entry says about it."""

    state: UpstreamState
    model: str | None
    rank: int
    #: The slot, when the model is fixed (an alias entry); else it depends on the call's model.
    slot: Slot | None = None
    #: Tries on this target before moving on (`retry.same_target`).
    same_target: int = 1
    #: The declared context window in tokens, if any.
    context_window: int | None = None


class Router:
    """The run-time side of one route: upstream states, plans, and the choice of the next target."""

    def __init__(
        self,
        name: str,
        route: Route,
        on_breaker_change: Callable[[CircuitBreaker, str], None] | None = None,
        *,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.name = name
        self.route = route
        #: `timeouts.first_token`, when it is shorter than the HTTP client's read timeout (which is the
        #: longer of first_token and idle): an attempt is then cut at it. None: no timer on the fast path.
        self.first_token: float | None = None
        #: `timeouts.idle`, when it is shorter than the client's read timeout: the stream is bounded by it.
        self.idle: float | None = None
        #: Whether the first attempt needs a timer: the retry deadline is shorter than what bounds an
        #: attempt's wait for its response (connect plus read), or `first_token` cuts it.
        self.cut_first = False
        if timeouts is not None:
            read = max(timeouts.first_token, timeouts.idle)
            self.first_token = timeouts.first_token if timeouts.first_token < read else None
            self.idle = timeouts.idle if timeouts.idle < read else None
            self.cut_first = self.first_token is not None or route.retry.deadline < timeouts.connect + read
        self.strategy = route.strategy
        self.states = tuple(
            UpstreamState(
                upstream,
                upstream.name or upstream.url,
                CircuitBreaker(
                    route.breaker, route=name, upstream=upstream.name or upstream.url, on_change=on_breaker_change
                ),
                route,
                name,
                on_breaker_change,
            )
            for upstream in route.upstreams
        )
        by_name = {s.name: s for s in self.states}
        ordered = sorted(self.states, key=lambda s: s.upstream.priority)  # stable: ties keep config order
        same = route.retry.same_target
        self.default_plan: tuple[Target, ...] = tuple(Target(s, None, 0, None, same) for s in ordered)
        self.aliases: dict[str, tuple[Target, ...]] = {}
        for alias, chain in route.models.items():
            targets: list[Target] = []
            for rank, entry in enumerate(chain):
                tries = entry.retry.same_target if entry.retry is not None else same
                states = [by_name[entry.upstream]] if entry.upstream is not None else ordered
                targets.extend(
                    Target(s, entry.model, rank, s.slot(entry.model, pinned=True), tries, entry.context_window)
                    for s in states
                )
            self.aliases[alias] = tuple(targets)
        self.statuses = frozenset(route.retry.statuses)
        #: The codes that fail over, when some target declares a context window (else a 400 is
        #: relayed without reading it: there is nowhere larger to go).
        self.failover_codes = (
            route.retry.failover_codes
            if any(t.context_window is not None for chain in self.aliases.values() for t in chain)
            else ()
        )
        #: A per-request timeout when the route has its own; None: the client's default.
        self.timeout: httpx.Timeout | None = httpx_timeout(route.timeouts) if route.timeouts else None

    def set_clock(self, clock: Callable[[], float]) -> None:
        """Every breaker of this route, now and later, on `clock` (tests drive time this way)."""
        for state in self.states:
            state.clock = clock
            state.breaker.clock = clock
            for slot in state.slots.values():
                slot.breaker.clock = clock

    def plan(self, model: str | None) -> tuple[Target, ...]:
        """The targets for a call asking for `model`."""
        if model is not None and self.aliases:
            chain = self.aliases.get(model)
            if chain is not None:
                return chain
        return self.default_plan

    @staticmethod
    def slot_of(target: Target, model: str | None) -> Slot:
        """The slot an attempt at `target` uses, for a call asking for `model`."""
        return target.slot if target.slot is not None else target.state.slot(model)

    def pick(
        self,
        plan: tuple[Target, ...],
        model: str | None = None,
        tries: dict[Slot, int] | None = None,
        *,
        skip: Collection[Slot] = (),
        min_window: int | None = None,
    ) -> Target | None:
        """The next target, or None when none in the plan is available: every breaker open, or the
        rest skipped (`skip`) or without a declared context window above `min_window`."""
        if len(plan) == 1 and not skip and min_window is None:
            only = plan[0]
            return only if self.slot_of(only, model).available() else None
        found = False
        low_tries = low_rank = 0
        for target in plan:
            if not self._usable(target, model, skip, min_window):
                continue
            n = tries.get(self.slot_of(target, model), 0) if tries else 0
            if not found or n < low_tries or (n == low_tries and target.rank < low_rank):
                found, low_tries, low_rank = True, n, target.rank
        if not found:
            return None
        if self.strategy == "priority":
            for target in plan:
                if self._eligible(target, model, tries, skip, min_window, low_tries, low_rank):
                    return target
        elif self.strategy == "least_inflight":
            best: Target | None = None
            for target in plan:
                if self._eligible(target, model, tries, skip, min_window, low_tries, low_rank) and (
                    best is None or target.state.inflight < best.state.inflight
                ):
                    best = target
            return best
        else:  # weight
            total = 0.0
            first: Target | None = None
            for target in plan:
                if self._eligible(target, model, tries, skip, min_window, low_tries, low_rank):
                    total += target.state.upstream.weight
                    first = first or target
            if total <= 0.0:
                return first
            point = random.random() * total
            for target in plan:
                if self._eligible(target, model, tries, skip, min_window, low_tries, low_rank):
                    point -= target.state.upstream.weight
                    if point < 0.0:
                        return target
            return first
        return None  # not reached: the first loop found an eligible target

    def _eligible(
        self,
        target: Target,
        model: str | None,
        tries: dict[Slot, int] | None,
        skip: Collection[Slot],
        min_window: int | None,
        low_tries: int,
        low_rank: int,
    ) -> bool:
        return (
            target.rank == low_rank
            and (tries.get(self.slot_of(target, model), 0) if tries else 0) == low_tries
            and self._usable(target, model, skip, min_window)
        )

    def _usable(self, target: Target, model: str | None, skip: Collection[Slot], min_window: int | None) -> bool:
        slot = self.slot_of(target, model)
        if not slot.available() or (skip and slot in skip):
            return False
        return min_window is None or (target.context_window is not None and target.context_window > min_window)

    def snapshot(self) -> dict[str, Any]:
        return {
            "protocol": self.route.protocol,
            "strategy": self.strategy,
            "aliases": {
                alias: [
                    {
                        "upstream": t.state.name,
                        "model": t.model,
                        "rank": t.rank,
                        "same_target": t.same_target,
                        "context_window": t.context_window,
                    }
                    for t in chain
                ]
                for alias, chain in self.aliases.items()
            },
            "upstreams": [
                {
                    "name": s.name,
                    "url": s.upstream.url,
                    "priority": s.upstream.priority,
                    "weight": s.upstream.weight,
                    "inflight": s.inflight,
                    # The upstream-wide breaker: transport failures only.
                    "breaker": s.breaker.snapshot(),
                    # One breaker per (upstream, model): statuses, timeouts, stalled streams.
                    "models": {slot.model: slot.breaker.snapshot() for slot in list(s.slots.values())},
                }
                for s in self.states
            ],
        }


__all__ = ["Router", "Slot", "Target", "UpstreamState", "MAX_SLOTS"]
