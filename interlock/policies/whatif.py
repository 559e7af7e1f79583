"""What-if: evaluate a candidate policy over recorded calls and list the calls whose decision changes.

Each recorded call is re-parsed from the body the agent sent (not what went upstream) and evaluated
with the candidate; the recorded decision is what the policy stage wrote in `meta.policy` at the
time (calls recorded without a policy count as `allow`). Tool calls in the recorded responses are
checked too.

The candidate's limits are simulated by replaying the calls through a fresh `Limiter` in the order
they started, on their recorded clock: a call is refused when the calls before it would have filled
a window (requests: every admitted call; tokens and cost: admitted calls that had ended, with their
recorded usage; concurrency: admitted calls still running at its start, by recorded duration).
A call the candidate refuses does not count. Daily counters start at zero with the first call
evaluated (what was spent before `--since` is unknown).
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from interlock.core.call import Call
from interlock.core.views import TokenUsage
from interlock.policies.cases import decide
from interlock.policies.counters import EmbeddedCounters
from interlock.policies.engine import CompiledRule, Engine
from interlock.policies.limits import Limiter
from interlock.prices import Pricing
from interlock.protocols import ADAPTERS, BadRequest


@dataclass(slots=True)
class Change:
    id: str
    started_at: float
    agent: str
    session: str | None
    route: str
    model: str | None
    before: str
    after: str
    rule: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "change",
            "id": self.id,
            "started_at": self.started_at,
            "agent": self.agent,
            "session": self.session,
            "route": self.route,
            "model": self.model,
            "before": self.before,
            "after": self.after,
            "rule": self.rule,
            "reason": self.reason,
        }


@dataclass(slots=True)
class WhatIf:
    evaluated: int = 0
    skipped: int = 0  # calls that cannot be re-evaluated (malformed requests)
    changes: list[Change] = field(default_factory=list)
    #: How many calls each rule of the candidate fired on.
    fired: Counter[str] = field(default_factory=Counter)
    #: How many changed calls each rule decided (the denying rule, or a rule that now modifies).
    changed_by_rule: Counter[str] = field(default_factory=Counter)
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "type": "summary",
            "evaluated": self.evaluated,
            "skipped": self.skipped,
            "changed": len(self.changes),
            "transitions": {f"{a}->{b}": n for (a, b), n in self.transitions.items()},
            "rules": {
                name: {"fired": n, "changed": self.changed_by_rule.get(name, 0)} for name, n in self.fired.items()
            },
            "seconds": round(self.seconds, 3),
        }


def recorded_decision(call: Call) -> str:
    """The decision the live policy made for a recorded call."""
    policy = call.meta.get("policy")
    if isinstance(policy, dict) and policy.get("decision") in ("allow", "deny", "modify"):
        return str(policy["decision"])
    if call.error_code == "policy_denied":
        return "deny"
    return "allow"


class LimitReplay:
    """The candidate's limits over recorded calls, fed in the order they started."""

    def __init__(self, prices: Mapping[str, Mapping[str, float]] | None = None) -> None:
        # A simulation on its own clock: the embedded counters, driven synchronously.
        self.counters = EmbeddedCounters()
        self.limiter = Limiter(self.counters, Pricing(prices))
        self._running: list[tuple[float, int, Sequence[CompiledRule], list[tuple[str, str]], Call]] = []
        self._order = itertools.count()

    def reprice(self, call: Call) -> None:
        """Price a recorded call with today's prices (the candidate config's `prices:` over the
        catalogue), from its recorded usage: what-if asks what these prices would have done."""
        if call.input_tokens is None and call.output_tokens is None:
            return
        detail = call.meta.get("usage")
        if isinstance(detail, dict):
            usage = TokenUsage(**{k: int(v) for k, v in detail.items() if k in TokenUsage.__slots__})
        else:
            usage = TokenUsage(input=call.input_tokens or 0, output=call.output_tokens or 0)
        cost = self.limiter.pricing.price_call(call, usage)
        if cost is not None:
            call.cost_usd, call.cost_source = cost.usd, cost.source

    def refusal(self, rules: Sequence[CompiledRule], call: Call) -> tuple[str, str] | None:
        """(rule, message) when the limits refuse this call; otherwise it is admitted and counted."""
        now = call.started_at
        running = self._running
        while running and running[0][0] <= now:  # calls that ended before this one started
            end, _, ended_rules, keys, ended = heapq.heappop(running)
            self.reprice(ended)
            self.counters.add_now(self.limiter.finish_adds(ended_rules, keys, ended)[0], end)
        plan = self.limiter.plan(rules, call)
        refused = self.limiter.judge(plan, self.counters.admit_now(plan.checks, (), now)).refused
        if refused is not None:
            return refused.rule.name, refused.refusal
        self.counters.add_now(plan.adds, now)
        keys = plan.keys
        end = now + (call.duration_ms or 0.0) / 1000.0
        heapq.heappush(running, (end, next(self._order), rules, keys, call))
        return None


def whatif(
    engine: Engine,
    calls: Iterable[Call],
    hosts: dict[str, str | None] | None = None,
    *,
    prices: Mapping[str, Mapping[str, float]] | None = None,
) -> WhatIf:
    """Evaluate `engine` over `calls` (as `Store.iter_calls` yields them: oldest first)."""
    started = time.perf_counter()
    report = WhatIf()
    hosts = hosts or {}
    limits = LimitReplay(prices) if engine.has_limits else None
    for call in calls:
        if call.outcome == "bad_request" or call.protocol not in ADAPTERS:
            report.skipped += 1
            continue
        before = recorded_decision(call)
        adapter = ADAPTERS[call.protocol]
        call.request_json, call.request_changed, call.decisions = None, False, []
        try:
            call.view = adapter.parse(call)
        except BadRequest:
            report.skipped += 1
            continue
        if "deployment" in call.meta:  # the model a deployment serves, as the proxy judged it (`deployments`)
            call.view.model = call.model
        outcome = decide(engine, call, hosts.get(call.route), tuple(_response_tools(call)), keep_params=False)
        if limits is not None and outcome.limits and outcome.decision != "deny":
            refused = limits.refusal([engine.by_name[name] for name in outcome.limits], call)
            if refused is not None:
                outcome.decision, outcome.rule = "deny", refused[0]
                outcome.message = refused[1]
        report.evaluated += 1
        report.fired.update(outcome.fired)
        if outcome.decision == before:
            continue
        rule = outcome.rule
        if rule is None and outcome.decision == "modify":
            modifying = [d.rule for d in call.decisions if d.action == "modify" and d.rule]
            rule = modifying[-1] if modifying else None
        reason = outcome.message or ("; ".join(d.reason for d in call.decisions[-3:] if d.action == "modify"))
        if rule is None and outcome.decision == "allow":
            reason = "no rule of the candidate denies or changes it"
        report.changes.append(
            Change(
                call.id,
                call.started_at,
                call.agent,
                call.session,
                call.route,
                call.model,
                before,
                outcome.decision,
                rule,
                reason,
            )
        )
        report.transitions[(before, outcome.decision)] += 1
        if rule is not None:
            report.changed_by_rule[rule] += 1
    report.seconds = time.perf_counter() - started
    return report


def _response_tools(call: Call) -> list[str]:
    """Names of the tools the model called in the recorded response."""
    if call.status is None or call.status >= 400 or call.error_code == "policy_denied":
        return []
    names = [t.name for t in ADAPTERS[call.protocol].response_view(call).tool_calls]
    return list(dict.fromkeys(names)) if call.stream else names


__all__ = ["Change", "LimitReplay", "WhatIf", "recorded_decision", "whatif"]
