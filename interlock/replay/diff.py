"""Divergence: for a request that matches nothing, the closest recorded call and a readable diff.

The diff compares the two canonical bodies (volatile fields already dropped) and names each
difference the way a person reads the request, using the protocol adapter's normalised view:
`messages[3] (tool result for call_1)`, `parameter temperature`, `tools offered`, `argument city of
tool get_weather`; texts show the first place they differ, with a little context.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from interlock.core.call import Call
from interlock.core.views import RequestView
from interlock.protocols import ADAPTERS, BadRequest
from interlock.replay.match import _RAW, Key, Matcher, Recorded, Request, canonical, dumps, parse_body

MAX_DIFFERENCES = 12
#: How many upcoming recorded calls of the route a miss is compared with.
CANDIDATES = 64
_EXCERPT = 60
_MISSING: Any = object()


@dataclass(slots=True)
class Difference:
    """One place where the incoming request differs from the recorded one."""

    where: str  # JSON path in the request body, e.g. "messages[3].content"
    label: str  # what it is, e.g. "messages[3] (tool result for call_1)"
    change: str  # "changed", "added", "removed"
    recorded: Any = None
    actual: Any = None
    detail: str = ""  # a short human rendering of the change

    def line(self) -> str:
        where = f" [{self.where}]" if self.where and self.where not in self.label else ""
        return f"{self.label}{where}: {self.detail}"


@dataclass(slots=True)
class Divergence:
    """An incoming request that matched no recorded call, and what it was closest to."""

    index: int  # 1-based ordinal of the request in this replay
    route: str
    method: str
    path: str
    closest_step: int | None = None
    closest_id: str | None = None
    expected_step: int | None = None  # the first recorded call not yet served on this route
    already_served: bool = False  # identical to a recorded call that was already used
    differences: list[Difference] = field(default_factory=list)
    truncated: bool = False
    compared: bool = True  # False past the first misses of a run: no diff was computed
    reason: str = ""  # why nothing could be compared (a route the recording never used)

    def headline(self) -> str:
        where = f"{self.method} /{self.route}{self.path}"
        if self.reason:
            return f"request #{self.index} ({where}) matches no recorded call: {self.reason}"
        if not self.compared:
            expected = f"step {self.expected_step}" if self.expected_step else "none"
            return f"request #{self.index} ({where}) matches no recorded call (not compared; next expected: {expected})"
        if self.closest_step is None:
            return f"request #{self.index} ({where}) matches no recorded call, and none is close"
        if self.already_served:
            return (
                f"request #{self.index} ({where}) repeats recorded step {self.closest_step}, "
                "which was already served: the recording has fewer such requests"
            )
        closest = f"closest recorded call: step {self.closest_step} ({self.closest_id})"
        if self.expected_step is not None and self.expected_step != self.closest_step:
            closest += f"; the next expected was step {self.expected_step}"
        return f"request #{self.index} ({where}) diverges from the recording; {closest}"

    def summary(self, limit: int = 3) -> str:
        """One paragraph: the headline and the first differences (for an error message)."""
        lines = [d.line() for d in self.differences[:limit]]
        more = len(self.differences) - limit
        if more > 0 or self.truncated:
            lines.append(f"... and {max(more, 0)} more" + (" (truncated)" if self.truncated else ""))
        return self.headline() + (": " + "; ".join(lines) if lines else "")

    def text(self) -> str:
        """The full report, one difference a line."""
        lines = [self.headline()]
        lines += [f"  - {d.line()}" for d in self.differences]
        if self.truncated:
            lines.append(f"  (only the first {MAX_DIFFERENCES} differences are shown)")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["headline"] = self.headline()
        return data


def diverge(
    index: int, request: Request, key: Key, data: Any, matcher: Matcher, *, detailed: bool = True
) -> Divergence:
    """Explain a miss: find the closest recorded call on the same route and diff against it."""
    divergence = Divergence(index, request.route, request.method, request.path)
    expected = matcher.expected(request.route)
    divergence.expected_step = expected.step if expected else None
    if not detailed:
        divergence.compared = False
        return divergence
    # An exact key among served calls means the agent repeated a request more often than recorded.
    repeated = matcher.served_with(key)
    if repeated is not None:
        divergence.closest_step, divergence.closest_id = repeated.step, repeated.call.id
        divergence.already_served = True
        return divergence
    # The divergence is near where the agent was in the recording: look at the next unserved calls of
    # the route, not the whole bundle (a miss must stay cheap in a 1,000-call replay).
    upcoming = matcher.upcoming(request.route, CANDIDATES)
    candidates = [r for r in upcoming if r.call.method == request.method and r.call.path == request.path]
    candidates = candidates or upcoming or matcher.last_of(request.route)
    if not candidates:
        return divergence
    options = matcher.options
    incoming = canonical(data, request.protocol, options)  # only when there is something to compare
    leaves = _leaves(incoming)
    best: Recorded | None = None
    best_score = -1.0
    for candidate in candidates:
        score = _similarity(leaves, _recorded_leaves(candidate, options))
        if candidate is expected:
            score += 1e-6  # ties go to the call the agent was expected to make next
        if candidate.call.method == request.method and candidate.call.path == request.path:
            score += 1.0
        if score > best_score:
            best, best_score = candidate, score
    assert best is not None
    divergence.closest_step, divergence.closest_id = best.step, best.call.id
    recorded_call = best.call
    differences: list[Difference] = []
    if recorded_call.method != request.method or recorded_call.path != request.path:
        differences.append(
            Difference(
                "",
                "endpoint",
                "changed",
                f"{recorded_call.method} {recorded_call.path}",
                f"{request.method} {request.path}",
                f"recorded {recorded_call.method} {recorded_call.path} → now {request.method} {request.path}",
            )
        )
    if recorded_call.query != request.query:
        differences.append(
            Difference(
                "",
                "query string",
                "changed",
                recorded_call.query,
                request.query,
                f"recorded {recorded_call.query!r} → now {request.query!r}",
            )
        )
    recorded = canonical(parse_body(recorded_call.request_body), recorded_call.protocol, options)
    describe = _Describer(
        _view(recorded_call, recorded_call.request_body), _view(_incoming_call(request), request.body), recorded
    )
    differences += describe.view_differences()
    found: list[tuple[tuple[str | int, ...], str, Any, Any]] = []
    truncated = _compare(recorded, incoming, (), found)
    for path, change, old, new in found:
        if describe.explained(path):
            continue
        differences.append(describe.difference(path, change, old, new))
    divergence.truncated = truncated or len(differences) > MAX_DIFFERENCES
    divergence.differences = differences[:MAX_DIFFERENCES]
    return divergence


# -- structural comparison ----------------------------------------------------------------------------


def _compare(a: Any, b: Any, path: tuple[str | int, ...], out: list[tuple[Any, ...]]) -> bool:
    """Append (path, change, recorded, actual) for each difference; True when cut short."""
    if len(out) > MAX_DIFFERENCES:
        return True
    if a is _RAW or b is _RAW:
        if a is not b:
            out.append((path, "changed", "<raw body>" if a is _RAW else a, "<raw body>" if b is _RAW else b))
        return False
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(a.keys() | b.keys()):
            if key not in b:
                out.append(((*path, key), "removed", a[key], _MISSING))
            elif key not in a:
                out.append(((*path, key), "added", _MISSING, b[key]))
            elif _compare(a[key], b[key], (*path, key), out):
                return True
        return False
    if isinstance(a, list) and isinstance(b, list):
        if a == b:
            return False
        # Align items, so that one inserted message is one difference, not a cascade.
        matcher = difflib.SequenceMatcher(a=[dumps(x) for x in a], b=[dumps(x) for x in b], autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                continue
            pairs = min(i2 - i1, j2 - j1) if tag == "replace" else 0
            for k in range(pairs):
                if _compare(a[i1 + k], b[j1 + k], (*path, j1 + k), out):
                    return True
            for k in range(i1 + pairs, i2):
                out.append(((*path, k), "removed", a[k], _MISSING))
            for k in range(j1 + pairs, j2):
                out.append(((*path, k), "added", _MISSING, b[k]))
        return len(out) > MAX_DIFFERENCES
    if a != b or type(a) is not type(b):
        out.append((path, "changed", a, b))
    return False


def _leaves(value: Any, path: str = "") -> set[str]:
    if isinstance(value, dict):
        return {leaf for k, v in value.items() for leaf in _leaves(v, f"{path}.{k}")}
    if isinstance(value, list):
        return {leaf for i, v in enumerate(value) for leaf in _leaves(v, f"{path}[{i}]")}
    if value is _RAW:
        return {path + "=<raw>"}
    return {f"{path}={json.dumps(value, ensure_ascii=False)[:200]}"}


def _recorded_leaves(entry: Recorded, options: Any) -> set[str]:
    cached = entry.leaves
    if cached is None:
        recorded = canonical(parse_body(entry.call.request_body), entry.call.protocol, options)
        cached = entry.leaves = frozenset(_leaves(recorded))
    return set(cached)


def _similarity(a: set[str], b: set[str] | frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


# -- naming differences with the adapter's view -------------------------------------------------------


def _incoming_call(request: Request) -> Call:
    return Call(
        id="incoming",
        route=request.route,
        protocol=request.protocol,
        method=request.method,
        path=request.path,
        query=request.query,
        request_body=request.body,
    )


def _view(call: Call, body: bytes) -> RequestView | None:
    probe = Call(id=call.id, route=call.route, protocol=call.protocol, method=call.method, path=call.path)
    probe.request_body = body
    try:
        return ADAPTERS[call.protocol].parse(probe)
    except (BadRequest, KeyError, TypeError, AttributeError):
        return None


class _Describer:
    """Turns JSON paths into the names a person uses, from the two requests' normalised views."""

    def __init__(self, recorded: RequestView | None, actual: RequestView | None, recorded_body: Any) -> None:
        self.recorded, self.actual = recorded, actual
        self.body = recorded_body
        self.roles: dict[tuple[str | int, ...], str] = {}
        self._explained: set[tuple[str | int, ...]] = set()
        for view in (actual, recorded):
            for slot in view.texts if view else []:
                if len(slot.path) >= 2 and isinstance(slot.path[1], int):
                    self.roles.setdefault(slot.path[:2], slot.role)
                elif len(slot.path) == 1:
                    self.roles.setdefault(slot.path, slot.role)  # `instructions`, `system`, `prompt`

    def view_differences(self) -> list[Difference]:
        """Differences best said from the views: the tools offered (names, not schemas)."""
        if self.recorded is None or self.actual is None:
            return []
        out: list[Difference] = []
        old, new = self.recorded.tools, self.actual.tools
        if old != new and set(old) != set(new):
            added = [t for t in new if t not in old]
            removed = [t for t in old if t not in new]
            parts = [f"added {', '.join(added)}"] if added else []
            parts += [f"removed {', '.join(removed)}"] if removed else []
            out.append(Difference("tools", "tools offered", "changed", old, new, "; ".join(parts)))
            self._explained.add(("tools",))
        return out

    def explained(self, path: tuple[str | int, ...]) -> bool:
        return any(path[: len(p)] == p for p in self._explained)

    def label(self, path: tuple[str | int, ...]) -> str:
        if not path:
            return "request body"
        head = path[0]
        if head == "model":
            return "model"
        if head == "method" and len(path) == 1:
            return "JSON-RPC method"
        params = set(self.recorded.params if self.recorded else ()) | set(self.actual.params if self.actual else ())
        if isinstance(head, str) and head in params:
            return f"parameter {head}"
        view = self.actual or self.recorded
        if head == "params" and len(path) >= 3 and path[1] == "arguments" and view and view.tool_name:
            return f"argument {path[2]} of tool {view.tool_name}"
        if head == "tools" and len(path) >= 2 and isinstance(path[1], int):
            names = (self.recorded.tools if self.recorded else []) or (self.actual.tools if self.actual else [])
            name = names[path[1]] if path[1] < len(names) else f"#{path[1]}"
            return f"tool definition {name}"
        if len(path) >= 2 and isinstance(path[1], int):
            item = f"{head}[{path[1]}]"
            role = self.roles.get(path[:2]) or _role_of(self.body, path[:2])
            call_id = _call_id(self.body, path[:2])
            if role in ("tool", "tool_result") or (call_id and role != "assistant"):
                return f"{item} (tool result{' for ' + call_id if call_id else ''})"
            if len(path) >= 3 and path[2] in ("tool_calls", "function_call") or role == "tool_args":
                return f"{item} (tool call by {role if role != 'tool_args' else 'assistant'})"
            return f"{item} ({role})" if role else item
        top = self.roles.get(path[:1])
        return f"{head} ({top})" if top and top != head else str(head)

    def difference(self, path: tuple[str | int, ...], change: str, old: Any, new: Any) -> Difference:
        where = _path_text(path)
        label = self.label(path)
        if change == "added":
            detail = f"added {_short(new)}"
        elif change == "removed":
            detail = f"removed (recorded {_short(old)})"
        elif isinstance(old, str) and isinstance(new, str):
            detail = _text_delta(old, new)
        else:
            detail = f"recorded {_short(old)} → now {_short(new)}"
        return Difference(
            where, label, change, None if old is _MISSING else old, None if new is _MISSING else new, detail
        )


