"""Rate limits and budgets: requests and tokens per minute, tokens and money per day, calls in flight.

`Limiter` knows what a policy's `limits:` mean: which counters a call is checked against and adds
to, and what the agent is told when one is over. The counting is a `Counters` backend's
(`counters.py`): one batched, atomic `admit` when a call starts and one `add` when it ends, keyed by
(rule, agent) or (rule, session). The embedded backend keeps minute windows sliding (exact
timestamps, not fixed buckets) and daily counters (tokens, USD; reset at 00:00 UTC) saved in the
store's SQLite file, so a restart does not reset a budget. Money is the call's `cost_usd`, priced by
the usage stage (`interlock.prices`: the catalogue, with `prices:` over it).

Tokens are only known after a response, so a call is admitted when the counters are *below* the
limit before it; the call that crosses a limit completes, the next one is refused.

Shared counters (Redis) can be out of reach. Then each enforced limit follows its concern's
`state.on_failure` mode: `fail_closed` refuses the call (503 `state_unavailable`), `fail_open`
admits it with a `limits error` decision on its record and a log line: a gap shown, never a silent
pass. Usage that cannot be counted when a call ends is logged, counted (`uncounted`) and recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from interlock.config import StateOnFailure
from interlock.core.call import Call, Decision
from interlock.core.state import StateUnavailable
from interlock.policies.counters import (
    Add,
    Check,
    Counter,
    Counters,
    EmbeddedCounters,
    Over,
    Window,
)
from interlock.policies.engine import CompiledRule
from interlock.prices import Pricing

log = logging.getLogger("interlock.policies")


@dataclass(frozen=True, slots=True)
class Exceeded:
    rule: CompiledRule
    code: str  # "rate_limited", "budget_exceeded", "session_cap_reached", "unpriced_model" or "state_unavailable"
    message: str
    retry_after: int  # seconds

    @property
    def refusal(self) -> str:
        """What the agent is told (the proxy's 429 message; `policy whatif` says the same)."""
        if self.code == "unpriced_model":
            return f"refused by policy rule {self.rule.name!r}: {self.message} (limits.unpriced: deny)"
        if self.code == "state_unavailable":
            return f"refused by policy rule {self.rule.name!r}: {self.message}"
        if self.code == "budget_exceeded":
            return f"budget exceeded under policy rule {self.rule.name!r}: over {self.message}"
        if self.code == "session_cap_reached":
            return f"session cap reached under policy rule {self.rule.name!r}: {self.message}"
        return f"rate limited by policy rule {self.rule.name!r}: over {self.message}"


def counter_key(rule: CompiledRule, call: Call) -> str:
    limits = rule.rule.limits
    if limits is not None and limits.per == "session" and call.session:
        return f"session:{call.session}"
    return f"agent:{call.agent}"


@dataclass(slots=True)
class Plan:
    """What admitting a call means for these rules: the checks (each with its rule and what it
    limits, for the message), the adds, and a refusal that needs no counter (an unpriced model)."""

    rules: Sequence[CompiledRule]
    keys: list[tuple[str, str]]
    checks: list[Check] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)  # each check's rule (an index into `rules`)
    adds: list[Add] = field(default_factory=list)
    unpriced: dict[int, Exceeded] = field(default_factory=dict)


@dataclass(slots=True)
class Admission:
    """The limits' answer for a call: the monitor-mode rules that would have refused it (in rule
    order, before any refusal), the refusal, and the keys to `finish` with (admitted only)."""

    monitored: list[Exceeded]
    refused: Exceeded | None
    keys: list[tuple[str, str]]
    #: Limits not checked (the shared state out of reach, their mode `fail_open`): recorded as gaps.
    unchecked: list[Exceeded] = field(default_factory=list)


