"""The `LoopHistory` interface behind loop detection (`loops.py`), and its in-process implementation.

The loop stage knows what a `loop:` rule means; a history only remembers, per session (a `scope`:
`session:ID`, or `agent:NAME` for calls without one), what the stage asks it to:

- the session's latest keys of each kind (`tool_calls`, `requests`: 16-byte digests, never the
  calls), at most `width` of them, where `width` is the largest `window` any call of the session
  asked for (a reloaded rule that looks further back widens it; nothing narrows it);
- each tool's current error streak (the error's key and how many times in a row), at most
  `max_tools` tools;
- the tools a tool-error loop refuses for the rest of the session, with the rule and reason;
- which (rule, kind) loops were already announced (one log line and webhook event per loop).

`observe` does a call's whole share in one atomic, batched operation (one round trip on a shared
backend): refuse a blocked tool, or append every key and step every streak, returning where each
key stands among its kind's latest entries and each streak's length. So a loop whose repeats land on
different processes (`serve --workers N`, on the store's SQLite file: `loop_history_sqlite.py`) or
replicas (`state.url`, on Redis: `loop_history_redis.py`) is seen as one. Sessions are bounded:
`max_sessions` at once (the least recently seen forgotten first), each forgotten after `idle_ttl`
seconds without a call. `now` is always passed in (wall-clock seconds), so tests drive the clock and
a shared backend uses its callers' times. A shared backend that cannot answer raises
`StateUnavailable` within a bounded time; the stage applies `state.on_failure.loops`.
`tests/conformance/test_loop_history_contract.py` runs against every backend.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Reversible, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

#: Sessions remembered at once; the least recently seen is forgotten first.
MAX_SESSIONS = 10_000
#: A session without a call for this long is forgotten (seconds).
IDLE_TTL = 3600.0
#: Tools with an error streak (and tools refused) remembered per session.
MAX_TOOLS = 256
#: The kinds of key a session keeps a list of.
KINDS = ("tool_calls", "requests")


class Repeat(NamedTuple):
    """Append `key` to the session's latest entries of `kind` ("tool_calls" or "requests")."""

    kind: str
    key: bytes


class Streak(NamedTuple):
    """Step `tool`'s error streak: `error` is the error's key (the same key again lengthens the
    streak, another starts one of 1); None is a success, which ends it."""

    tool: str
    error: bytes | None


class Seen(NamedTuple):
    """What `observe` found. `blocked`: the asked tool's refusal (rule, reason), and then nothing
    else was done. `repeats`: per `Repeat`, where its key stands among the kind's latest entries,
    ascending (0 is the entry just appended; a rule with window w counts the positions below w).
    `streaks`: per `Streak`, its length after the step (0 for a success)."""

    blocked: tuple[str, str] | None
    repeats: list[list[int]]
    streaks: list[int]


class LoopHistory(Protocol):
    """Each session's recent keys, error streaks, refused tools and announced loops."""

    async def observe(
        self,
        scope: str,
        window: int,
        now: float,
        repeats: Sequence[Repeat] = (),
        streaks: Sequence[Streak] = (),
        tool: str | None = None,
    ) -> Seen:
        """Atomically for the session: if `tool` is refused, its refusal, changing nothing else;
        else append each repeat (keeping the latest `max(window, width)` entries of its kind) and
        step each streak. Touches the session (its idle time starts again)."""
        ...

    async def block(self, scope: str, tool: str, rule: str, reason: str, now: float) -> None:
        """Refuse `tool` for the rest of the session (`rule` and `reason` say why)."""
        ...

    async def announce(self, scope: str, rule: str, kind: str, now: float) -> bool:
        """True the first time this session's loop of (`rule`, `kind`) is announced, then False."""
        ...

    async def aclose(self) -> None:
        """Release connections (called once, at shutdown)."""
        ...


def positions(entries: Reversible[bytes], key: bytes) -> list[int]:
    """Where `key` stands among `entries` (oldest first), counted from the newest (0), ascending."""
    return [position for position, entry in enumerate(reversed(entries)) if entry == key]


def check_kinds(repeats: Sequence[Repeat]) -> None:
    """Refuse (ValueError) a repeat whose kind is not one of `KINDS`: the stored backends keep a
    list for each of those and no other."""
    for repeat in repeats:
        if repeat.kind not in KINDS:
            raise ValueError(f"a loop history keeps {' and '.join(KINDS)}, not {repeat.kind!r}")