def _role_of(body: Any, path: tuple[str | int, ...]) -> str:
    try:
        item = body[path[0]][path[1]]
    except (KeyError, IndexError, TypeError):
        return ""
    if isinstance(item, dict):
        role = item.get("role") or item.get("type")
        return str(role) if role else ""
    return ""


def _call_id(body: Any, path: tuple[str | int, ...]) -> str:
    """The tool call a tool-result item answers, when the item says (`tool_call_id`, `call_id`,
    `tool_use_id` in a content block)."""
    try:
        item = body[path[0]][path[1]]
    except (KeyError, IndexError, TypeError):
        return ""
    if not isinstance(item, dict):
        return ""
    for key in ("tool_call_id", "call_id", "tool_use_id"):
        if isinstance(item.get(key), str) and item.get("type") != "function_call":
            return str(item[key])
    content = item.get("content")
    for block in content if isinstance(content, list) else []:
        if isinstance(block, dict) and isinstance(block.get("tool_use_id"), str):
            return str(block["tool_use_id"])
    return ""


def _path_text(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _short(value: Any) -> str:
    if value is _MISSING:
        return "nothing"
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 2 * _EXCERPT else text[: 2 * _EXCERPT - 1] + "…"


def _text_delta(old: str, new: str) -> str:
    """Short texts side by side; long ones as excerpts around the first change, changed part in [ ]."""
    if len(old) <= 2 * _EXCERPT and len(new) <= 2 * _EXCERPT:
        return f"recorded {old!r} → now {new!r}"
    start = 0
    limit = min(len(old), len(new))
    while start < limit and old[start] == new[start]:
        start += 1
    end = 0
    while end < limit - start and old[-1 - end] == new[-1 - end]:
        end += 1
    # Whole words read better: "Refund [at most once]." rather than "Refund [at most on]ce.".
    while start > 0 and old[start - 1].isalnum():
        start -= 1
    while end > 0 and old[len(old) - end].isalnum():
        end -= 1

    def excerpt(text: str) -> str:
        changed = text[start : len(text) - end]
        if len(changed) > _EXCERPT:
            changed = changed[: _EXCERPT - 1] + "…"
        before = ("…" if start > 24 else "") + text[max(0, start - 24) : start]
        after = text[len(text) - end :][:24] + ("…" if end > 24 else "")
        return f"{before}[{changed}]{after}"

    return f"differs at character {start}: recorded {excerpt(old)!r} → now {excerpt(new)!r}"
