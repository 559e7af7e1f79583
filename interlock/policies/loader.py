"""Policy files → a checked, compiled `Engine`; problems as `file:line:col: message`; hot reload.

`load_policies` collects every problem in every file (so `interlock policy check` reports them all
at once) and builds an engine only when there are no errors. `PolicyRuntime` holds the live engine
and polls the files' mtimes: a changed set of files is loaded in a worker thread and swapped in
whole, or, if it has errors, the old policy keeps running and the errors are logged and kept for
the admin API.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from interlock.policies.cel import ConditionError, compile_condition
from interlock.policies.engine import CompiledRule, Engine, Globs
from interlock.policies.model import Effect, Limits, Loop, Match, PolicyFile, Rule
from interlock.prices import Pricing
from interlock.protocols.mcp import is_mcp
from interlock.yamlsource import Document, SourceError, parse_yaml

log = logging.getLogger("interlock.policies")

SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    col: int
    message: str
    severity: str = "error"  # or "warning"
    kind: str = ""  # "unpriced": a money budget over a model without a price (`config check` shows these)

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{self.file}:{self.line}:{self.col}: {prefix}{self.message}"


class PolicyError(SourceError):
    """Policy files with errors; `problems` lists them all, the message shows the first."""

    def __init__(self, problems: list[Problem]) -> None:
        first = problems[0]
        super().__init__(first.file, first.line, first.col, first.message)
        self.problems = problems

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


def policy_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The YAML files named, and those under named folders (recursively, sorted by path)."""
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
        else:
            found.append(path)
    return found


@dataclass(slots=True)
class Loaded:
    rules: list[CompiledRule] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


def check_policies(
    paths: Iterable[str | os.PathLike[str]],
    routes: Mapping[str, str] | None = None,
    prices: Mapping[str, Any] | None = None,
) -> Loaded:
    """Load and lint; never raises. `routes` (name → protocol) enables the route checks; `prices`
    (when given) the budget check."""
    loaded = Loaded()
    names: dict[str, CompiledRule] = {}
    for path in policy_files(paths):
        name = str(path)
        loaded.files.append(name)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            loaded.problems.append(Problem(name, 1, 1, f"cannot read: {exc}"))
            continue
        try:
            document = parse_yaml(text, name)
        except SourceError as exc:
            loaded.problems.append(Problem(exc.file, exc.line, exc.col, exc.message))
            continue
        for rule in _file_rules(document, loaded.problems, routes, prices):
            if rule.name in names:
                first = names[rule.name]
                message = f"duplicate rule name {rule.name!r} (first at {first.where})"
                loaded.problems.append(Problem(rule.file, rule.line, rule.col, message))
                continue
            names[rule.name] = rule
            loaded.rules.append(rule)
    order = {name: i for i, name in enumerate(loaded.files)}
    loaded.problems.sort(key=lambda p: (order.get(p.file, -1), p.line, p.col))
    return loaded


def load_policies(
    paths: Iterable[str | os.PathLike[str]],
    routes: Mapping[str, str] | None = None,
    prices: Mapping[str, Any] | None = None,
) -> Engine:
    """The engine for these files; raises PolicyError listing every error."""
    loaded = check_policies(paths, routes, prices)
    if loaded.errors:
        raise PolicyError(loaded.errors)
    for problem in loaded.problems:
        log.warning("%s", problem)
    return Engine(loaded.rules)


def _file_rules(
    document: Document,
    problems: list[Problem],
    routes: Mapping[str, str] | None,
    prices: Mapping[str, Any] | None,
) -> list[CompiledRule]:
    data = document.data
    if data is None:
        return []
    if not isinstance(data, dict):
        problems.append(_problem(document, (), "a policy file must be a mapping with `version` and `rules`"))
        return []
    rules_data = data.get("rules")
    # Validate rule by rule so that one bad rule does not hide the others' problems.
    try:
        PolicyFile.model_validate({k: v for k, v in data.items() if k != "rules"})
    except ValidationError as exc:
        problems += _validation_problems(document, (), exc)
    if rules_data is None:
        return []
    if not isinstance(rules_data, list):
        problems.append(_problem(document, ("rules",), "`rules` must be a list of rules"))
        return []
    compiled: list[CompiledRule] = []
    for index, item in enumerate(rules_data):
        where = ("rules", index)
        try:
            rule = Rule.model_validate(item)
        except ValidationError as exc:
            problems += _validation_problems(document, where, exc)
            continue
        line, col = document.locate(where)
        before = len(problems)
        condition = None
        if rule.when is not None:
            try:
                condition = compile_condition(rule.when)
            except ConditionError as exc:
                problems.append(_problem(document, (*where, "when"), str(exc)))
        problems += _lint(document, where, rule, routes, prices)
        if any(p.severity == "error" for p in problems[before:]):
            continue
        compiled.append(CompiledRule(rule, document.file, line, col, condition))
    return compiled


