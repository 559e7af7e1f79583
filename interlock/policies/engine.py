"""The policy engine: which rules apply to a call, and what they decide together.

Semantics (docs/policies.md says the same for users):
- A rule applies when every field of its `match` matches (globs; lists are OR) and its `when`
  condition is true. Rules are evaluated in load order (files sorted by path, rules in file order).
- Deny wins: if any enforcing rule denies, the call is denied (the first such rule's name and
  message are shown); nothing else applies, and later rules are not evaluated. Allow-lists intersect: a call must pass the allow-list
  of every rule that applies (a call without that attribute, e.g. no model, is not constrained).
- A call that no rule denies is allowed; with stripped tools or changed parameters it is `modify`.
- `mode: monitor` rules are evaluated and recorded (action `monitor`) but never change the call.
- A `when` that fails at run time records an `error` decision; the rule's `on_error` decides:
  `deny` (default) denies the call through that rule, `allow` skips the rule.

Rules are indexed by (route, agent): the candidate list for a pair is computed once and cached, so
a call only looks at rules that can apply to its route and agent.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from interlock.core.actions import Action, GuardrailActions
from interlock.core.call import Decision
from interlock.policies.cel import Condition, context_for
from interlock.policies.model import Effect, Rule
from interlock.policies.subject import Subject

_MAGIC = re.compile(r"[*?\[]")


class Globs:
    """A list of globs, matched case-sensitively; exact names are a set lookup."""

    __slots__ = ("patterns", "exact", "regex", "_memo")

    def __init__(self, patterns: Iterable[str], *, fold: str | None = None) -> None:
        items = tuple(patterns)
        if fold == "upper":
            items = tuple(p.upper() for p in items)
        elif fold == "lower":
            items = tuple(p.lower() for p in items)
        elif fold == "casefold":
            items = tuple(p.casefold() for p in items)
        self.patterns = items
        self.exact = frozenset(p for p in items if not _MAGIC.search(p))
        magic = [fnmatch.translate(p) for p in items if _MAGIC.search(p)]
        self.regex = re.compile("|".join(f"(?:{m})" for m in magic)) if magic else None
        # Glob results by value: calls repeat the same models, tools and agents (bounded; a dict's
        # get and set are atomic, so engines shared across threads are fine).
        self._memo: dict[str, bool] = {}

    def __call__(self, value: str | None) -> bool:
        if value is None:
            return False
        if value in self.exact:
            return True
        if self.regex is None:
            return False
        found = self._memo.get(value)
        if found is None:
            found = self.regex.match(value) is not None
            if len(self._memo) < 4096:
                self._memo[value] = found
        return found

    @property
    def literal(self) -> bool:
        return self.regex is None


class _Lists:
    """An effect's lists, compiled."""

    __slots__ = ("models", "tools", "methods", "paths", "hosts")

    def __init__(self, effect: Effect | None) -> None:
        def compile_(name: str, fold: str | None = None) -> Globs | None:
            patterns = getattr(effect, name) if effect is not None else None
            return Globs(patterns, fold=fold) if patterns is not None else None

        self.models = compile_("models")
        self.tools = compile_("tools")
        self.methods = compile_("methods", "upper")
        self.paths = compile_("paths")
        self.hosts = compile_("hosts", "lower")