@dataclass(slots=True)
class _Session:
    width: int
    lists: dict[str, deque[bytes]] = field(default_factory=dict)
    #: tool → (error key, how many times in a row), least recently stepped first
    errors: OrderedDict[str, tuple[bytes, int]] = field(default_factory=OrderedDict)
    #: tool → the rule and reason that refuse it, oldest first
    blocked: OrderedDict[str, tuple[str, str]] = field(default_factory=OrderedDict)
    #: (rule, kind) already announced
    announced: set[tuple[str, str]] = field(default_factory=set)
    seen: float = 0.0


class LoopMemory:
    """The history of one interlock process, in memory: its operations never wait (each is atomic
    on the event loop). The default; `serve --workers N` and a fleet use a shared backend."""

    def __init__(
        self, max_sessions: int = MAX_SESSIONS, idle_ttl: float = IDLE_TTL, max_tools: int = MAX_TOOLS
    ) -> None:
        self.max_sessions = max_sessions
        self.idle_ttl = idle_ttl
        self.max_tools = max_tools
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        #: Sessions forgotten for the bound or idleness (not counted: those found idle on their next call).
        self.forgotten = 0

    def __len__(self) -> int:
        return len(self._sessions)

    async def observe(
        self,
        scope: str,
        window: int,
        now: float,
        repeats: Sequence[Repeat] = (),
        streaks: Sequence[Streak] = (),
        tool: str | None = None,
    ) -> Seen:
        check_kinds(repeats)  # as the stored backends do: one contract, whichever backend runs
        session = self._session(scope, window, now)
        if tool is not None:
            blocked = session.blocked.get(tool)
            if blocked is not None:
                return Seen(blocked, [], [])
        found: list[list[int]] = []
        for repeat in repeats:
            entries = session.lists.get(repeat.kind)
            if entries is None:
                entries = session.lists[repeat.kind] = deque(maxlen=session.width)
            entries.append(repeat.key)
            # Most keys are new to the window: deque.count (C) says so without building a list.
            found.append([0] if entries.count(repeat.key) == 1 else positions(entries, repeat.key))
        lengths = [self._step(session, streak) for streak in streaks]
        return Seen(None, found, lengths)

    async def block(self, scope: str, tool: str, rule: str, reason: str, now: float) -> None:
        blocked = self._session(scope, 0, now).blocked
        blocked.pop(tool, None)
        blocked[tool] = (rule, reason)
        if len(blocked) > self.max_tools:
            blocked.popitem(last=False)

    async def announce(self, scope: str, rule: str, kind: str, now: float) -> bool:
        announced = self._session(scope, 0, now).announced
        if (rule, kind) in announced:
            return False
        announced.add((rule, kind))
        return True

    async def aclose(self) -> None:
        self._sessions.clear()

    def _step(self, session: _Session, streak: Streak) -> int:
        errors = session.errors
        previous = errors.pop(streak.tool, None)
        if streak.error is None:
            return 0
        count = previous[1] + 1 if previous is not None and previous[0] == streak.error else 1
        errors[streak.tool] = (streak.error, count)
        if len(errors) > self.max_tools:
            errors.popitem(last=False)
        return count

    def _session(self, scope: str, window: int, now: float) -> _Session:
        sessions = self._sessions
        found = sessions.get(scope)
        if found is not None and now - found.seen > self.idle_ttl:
            del sessions[scope]
            found = None
        if found is None:
            self._expire(now)
            found = sessions[scope] = _Session(max(window, 1))
        else:
            sessions.move_to_end(scope)
            if window > found.width:  # a reloaded rule looks further back
                found.width = window
                for kind, entries in found.lists.items():
                    found.lists[kind] = deque(entries, maxlen=window)
        found.seen = now
        return found

    def _expire(self, now: float) -> None:
        sessions = self._sessions
        while sessions:
            oldest = next(iter(sessions.values()))
            if len(sessions) < self.max_sessions and now - oldest.seen <= self.idle_ttl:
                break
            sessions.popitem(last=False)
            self.forgotten += 1


__all__ = [
    "IDLE_TTL",
    "KINDS",
    "MAX_SESSIONS",
    "MAX_TOOLS",
    "LoopHistory",
    "LoopMemory",
    "Repeat",
    "Seen",
    "Streak",
    "check_kinds",
    "positions",
]
