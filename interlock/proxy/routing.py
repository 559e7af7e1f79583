"""Which upstream (and which model) an attempt goes to.

A route's *plan* for a call is an ordered list of targets, each an (upstream, model) pair with a
rank in the fallback chain:

- no alias: every upstream of the route, model as requested, all rank 0 (sorted by `priority`,
  lower first, then the order in the config);
- a model alias (`models: {smart: [{upstream: a, model: gpt-4o}, {model: gpt-4o-mini}]}`): the
  chain's entries in order, rank = position; an entry without `upstream` stands for every upstream.

Each attempt takes the available target (breaker not open) that this call has tried the fewest
times, then the lowest rank; among equals the route's `strategy` decides: `priority` (first in
order), `weight` (weighted random) or `least_inflight` (fewest calls in flight). So with upstreams
A and B a call goes A, B, A, B...; one upstream alone is simply retried.

The first pick allocates nothing (no list, no dict): most calls succeed first time.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from interlock.config import Route, Upstream
from interlock.proxy.breaker import CircuitBreaker
from interlock.proxy.upstream import httpx_timeout


@dataclass(slots=True, eq=False)
class UpstreamState:
    """One upstream of one route at run time: its breaker and the calls in flight to it."""

    upstream: Upstream
    name: str
    breaker: CircuitBreaker
    inflight: int = 0


@dataclass(slots=True, frozen=True, eq=False)
class Target:
    """Where one attempt goes: an upstream, the model to ask it for (None: as requested), and the
    position in the fallback chain."""

    state: UpstreamState
    model: str | None
    rank: int


class Router:
    """The run-time side of one route: upstream states, plans, and the choice of the next target."""

    def __init__(
        self,
        name: str,
        route: Route,
        on_breaker_change: Callable[[CircuitBreaker, str], None] | None = None,
        *,
        first_byte: float | None = None,
    ) -> None:
        self.name = name
        self.route = route
        #: The retry deadline, when it is shorter than what bounds an attempt's wait for its response
        #: (`first_byte`: the connect and first-byte timeouts together): the first attempt is then cut
        #: at it too (later attempts always are). None: nothing to cut, and no timer on the fast path.
        self.first_attempt_limit = (
            route.retry.deadline if first_byte is not None and route.retry.deadline < first_byte else None
        )
        self.strategy = route.strategy
        self.states = tuple(
            UpstreamState(
                upstream,
                upstream.name or upstream.url,
                CircuitBreaker(
                    route.breaker, route=name, upstream=upstream.name or upstream.url, on_change=on_breaker_change
                ),
            )
            for upstream in route.upstreams
        )
        by_name = {s.name: s for s in self.states}
        ordered = sorted(self.states, key=lambda s: s.upstream.priority)  # stable: ties keep config order
        self.default_plan: tuple[Target, ...] = tuple(Target(s, None, 0) for s in ordered)
        self.aliases: dict[str, tuple[Target, ...]] = {}
        for alias, chain in route.models.items():
            targets: list[Target] = []
            for rank, entry in enumerate(chain):
                if entry.upstream is not None:
                    targets.append(Target(by_name[entry.upstream], entry.model, rank))
                else:
                    targets.extend(Target(s, entry.model, rank) for s in ordered)
            self.aliases[alias] = tuple(targets)
        self.statuses = frozenset(route.retry.statuses)
        #: A per-request timeout when the route has its own; None: the client's default.
        self.timeout: httpx.Timeout | None = httpx_timeout(route.timeouts) if route.timeouts else None

    def plan(self, model: str | None) -> tuple[Target, ...]:
        """The targets for a call asking for `model`."""
        if model is not None and self.aliases:
            chain = self.aliases.get(model)
            if chain is not None:
                return chain
        return self.default_plan

    def pick(self, plan: tuple[Target, ...], tries: dict[Target, int] | None = None) -> Target | None:
        """The next target, or None when every upstream in the plan has its breaker open."""
        if len(plan) == 1:
            only = plan[0]
            return only if only.state.breaker.available() else None
        found = False
        low_tries = low_rank = 0
        for target in plan:
            if not target.state.breaker.available():
                continue
            n = tries.get(target, 0) if tries else 0
            if not found or n < low_tries or (n == low_tries and target.rank < low_rank):
                found, low_tries, low_rank = True, n, target.rank
        if not found:
            return None
        if self.strategy == "priority":
            for target in plan:
                if self._eligible(target, tries, low_tries, low_rank):
                    return target
        elif self.strategy == "least_inflight":
            best: Target | None = None
            for target in plan:
                if self._eligible(target, tries, low_tries, low_rank) and (
                    best is None or target.state.inflight < best.state.inflight
                ):
                    best = target
            return best
        else:  # weight
            total = 0.0
            first: Target | None = None
            for target in plan:
                if self._eligible(target, tries, low_tries, low_rank):
                    total += target.state.upstream.weight
                    first = first or target
            if total <= 0.0:
                return first
            point = random.random() * total
            for target in plan:
                if self._eligible(target, tries, low_tries, low_rank):
                    point -= target.state.upstream.weight
                    if point < 0.0:
                        return target
            return first
        return None  # not reached: the first loop found an eligible target

    @staticmethod
    def _eligible(target: Target, tries: dict[Target, int] | None, low_tries: int, low_rank: int) -> bool:
        return (
            target.rank == low_rank
            and (tries.get(target, 0) if tries else 0) == low_tries
            and target.state.breaker.available()
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "protocol": self.route.protocol,
            "strategy": self.strategy,
            "aliases": {alias: [f"{t.state.name}:{t.model}" for t in chain] for alias, chain in self.aliases.items()},
            "upstreams": [
                {
                    "name": s.name,
                    "url": s.upstream.url,
                    "priority": s.upstream.priority,
                    "weight": s.upstream.weight,
                    "inflight": s.inflight,
                    "breaker": s.breaker.snapshot(),
                }
                for s in self.states
            ],
        }


__all__ = ["Router", "Target", "UpstreamState"]