@dataclass(slots=True)
class CompiledRule:
    rule: Rule
    file: str = "<string>"
    line: int = 1
    col: int = 1
    condition: Condition | None = None

    name: str = field(init=False)
    route: Globs | None = field(init=False)
    agent: Globs | None = field(init=False)
    checks: tuple[tuple[str, Globs], ...] = field(init=False)
    deny_all: bool = field(init=False)
    deny: _Lists = field(init=False)
    allow: _Lists = field(init=False)
    monitor: bool = field(init=False)
    guardrails: GuardrailActions | None = field(init=False)
    #: Precomputed so the hot loop skips what a rule does not have.
    refuses: bool = field(init=False)
    has_tool_lists: bool = field(init=False)
    set_items: tuple[tuple[str, Any, bool], ...] = field(init=False)
    #: (attribute, globs, is a deny-list) for models, methods, paths and hosts, deny-lists first.
    lists: tuple[tuple[str, Globs, bool], ...] = field(init=False)
    tool_memo: dict[tuple[str, ...], list[tuple[str, str]]] = field(init=False)
    limited: bool = field(init=False)
    #: Whether the rule can decide differently for other arguments of an MCP tool call.
    reads_arguments: bool = field(init=False)

    def __post_init__(self) -> None:
        rule = self.rule
        self.name = rule.name
        match = rule.match
        self.route = Globs(match.route) if match.route is not None else None
        # Agent names are case-folded by the identify stage (`Alice` must not escape rules on `alice*`).
        self.agent = Globs(match.agent, fold="casefold") if match.agent is not None else None
        checks: list[tuple[str, Globs]] = []
        for attr in ("model", "session", "tool", "path"):
            patterns = getattr(match, attr)
            if patterns is not None:
                checks.append((attr, Globs(patterns)))
        if match.method is not None:
            checks.append(("method", Globs(match.method, fold="upper")))
        self.checks = tuple(checks)
        self.deny_all = rule.deny is not None and rule.deny.empty
        self.deny = _Lists(rule.deny)
        self.allow = _Lists(rule.allow)
        self.monitor = rule.mode == "monitor"
        self.guardrails = _guardrails(rule)
        self.has_tool_lists = self.deny.tools is not None or self.allow.tools is not None
        self.lists = tuple(
            (kind, globs, denies)
            for kind in ("model", "method", "path", "host")  # Subject attributes
            for lists, denies in ((self.deny, True), (self.allow, False))
            if (globs := getattr(lists, kind + "s")) is not None
        )
        self.refuses = self.deny_all or bool(self.lists)
        self.tool_memo = {}
        self.set_items = tuple((k, v, _number(v)) for k, v in (rule.set or {}).items())
        self.limited = rule.limits is not None
        self.reads_arguments = self.condition is not None and self.condition.reads_arguments

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    def offered_refusals(self, tools: tuple[str, ...]) -> list[tuple[str, str]]:
        """(tool, why) for each offered tool this rule refuses; memoised, agents offer the same sets."""
        found = self.tool_memo.get(tools)
        if found is None:
            found = [(name, why) for name in tools if (why := self.tool_refusal(name)) is not None]
            if len(self.tool_memo) < 1024:
                self.tool_memo[tools] = found
        return found

    def tool_refusal(self, name: str) -> str | None:
        """Why this rule refuses the tool `name`, or None."""
        if self.deny.tools is not None and self.deny.tools(name):
            return f"tool {name!r} is denied"
        if self.allow.tools is not None and not self.allow.tools(name):
            return f"tool {name!r} is not in the allowed tools"
        return None

    def refusal(self, subject: Subject) -> str | None:
        """Why this rule denies the call (offered tools aside), or None."""
        if self.deny_all:
            return self.rule.message or "denied"
        for kind, globs, denies in self.lists:
            value = getattr(subject, kind)
            if value is None:  # a call without this attribute is not constrained by it
                continue
            if denies:
                if globs(value):
                    return f"{kind} {value!r} is denied"
            elif not globs(value):
                return f"{kind} {value!r} is not in the allowed {kind}s ({', '.join(globs.patterns)})"
        if subject.tool is not None:
            return self.tool_refusal(subject.tool)
        return None


def _guardrails(rule: Rule) -> GuardrailActions | None:
    request: dict[str, Action] = dict(rule.pii or {})
    response: dict[str, Action] = dict(rule.pii_response or {})
    if rule.secrets is not None:
        request["SECRET"] = rule.secrets
        response["SECRET"] = rule.secrets
    if not request and not response:
        return None
    if rule.mode == "monitor":  # record what would be found, change nothing
        request = {k: "log" for k in request}
        response = {k: "log" for k in response}
    return GuardrailActions(request, response, rule.on_error, (rule.name,))