def _lint(
    document: Document,
    where: tuple[str | int, ...],
    rule: Rule,
    routes: Mapping[str, str] | None,
    prices: Mapping[str, Any] | None,
) -> list[Problem]:
    found: list[Problem] = []
    if not rule.effects:
        message = "rule has no effect: give allow, deny, limits, set, pii, pii_response, secrets or loop"
        if rule.allow is not None:
            message = "`allow: {}` allows nothing more than the default; " + message
        found.append(_problem(document, where, message))
    for key in Match.model_fields:
        if getattr(rule.match, key) == ():
            found.append(
                _problem(document, (*where, "match", key), f"match.{key} is an empty list: the rule can never match")
            )
    if rule.when is not None and rule.when.strip() == "false":
        found.append(_problem(document, (*where, "when"), "condition is always false: the rule can never match"))
    if routes is not None and rule.match.route is not None:
        globs = Globs(rule.match.route)
        matched = [name for name in routes if globs(name)]
        if not matched:
            pattern = ", ".join(rule.match.route)
            hint = _suggest(rule.match.route[0], routes)
            found.append(
                _problem(
                    document,
                    (*where, "match", "route"),
                    f"unknown route {pattern!r}: the rule can never match (routes: {', '.join(routes)}){hint}",
                )
            )
        elif rule.match.tool is not None and not any(is_mcp(routes[name]) for name in matched):
            found.append(
                _problem(
                    document,
                    (*where, "match", "tool"),
                    "match.tool only matches MCP tools/call, and no matched route is an mcp route: the rule can never match",
                )
            )
    if routes is not None and rule.match.route is None and rule.match.tool is not None:
        if not any(is_mcp(protocol) for protocol in routes.values()):
            found.append(
                _problem(
                    document,
                    (*where, "match", "tool"),
                    "match.tool only matches MCP tools/call, and no route is an mcp route: the rule can never match",
                )
            )
    if rule.limits is not None and rule.limits.budget_usd_per_day is not None and prices is not None:
        found += _unpriced(document, where, rule, prices)
    return found


def _unpriced(document: Any, where: tuple[str | int, ...], rule: Rule, prices: Mapping[str, Any]) -> list[Problem]:
    """Warnings for a money budget over models that neither the price catalogue nor `prices:` knows
    (issue 16: an unpriced model is refused under `unpriced: deny`, or counted as $0). Only exact
    model names are checked: a glob names models the catalogue may or may not know."""

    assert rule.limits is not None
    unpriced = rule.limits.unpriced
    effect = "refused (limits.unpriced: deny)" if unpriced == "deny" else f"counted as $0 (limits.unpriced: {unpriced})"
    pricing = Pricing(prices)
    missing = [m for m in rule.match.model or () if not any(c in m for c in "*?[") and not pricing.known(m)]
    if not missing:
        return []
    names = ", ".join(repr(m) for m in missing)
    them = "it" if len(missing) == 1 else "them"
    message = f"no price in the price catalogue or `prices:` for {names}: calls to {them} are {effect}"
    return [_problem(document, (*where, "match", "model"), message, "warning", "unpriced")]


