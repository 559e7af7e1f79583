"""The policy stage: decides every call before it is sent, and watches the response for denied tools.

request:   evaluate the rules → deny (403 `policy_denied`), limit (429 `rate_limited` /
           `budget_exceeded` with Retry-After), or allow, possibly modified (offered tools stripped,
           parameters clamped); sets `call.guardrails` for the guardrails stage.
chunk:     in a stream, a tool call the policy refuses is cut at the event that names it, before any
           of its arguments reach the agent, and the stream ends with the protocol's error event.
response:  a non-streamed response that calls a refused tool is replaced by a 403.
seal:      concurrency slots are released; tokens and cost are counted against limits.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from interlock.config import Settings
from interlock.core.call import Call, Decision
from interlock.core.views import Event
from interlock.policies.counters_open import open_counters
from interlock.policies.engine import CompiledRule, Evaluation, tool_denial_message
from interlock.policies.limits import Limiter
from interlock.policies.loader import PolicyRuntime, check_policies
from interlock.policies.model import Limits
from interlock.policies.subject import Subject
from interlock.prices import Pricing
from interlock.protocols import ADAPTERS, Adapter

log = logging.getLogger("interlock.policies")


class Escalation(Protocol):
    """Where a policy sends what a human must hear about (`proxy.escalation.Escalator`, the webhook,
    is one): named here so policies/ does not import the proxy, which sits above it."""

    @property
    def enabled(self) -> bool:
        """Somewhere to send events to (a webhook is configured)."""
        ...

    def emit(self, event: str, **fields: Any) -> None: ...


def apply_changes(call: Call, evaluation: Evaluation, adapter: Adapter) -> list[str]:
    """Strip offered tools and clamp parameters in `call.request_json`; record a decision per rule.
    Returns what changed, as short phrases (empty: nothing)."""
    changes: list[str] = []
    data = call.request_json
    view = call.view
    if evaluation.strip and isinstance(data, dict):
        removed = adapter.strip_tools(data, set(evaluation.strip))
        if removed:
            call.request_changed = True
            if view is not None:
                view.tools = [t for t in view.tools if t not in removed]
            by_rule: dict[str, list[str]] = {}
            for name in removed:
                by_rule.setdefault(evaluation.strip[name], []).append(name)
            for rule, names in by_rule.items():
                reason = f"stripped offered tools: {', '.join(names)}"
                call.decide(Decision("policy", "modify", rule, reason, {"stripped": names}))
                changes.append(reason)
    if evaluation.setters:
        done: dict[str, list[str]] = {}
        if isinstance(data, dict):
            operation = view.operation if view is not None else "http"
            for key, (value, rule) in evaluation.params.items():
                for changed_key, old, new in adapter.set_param(data, key, value, operation):
                    call.request_changed = True
                    if view is not None and changed_key in view.params:
                        view.params[changed_key] = new
                    text = f"{changed_key}: {old} → {new}" if old is not None else f"{changed_key}: set to {new}"
                    done.setdefault(rule, []).append(text)
        for rule in evaluation.setters:
            if rule in done:
                reason = "set " + "; ".join(done[rule])
                call.decide(Decision("policy", "modify", rule, reason))
                changes.append(reason)
            else:
                call.decide(Decision("policy", "allow", rule, "parameters already within bounds"))
    return changes


def route_protocols(settings: Settings) -> dict[str, str]:
    """Each route's protocol, for the loader's route checks (the proxy and `policy check`, `test`
    and `whatif` all use this one map)."""
    return {name: route.protocol for name, route in settings.routes.items()}


def route_hosts(settings: Settings) -> dict[str, str | None]:
    """Each route's upstream host, for `hosts` allow- and deny-lists (the proxy, `policy test` and
    `whatif` all use this one map)."""
    return {name: urlsplit(route.upstreams[0].url).hostname for name, route in settings.routes.items()}


@dataclass(slots=True)
class _Held:
    """Per-call state between the request and the end of the call."""

    evaluation: Evaluation
    limited: list[CompiledRule] = field(default_factory=list)
    keys: list[tuple[str, str]] = field(default_factory=list)
    blocked: bool = False
    seen: set[str] = field(default_factory=set)  # tool names already judged in this response


class PolicyStage:
    name = "policy"

    def __init__(
        self,
        runtime: PolicyRuntime,
        settings: Settings,
        limiter: Limiter | None = None,
        escalator: Escalation | None = None,
    ) -> None:
        self.runtime = runtime
        self.limiter = limiter or Limiter(pricing=Pricing.for_settings(settings))
        self.hosts = route_hosts(settings)
        self.escalator = escalator
        self._held: dict[str, _Held] = {}
        #: (rule, session) whose run cap was reported to the webhook (once each; bounded, oldest dropped).
        self._capped: OrderedDict[tuple[str, str], None] = OrderedDict()

    async def request(self, call: Call) -> None:
        engine = self.runtime.engine
        if not engine.rules:
            return
        adapter = ADAPTERS[call.protocol]
        evaluation = engine.evaluate(Subject.from_call(call, self.hosts.get(call.route)))
        fired = self.runtime.fired
        for name in evaluation.fired:
            fired[name] += 1
        for decision in evaluation.decisions:
            call.decide(decision)
        summary: dict[str, Any] = {"decision": "allow", "rules": evaluation.fired}
        call.meta["policy"] = summary
        if evaluation.denied_by is not None:
            message = evaluation.message
            summary.update(decision="deny", rule=evaluation.denied_by.name, reason=evaluation.reason)
            reply = adapter.error_reply(403, "policy_denied", message, retryable=False)
            call.answer(reply, "denied", "policy_denied", message)
            return
        held = _Held(evaluation)
        if evaluation.limited:
            if any(r.rule.limits is not None and r.rule.limits.counts_money for r in evaluation.limited):
                await self.limiter.pricing.ready()  # "is this model priced?" reads the catalogue
            admission = await self.limiter.admit(evaluation.limited, call, time.time())
            for would in admission.monitored:
                detail = {"retry_after": would.retry_after, "code": would.code}
                call.decide(Decision("limits", "monitor", would.rule.name, f"would refuse: {would.refusal}", detail))
            for gap in admission.unchecked:  # the shared state out of reach, fail_open: shown, not silent
                call.decide(Decision("limits", "error", gap.rule.name, f"not checked, allowed: {gap.message}"))
            exceeded = admission.refused
            if exceeded is not None:
                rule, message = exceeded.rule, exceeded.refusal
                detail = {"retry_after": exceeded.retry_after, "code": exceeded.code}
                call.decide(Decision("limits", "deny", rule.name, message, detail))
                summary.update(decision="deny", rule=rule.name, reason=message)
                status = _REFUSAL_STATUS.get(exceeded.code, 429)
                retryable = exceeded.code in ("rate_limited", "state_unavailable")
                reply = adapter.error_reply(status, exceeded.code, message, retryable=retryable)
                if exceeded.retry_after:
                    reply.headers.append(("retry-after", str(exceeded.retry_after)))
                call.answer(reply, "denied", exceeded.code, message)
                if exceeded.code == "session_cap_reached":
                    self._report_cap(call, rule.name, message)
                return
            held.limited = evaluation.limited
            held.keys = admission.keys
            for rule in evaluation.limited:
                limits = rule.rule.limits
                assert limits is not None
                if _counts_usage(limits):
                    call.readers.append(f"limit {rule.name!r} (token usage)")
                unpriced = self.limiter.pricing.unpriced_reason(call) if limits.counts_money else None
                if unpriced is not None:
                    # unpriced: deny was refused above; warn and zero count the call as $0, visibly.
                    action = "monitor" if limits.unpriced == "warn" else "allow"
                    reason = f"{unpriced}: counted as $0 (unpriced: {limits.unpriced})"
                    call.decide(Decision("limits", action, rule.name, reason))
                    if limits.unpriced == "warn":
                        log.warning("call %s: %s under rule %r", call.id, reason, rule.name)
        if apply_changes(call, evaluation, adapter):
            summary["decision"] = "modify"
        if evaluation.loops:
            call.loop_rules = evaluation.loops
        if evaluation.guardrails is not None:
            current = call.guardrails
            call.guardrails = evaluation.guardrails if current is None else current.merge(evaluation.guardrails)
        matched = evaluation.matched
        if not evaluation.fired:
            call.decide(Decision("policy", "allow", None, "no rule applies"))
        elif len(matched) == 1:
            call.decide(Decision("policy", "allow", matched[0], "applies; nothing to change"))
        elif matched:
            reason = "these rules apply; nothing to change: " + ", ".join(matched)
            call.decide(Decision("policy", "allow", None, reason, {"rules": list(matched)}))
        for rule in evaluation.tool_rules:
            call.readers.append(f"policy rule {rule.name!r} (tool calls)")
        if held.keys or evaluation.tool_rules:
            self._held[call.id] = held

    def _report_cap(self, call: Call, rule: str, message: str) -> None:
        """A session reached a run cap: logged and sent to the escalation webhook, once per rule and session."""
        key = (rule, call.session or "")
        if key in self._capped:
            return
        self._capped[key] = None
        if len(self._capped) > 10_000:
            self._capped.popitem(last=False)
        log.warning("call %s: %s", call.id, message)
        if self.escalator is not None:
            self.escalator.emit(
                "session_cap_reached",
                session=call.session,
                agent=call.agent,
                rule=rule,
                reason=message,
                call_id=call.id,
            )

    async def chunk(self, call: Call, events: list[Event], last: bool) -> list[Event]:
        held = self._held.get(call.id)
        if held is None or not held.evaluation.tool_rules:
            return events  # no tool rule applies to this call: nothing here must read its stream
        if held.blocked:
            return []
        adapter = ADAPTERS[call.protocol]
        # Whole events (the proxy splits them): an event naming a refused tool is never half-sent.
        for i, event in enumerate(events):
            for name in adapter.stream_tool_names(event):
                if self._refuse_tool(call, held, name):
                    held.blocked = True
                    error = adapter.stream_error_event("policy_denied", call.error or "tool call denied")
                    return [*events[:i], Event(error, None, "")]
        return events

    async def response(self, call: Call) -> None:
        held = self._held.get(call.id)
        if held is None or not held.evaluation.tool_rules or call.stream or (call.status or 0) >= 400:
            return
        adapter = ADAPTERS[call.protocol]
        for tool_call in adapter.response_view(call).tool_calls:
            if self._refuse_tool(call, held, tool_call.name):
                reply = adapter.error_reply(403, "policy_denied", call.error or "tool call denied", retryable=False)
                call.answer(reply, "blocked", "policy_denied", call.error or "tool call denied")
                return

    def _refuse_tool(self, call: Call, held: _Held, name: str) -> bool:
        if name in held.seen:  # a stream names a tool in several events; judge it once
            return False
        held.seen.add(name)
        for rule in held.evaluation.tool_rules:
            reason = rule.tool_refusal(name)
            if reason is None:
                continue
            if rule.monitor:
                call.decide(
                    Decision("policy", "monitor", rule.name, f"would block the response: model called {reason}")
                )
                continue
            message = tool_denial_message(rule, reason)
            call.decide(Decision("policy", "deny", rule.name, f"response calls {reason}", {"tool": name}))
            call.outcome, call.error_code, call.error = "blocked", "policy_denied", message
            summary = call.meta.setdefault("policy", {})
            summary.update(decision="deny", rule=rule.name, reason=f"response calls {reason}", response="blocked")
            return True
        return False

    async def seal(self, call: Call) -> None:
        held = self._held.pop(call.id, None)
        if held is not None and held.keys:
            if (call.status or 0) < 400 and call.input_tokens is None and call.output_tokens is None:
                # A token limit or budget that could not count this call says so (never silent).
                for rule in held.limited:
                    limits = rule.rule.limits
                    if limits is not None and _counts_usage(limits):
                        reason = "no token usage in the response: not counted"
                        call.decide(Decision("limits", "skip", rule.name, reason))
            cost = await self.limiter.finish(held.limited, held.keys, call, time.time())
            if cost:
                call.meta["cost_usd"] = round(cost, 8)


#: A limit's refusal: 429 when over, 403 for a model a budget cannot price, 503 when the shared
#: counters are out of reach and the limit fails closed (state.on_failure).
_REFUSAL_STATUS = {"session_cap_reached": 403, "unpriced_model": 403, "state_unavailable": 503}


def _counts_usage(limits: Limits) -> bool:
    """The limit counts tokens or money, read from the response's usage."""
    return (
        limits.tokens_per_minute is not None
        or limits.tokens_per_day is not None
        or limits.budget_usd_per_day is not None
        or limits.max_tokens is not None
        or limits.max_usd is not None
    )