@dataclass(slots=True)
class Evaluation:
    """What the rules that apply decide about one call, before it is sent."""

    decisions: list[Decision] = field(default_factory=list)
    #: The enforcing rule that denies the call, and why (None: not denied).
    denied_by: CompiledRule | None = None
    reason: str = ""
    #: Offered tools to strip, with the rule that strips each.
    strip: dict[str, str] = field(default_factory=dict)
    #: Parameters to clamp or set, with the rule that sets each.
    params: dict[str, tuple[Any, str]] = field(default_factory=dict)
    #: Enforcing rules with `set`, in order (the stage records `modify` or `allow` for each).
    setters: list[str] = field(default_factory=list)
    #: Rules with limits (enforcing and monitoring).
    limited: list[CompiledRule] = field(default_factory=list)
    #: Rules whose tool lists apply to tool calls in the response.
    tool_rules: list[CompiledRule] = field(default_factory=list)
    guardrails: GuardrailActions | None = None
    #: Rules with `loop:` (enforcing and monitoring), for the loop stage.
    loops: list[CompiledRule] = field(default_factory=list)
    #: Every rule that applied, in order.
    fired: list[str] = field(default_factory=list)
    #: Rules that applied and had nothing to do for this call (one `allow` decision names them all).
    matched: list[str] = field(default_factory=list)
    #: Monitor rules that would have denied the call, and why (also recorded as `monitor` decisions).
    would_deny: list[tuple[CompiledRule, str]] = field(default_factory=list)

    @property
    def denied(self) -> bool:
        return self.denied_by is not None

    @property
    def message(self) -> str:
        rule = self.denied_by
        if rule is None:
            return ""
        text = rule.rule.message or self.reason
        if rule.rule.message and self.reason and self.reason != rule.rule.message:
            text = f"{rule.rule.message} ({self.reason})"
        return f"denied by policy rule {rule.name!r}: {text}"

    def refused_tool(self, name: str) -> tuple[CompiledRule, str] | None:
        """The enforcing rule that refuses a tool the model called, and why; monitor rules record only."""
        for rule in self.tool_rules:
            reason = rule.tool_refusal(name)
            if reason is not None and not rule.monitor:
                return rule, reason
        return None


def tool_denial_message(rule: CompiledRule, reason: str) -> str:
    """What the agent is told when a model's tool call is refused (the proxy and `policy test` alike)."""
    if rule.rule.message:
        return f"denied by policy rule {rule.name!r}: {rule.rule.message} ({reason})"
    return f"denied by policy rule {rule.name!r}: the model called a tool it may not use ({reason})"


_CACHE_LIMIT = 4096