def _suggest(name: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


_MODELS: dict[str, Any] = {
    "": PolicyFile,
    "rule": Rule,
    "match": Match,
    "allow": Effect,
    "deny": Effect,
    "limits": Limits,
    "loop": Loop,
}


def _validation_problems(document: Document, base: tuple[str | int, ...], exc: ValidationError) -> list[Problem]:
    found: list[Problem] = []
    seen: set[tuple[Any, ...]] = set()
    for error in exc.errors():
        path = _document_path(document, base, tuple(error["loc"]))
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            key = path[-1] if path else "?"
            parent = path[-2] if len(path) >= 2 and isinstance(path[-2], str) else ("rule" if base else "")
            model = _MODELS.get(str(parent)) or (Rule if base else PolicyFile)
            hint = _suggest(str(key), model.model_fields)
            message = f"unknown field {key!r}{hint}"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        field_name = ".".join(str(p) for p in path[len(base) :])
        text = f"{field_name}: {message}" if field_name and error["type"] != "extra_forbidden" else message
        if (path, text) in seen:
            continue
        seen.add((path, text))
        found.append(_problem(document, path, text))
    return found


def _document_path(document: Document, base: tuple[str | int, ...], loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    # pydantic puts union branches and type names in `loc`; keep the parts that exist in the YAML.
    path = base
    node: Any = document.data
    for key in base:
        if isinstance(node, dict):
            node = node.get(key)
        elif isinstance(node, list) and isinstance(key, int):
            node = node[key]
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
            path = (*path, part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            path = (*path, part)
        elif isinstance(node, dict) and isinstance(part, str) and "[" not in part and part not in _TYPE_NAMES:
            path = (*path, part)  # a missing required field: point at the parent
            break
    return path


_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "list", "tuple", "dict", "none", "literal"})


def _problem(
    document: Document, path: tuple[str | int, ...], message: str, severity: str = "error", kind: str = ""
) -> Problem:
    line, col = document.locate(path)
    return Problem(document.file, line, col, message, severity, kind)


# -- the live policy and hot reload --------------------------------------------------------------


class PolicyRuntime:
    """The policy a running interlock enforces: the engine, where it came from, and reload state."""

    def __init__(
        self,
        paths: Iterable[str],
        routes: Mapping[str, str] | None = None,
        prices: Mapping[str, Any] | None = None,
        interval: float = 1.0,
    ) -> None:
        self.paths = tuple(paths)
        self.routes = dict(routes) if routes is not None else None
        self.prices = prices
        self.interval = interval
        self.engine = Engine(())
        self.errors: list[str] = []
        self.loaded_at: float | None = None
        self.reloads = 0
        self.fired: Counter[str] = Counter()
        self.files: list[str] = []
        self._stamp: dict[str, tuple[int, int]] = {}
        self._task: asyncio.Task[None] | None = None

    def load(self) -> Engine:
        """Load now; raises PolicyError (used at startup, where bad policy stops interlock)."""
        stamp = self._snapshot()
        engine = load_policies(self.paths, self.routes, self.prices)
        self._install(engine, stamp)
        return engine

    def reload_if_changed(self) -> bool | None:
        """Reload if any file changed, appeared or vanished. True: reloaded; False: kept the old
        policy because of errors; None: nothing changed. Blocking: run it in a thread."""
        stamp = self._snapshot()
        if stamp == self._stamp:
            return None
        # Let writers finish: a file caught between truncate and write would load as an empty
        # (valid!) policy. Wait until two looks a moment apart agree.
        for _ in range(20):
            time.sleep(min(self.interval, 0.25))
            again = self._snapshot()
            if again == stamp:
                break
            stamp = again
        try:
            engine = load_policies(self.paths, self.routes, self.prices)
        except PolicyError as exc:
            self._stamp = stamp  # report once per change, not on every poll
            self.errors = [str(p) for p in exc.problems]
            for problem in exc.problems:
                log.error("policy reload failed, keeping the previous policy: %s", problem)
            return False
        self._install(engine, stamp)
        self.reloads += 1
        log.warning("policy reloaded: %d rules from %d files", len(engine.rules), len(self.files))
        return True

    def _install(self, engine: Engine, stamp: dict[str, tuple[int, int]]) -> None:
        self.engine = engine
        self._stamp = stamp
        self.errors = []
        self.loaded_at = time.time()
        self.files = sorted(stamp)

    def _snapshot(self) -> dict[str, tuple[int, int]]:
        stamp: dict[str, tuple[int, int]] = {}
        for path in policy_files(self.paths):
            try:
                info = path.stat()
            except OSError:
                stamp[str(path)] = (-1, -1)
                continue
            stamp[str(path)] = (info.st_mtime_ns, info.st_size)
        return stamp

    def start(self) -> None:
        """Poll for changes on the running event loop (stat and load happen in a worker thread)."""
        if self._task is None and self.paths:
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="policy-reload")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await asyncio.to_thread(self.reload_if_changed)
            except Exception:  # a bug must not stop watching
                log.exception("policy reload crashed")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None


__all__ = ["PolicyError", "PolicyRuntime", "Problem", "check_policies", "load_policies", "policy_files"]