class Limiter:
    """The limits of a running interlock over a `Counters` backend (the embedded one by default)."""

    def __init__(
        self,
        counters: Counters | None = None,
        pricing: Pricing | None = None,
        on_failure: StateOnFailure | None = None,
    ) -> None:
        self.counters: Counters = counters if counters is not None else EmbeddedCounters()
        #: Says whether a call will have a price (the usage stage prices it: `call.cost_usd`).
        self.pricing = pricing if pricing is not None else Pricing()
        self.on_failure = on_failure if on_failure is not None else StateOnFailure()
        #: Calls whose usage could not be counted when they ended (the shared state out of reach).
        self.uncounted = 0

    async def admit(self, rules: Sequence[CompiledRule], call: Call, now: float) -> Admission:
        """Check the call against these rules' limits and, unless one refuses it, count it: one
        atomic round trip to the counters."""
        plan = self.plan(rules, call)
        enforced_unpriced = any(not rules[i].monitor for i in plan.unpriced)
        try:
            over = await self.counters.admit(plan.checks, () if enforced_unpriced else plan.adds, now)
        except StateUnavailable as exc:
            return self.unreachable(plan, str(exc))
        return self.judge(plan, over)

    async def finish(
        self, rules: Sequence[CompiledRule], keys: Sequence[tuple[str, str]], call: Call, now: float
    ) -> float:
        """The call is over: release its concurrency slots, count its tokens and cost. Returns the cost."""
        adds, cost = self.finish_adds(rules, keys, call)
        if adds:
            try:
                await self.counters.add(adds, now)
            except StateUnavailable as exc:
                self.uncounted += 1
                reason = f"usage not counted (tokens, cost, slot release): {exc}"
                log.error("call %s: %s", call.id, reason)
                call.decide(Decision("limits", "error", ", ".join(r.name for r in rules), reason))
        return cost

    def unreachable(self, plan: Plan, reason: str) -> Admission:
        """The verdict when the counters cannot be read: each enforced limit's failure mode decides."""
        unchecked: dict[int, Exceeded] = {}
        for check, index in zip(plan.checks, plan.labels, strict=True):
            if not check.enforce:
                continue  # a monitor-mode rule refuses nothing either way
            concern = _CONCERNS[check.counter.window]
            mode = getattr(self.on_failure, concern)
            rule = plan.rules[index]
            message = f"{reason} (state.on_failure.{concern}: {mode})"
            if mode == "fail_closed":
                return Admission([], Exceeded(rule, "state_unavailable", message, 1), [])
            unchecked.setdefault(index, Exceeded(rule, "state_unavailable", message, 0))
        for index, exceeded in plan.unpriced.items():
            if not plan.rules[index].monitor:
                return Admission([], exceeded, [])
        log.warning("limits not checked, calls allowed: %s", reason)
        return Admission([], None, plan.keys, list(unchecked.values()))

    async def snapshot(self, now: float) -> dict[str, Any]:
        """Current counters, for the admin API (`unavailable`: why the shared counters cannot be read;
        `uncounted`: calls whose usage the shared counters missed, since start)."""
        try:
            snapshot = await self.counters.snapshot(now)
        except StateUnavailable as exc:
            snapshot = {"inflight": {}, "daily": {}, "unavailable": str(exc)}
        return {**snapshot, "uncounted": self.uncounted}

    async def session_caps(
        self, rules: Sequence[CompiledRule], session: str, routes: Sequence[str], agents: Sequence[str], now: float
    ) -> list[dict[str, Any]]:
        """The run caps that apply to `session` (seen on these routes, for these agents) and how much
        of each it has used: `{rule, cap, limit, used, reached, mode}` (`max_duration`: seconds since
        the rule first counted a call of the session). One read of the counters; raises
        `StateUnavailable` when they cannot be read.

        A rule applies when its route and agent match the session's and its other match fields
        (`session` aside) and condition are met by a call; the calls are not at hand here, so a rule
        with such fields is shown only once it has counted something of this session."""
        key = f"session:{session}"
        chosen: list[tuple[CompiledRule, bool, list[tuple[str, float, Counter]]]] = []
        for rule in rules:
            limits = rule.rule.limits
            if limits is None or not limits.caps or limits.per != "session":
                continue
            if not any(_matches_where(rule, route, agent) for route in routes for agent in agents):
                continue
            certain = rule.condition is None and all(
                attr == "session" and globs(session) for attr, globs in rule.checks
            )
            if not certain and any(attr == "session" and not globs(session) for attr, globs in rule.checks):
                continue
            caps = [
                (setting, float(getattr(limits, setting)), Counter((rule.name, key), metric, "life"))
                for setting, metric in CAPS
                if getattr(limits, setting) is not None
            ]
            chosen.append((rule, certain, caps))
        values = iter(await self.counters.read([c for _, _, caps in chosen for _, _, c in caps], now))
        found: list[dict[str, Any]] = []
        for rule, certain, caps in chosen:
            used = [next(values) for _ in caps]
            if not certain and not any(used):
                continue
            mode = "monitor" if rule.monitor else "enforce"
            for (setting, limit, _), value in zip(caps, used, strict=True):
                value = (
                    round(value, 6)
                    if setting == "max_usd"
                    else round(value, 1)
                    if setting == "max_duration"
                    else int(value)
                )
                found.append(
                    {
                        "rule": rule.name,
                        "cap": setting,
                        "limit": limit,
                        "used": value,
                        "reached": value >= limit,
                        "mode": mode,
                    }
                )
        return found

    async def aclose(self) -> None:
        """Save what is pending and release the counters' resources."""
        await self.counters.aclose()

    # -- the plan and the verdict (pure: `policy whatif` drives them with its own counters) ----------

    def plan(self, rules: Sequence[CompiledRule], call: Call) -> Plan:
        plan = Plan(rules, [(rule.name, counter_key(rule, call)) for rule in rules])
        for index, (rule, key) in enumerate(zip(rules, plan.keys, strict=True)):
            limits = rule.rule.limits
            assert limits is not None
            if limits.counts_money and limits.unpriced == "deny":
                # A money budget cannot count a call it cannot price: refused, not counted as $0 (issue 16).
                unpriced = self.pricing.unpriced_reason(call)
                if unpriced is not None:
                    message = f"{unpriced}, and the money budget of rule {rule.name!r} needs a price"
                    plan.unpriced[index] = Exceeded(rule, "unpriced_model", message, 0)
            enforce = not rule.monitor
            for value, metric, window in (
                (limits.concurrent, "inflight", "none"),
                (limits.requests_per_minute, "requests", "minute"),
                (limits.tokens_per_minute, "tokens", "minute"),
                (limits.tokens_per_day, "tokens", "day"),
                (limits.budget_usd_per_day, "usd", "day"),
            ):
                if value is not None:
                    plan.checks.append(Check(Counter(key, metric, cast(Window, window)), value, enforce))
                    plan.labels.append(index)
            if limits.caps and call.session is not None:
                # Run caps count the session's whole life; a call without a session has none to cap.
                for setting, metric in CAPS:
                    value = getattr(limits, setting)
                    if value is not None:
                        plan.checks.append(Check(Counter(key, metric, "life"), value, enforce))
                        plan.labels.append(index)
                if limits.max_calls is not None:
                    plan.adds.append(Add(Counter(key, "calls", "life"), 1))
                if limits.max_duration is not None:
                    plan.adds.append(Add(Counter(key, "age", "life"), 0))  # starts the session's clock
            if limits.requests_per_minute is not None:
                plan.adds.append(Add(Counter(key, "requests", "minute"), 1))
            if limits.concurrent is not None:
                plan.adds.append(Add(Counter(key, "inflight", "none"), 1))
        return plan

    def judge(self, plan: Plan, over: Sequence[Over]) -> Admission:
        first: dict[int, Exceeded] = dict(plan.unpriced)
        for item in sorted(over, key=lambda o: o.position):
            index = plan.labels[item.position]
            if index in first:
                continue
            check = plan.checks[item.position]
            code, message = _over_message(check, plan.keys[index][1].replace(":", " ", 1), item.value)
            first[index] = Exceeded(plan.rules[index], code, message, item.retry_after)
        monitored: list[Exceeded] = []
        for index, rule in enumerate(plan.rules):
            exceeded = first.get(index)
            if exceeded is None:
                continue
            if not rule.monitor:
                return Admission(monitored, exceeded, [])
            monitored.append(exceeded)
        return Admission(monitored, None, plan.keys)

    def finish_adds(
        self, rules: Sequence[CompiledRule], keys: Sequence[tuple[str, str]], call: Call
    ) -> tuple[list[Add], float]:
        tokens = (call.input_tokens or 0) + (call.output_tokens or 0)
        cost = call.cost_usd or 0.0  # priced by the usage stage; unpriced counts $0 (`limits.unpriced`)
        adds: list[Add] = []
        for rule, key in zip(rules, keys, strict=True):
            limits = rule.rule.limits
            assert limits is not None
            if limits.concurrent is not None:
                adds.append(Add(Counter(key, "inflight", "none"), -1))
            if limits.tokens_per_minute is not None and tokens:
                adds.append(Add(Counter(key, "tokens", "minute"), tokens))
            if (limits.tokens_per_day is not None or limits.budget_usd_per_day is not None) and (tokens or cost):
                adds.append(Add(Counter(key, "tokens", "day"), tokens))
                adds.append(Add(Counter(key, "usd", "day"), cost))
            if limits.caps and call.session is not None:
                if limits.max_tokens is not None and tokens:
                    adds.append(Add(Counter(key, "tokens", "life"), tokens))
                if limits.max_usd is not None and cost:
                    adds.append(Add(Counter(key, "usd", "life"), cost))
        return adds, cost