class Engine:
    """Rules compiled and indexed; `evaluate` is pure and safe to call from any thread."""

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        self.rules = tuple(rules)
        self.by_name = {r.name: r for r in self.rules}
        self._cache: dict[tuple[str, str], tuple[CompiledRule, ...]] = {}
        # Route index: exact route names → rules; rules with globs or no route go in `_any_route`.
        self._by_route: dict[str, list[CompiledRule]] = {}
        self._any_route: list[CompiledRule] = []
        for rule in self.rules:
            if rule.route is not None and rule.route.literal:
                for name in rule.route.exact:
                    self._by_route.setdefault(name, []).append(rule)
            else:
                self._any_route.append(rule)
        self.has_limits = any(r.rule.limits for r in self.rules)
        #: Variables any condition uses: the only ones converted to CEL values per call.
        self.variables = frozenset(v for r in self.rules if r.condition is not None for v in r.condition.variables)
        self.request_fields = frozenset(
            f for r in self.rules if r.condition is not None for f in r.condition.request_fields
        )

    def candidates(self, route: str, agent: str) -> tuple[CompiledRule, ...]:
        """Rules whose route and agent match, in load order (cached per pair)."""
        key = (route, agent)
        found = self._cache.get(key)
        if found is None:
            pool = self._by_route.get(route, []) + self._any_route
            order = {id(r): i for i, r in enumerate(self.rules)}
            pool.sort(key=lambda r: order[id(r)])
            folded = agent.casefold()  # a Call from the proxy is folded already; a policy test case may not be
            found = tuple(
                r for r in pool if (r.route is None or r.route(route)) and (r.agent is None or r.agent(folded))
            )
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = found
        return found

    def evaluate(self, subject: Subject) -> Evaluation:
        result = Evaluation()
        context = None
        for rule in self.candidates(subject.route, subject.agent):
            for attr, globs in rule.checks:
                if not globs(getattr(subject, attr)):
                    break
            else:
                if rule.condition is not None:
                    if context is None:
                        context = context_for(self.variables, subject, self.request_fields)
                    try:
                        if not rule.condition.evaluate(context):
                            continue
                    except Exception as exc:  # noqa: BLE001 - any CEL failure is this rule's error
                        self._condition_failed(rule, exc, result)
                        if result.denied_by is not None:
                            break
                        continue
                self._apply(rule, subject, result)
                if result.denied_by is not None:
                    break  # deny wins: later rules cannot change the outcome
        return result

    def _condition_failed(self, rule: CompiledRule, exc: Exception, result: Evaluation) -> None:
        reason = f"condition failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
        detail = {"on_error": rule.rule.on_error, "when": rule.rule.when}
        result.decisions.append(Decision("policy", "error", rule.name, reason, detail))
        result.fired.append(rule.name)
        if rule.rule.on_error == "deny":
            self._deny(rule, reason, result)

    def _deny(self, rule: CompiledRule, reason: str, result: Evaluation) -> None:
        if rule.monitor:
            result.decisions.append(Decision("policy", "monitor", rule.name, f"would deny: {reason}"))
            result.would_deny.append((rule, reason))
            return
        result.decisions.append(Decision("policy", "deny", rule.name, reason))
        if result.denied_by is None:
            result.denied_by, result.reason = rule, reason

    def _apply(self, rule: CompiledRule, subject: Subject, result: Evaluation) -> None:
        result.fired.append(rule.name)
        if rule.refuses or (rule.has_tool_lists and subject.tool is not None):
            reason = rule.refusal(subject)
            if reason is not None:
                self._deny(rule, reason, result)
                return
        acted = False
        if rule.has_tool_lists:
            result.tool_rules.append(rule)
            if subject.tools and subject.tool is None:
                refused = rule.offered_refusals(subject.tools)
                if refused:
                    acted = True
                    if rule.rule.offered_tools == "deny":
                        self._deny(rule, "offered " + "; ".join(why for _, why in refused), result)
                        return
                    names = ", ".join(name for name, _ in refused)
                    if rule.monitor:
                        result.decisions.append(Decision("policy", "monitor", rule.name, f"would strip tools: {names}"))
                    else:
                        for name, _ in refused:
                            result.strip.setdefault(name, rule.name)
        if rule.limited:
            result.limited.append(rule)
        if rule.rule.loop is not None:
            result.loops.append(rule)
        if rule.set_items:
            acted = True
            if rule.monitor:
                result.decisions.append(Decision("policy", "monitor", rule.name, f"would set {rule.rule.set}"))
            else:  # the stage records `modify` or `allow` once it knows what changed
                result.setters.append(rule.name)
                params = result.params
                for key, value, number in rule.set_items:
                    current = params.get(key)
                    if current is None or (number and _number(current[0]) and value < current[0]):
                        params[key] = (value, rule.name)  # the tightest clamp wins
        if rule.guardrails is not None:
            result.guardrails = (
                rule.guardrails if result.guardrails is None else result.guardrails.merge(rule.guardrails)
            )
        if not acted:
            result.matched.append(rule.name)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


__all__ = ["CompiledRule", "Engine", "Evaluation", "Globs", "Subject"]