def policy_paths(settings: Settings) -> list[str]:
    """The configured policy paths; relative ones are relative to the configuration file."""
    base = Path(settings.source).parent if Path(settings.source).is_file() else Path.cwd()
    return [str(p if Path(p).is_absolute() else base / p) for p in settings.policies]


def unpriced_warnings(settings: Settings) -> list[str]:
    """`config check`'s warnings about money budgets over models `prices:` does not list (the
    policy files' other problems are `policy check`'s)."""

    paths = [p for p in policy_paths(settings) if Path(p).exists()]
    loaded = check_policies(paths, route_protocols(settings), settings.prices)
    return [str(p) for p in loaded.problems if p.kind == "unpriced"]


def open_policy(
    settings: Settings, *, interval: float = 1.0, pricing: Pricing | None = None
) -> tuple[PolicyRuntime | None, Limiter | None]:
    """The services of the policy stage: the live policy (loaded now; raises PolicyError; hot reload
    starts when an event loop is running) and the limits' counters; (None, None) without policies.
    Relative policy paths are relative to the configuration file."""
    if not settings.policies:
        return None, None
    paths = policy_paths(settings)
    runtime = PolicyRuntime(paths, route_protocols(settings), settings.prices, interval=interval)
    runtime.load()
    try:
        runtime.start()
    except RuntimeError:  # no running loop (a Runtime built outside asyncio): no hot reload
        pass
    counters = open_counters(settings.store.path, settings.state, processes=settings.workers)
    return runtime, Limiter(counters, pricing or Pricing.for_settings(settings), settings.state.on_failure)


def policy_stages_for(settings: Settings, *, interval: float = 1.0) -> tuple[PolicyRuntime | None, list[object]]:
    """The live policy and its stage alone (`open_policy`; the proxy's full list is
    `proxy.pipeline.built_in_stages`)."""
    runtime, limiter = open_policy(settings, interval=interval)
    if runtime is None:
        return None, []
    return runtime, [PolicyStage(runtime, settings, limiter)]


__all__ = [
    "PolicyStage",
    "apply_changes",
    "open_policy",
    "policy_paths",
    "policy_stages_for",
    "route_hosts",
    "route_protocols",
    "unpriced_warnings",
]