#: Each run cap's setting and the `life` counter it limits.
CAPS = (("max_calls", "calls"), ("max_tokens", "tokens"), ("max_usd", "usd"), ("max_duration", "age"))


def _matches_where(rule: CompiledRule, route: str, agent: str) -> bool:
    """Whether the rule's route and agent patterns match (as `Engine.candidates` chooses rules)."""
    return (rule.route is None or rule.route(route)) and (rule.agent is None or rule.agent(agent.casefold()))


#: The failure-mode setting (`state.on_failure`) that applies to a counter, by its window. A run cap
#: (`life`) is a session's budget: like a day's, a call let through unchecked cannot be taken back.
_CONCERNS = {"minute": "rate", "none": "concurrency", "day": "budget", "life": "budget"}


def _over_message(check: Check, who: str, value: float) -> tuple[str, str]:
    """The refusal's code and what it is over, e.g. "3 requests per minute for session s1"."""
    counter, limit = check.counter, check.limit
    if counter.window == "life":
        if counter.metric == "age":
            return "session_cap_reached", f"{who} has run {value:.0f}s, its cap is {limit:g}s"
        if counter.metric == "usd":
            return "session_cap_reached", f"{who} has spent ${value:.4f}, its cap is ${limit:g}"
        return "session_cap_reached", f"{who} has used {value:g} {counter.metric}, its cap is {limit:g}"
    if counter.window == "none":
        return "rate_limited", f"{limit} concurrent calls for {who}"
    if counter.window == "minute":
        return "rate_limited", f"{limit} {counter.metric} per minute for {who}"
    if counter.metric == "tokens":
        return "budget_exceeded", f"{limit} tokens per day for {who}"
    return "budget_exceeded", f"a budget of ${limit:g} per day for {who} (spent ${value:.4f})"


__all__ = ["Admission", "Exceeded", "Limiter", "Plan", "counter_key"]
