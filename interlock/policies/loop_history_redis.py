"""`RedisLoopHistory`: the `LoopHistory` interface on Redis (or Valkey), shared by every interlock of a
fleet (`state: {url: redis://...}`; docs/policies.md, "Loops").

Each operation is one Lua script, so one round trip, atomic in Redis: two replicas appending to one
session at once each see the other's entry. A session (`scope`) is a few keys under
`<state.key_prefix>loop:<scope>` + U+001F + a suffix, each given `idle_ttl` to live at every touch
(Redis forgets a session nobody calls):

- `meta`: a hash with `width` (the largest window asked for) and `seq` (orders the hashes' entries);
- `tool_calls`, `requests`: lists, newest first, trimmed to `width`;
- `errors`: a hash tool → `seq count key` (the error streak), at most `max_tools`, the least recently
  stepped dropped past it; `blocked`: a hash tool → `seq` U+001F rule U+001F reason, the oldest dropped;
- `announced`: a set of rule U+001F kind.

Sessions are indexed in a sorted set (`<prefix>loops`) scored by the callers' clock: a session idle
past `idle_ttl` starts afresh, and a new session past `max_sessions` forgets the least recently seen
ones, as the in-process history does. Keys are hex digests, never the calls. A failed round trip
raises `StateUnavailable` (`core/redisstate.py`); the stage applies `state.on_failure.loops`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from interlock.core.redisstate import StateClient
from interlock.policies.loop_history import IDLE_TTL, MAX_SESSIONS, MAX_TOOLS, Repeat, Seen, Streak, check_kinds

SEP = "\x1f"

# ARGV of every script: prefix, scope, now, idle ttl, max sessions, max tools; then the script's own.
_LUA_SESSION = """
local prefix, scope, now, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local max_sessions, max_tools = tonumber(ARGV[5]), tonumber(ARGV[6])
local SUFFIXES = {'meta', 'tool_calls', 'requests', 'errors', 'blocked', 'announced'}
local index = prefix .. 'loops'
local function base(s) return prefix .. 'loop:' .. s .. '\\31' end
local function forget(s)
  local b = base(s)
  for _, suffix in ipairs(SUFFIXES) do redis.call('DEL', b .. suffix) end
  redis.call('ZREM', index, s)
end
-- The session, afresh when idle past the TTL; a new one makes room (idle sessions, then the least
-- recently seen past the bound).
local function touch(s)
  local last = redis.call('ZSCORE', index, s)
  if last and now - tonumber(last) > ttl then
    forget(s)
    last = false
  end
  if not last then
    for _, old in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', '(' .. (now - ttl), 'LIMIT', 0, 64)) do
      forget(old)
    end
    local over = redis.call('ZCARD', index) - max_sessions + 1
    if over > 0 then
      for _, old in ipairs(redis.call('ZRANGE', index, 0, over - 1)) do forget(old) end
    end
  end
  redis.call('ZADD', index, 'GT', now, s)
  return base(s)
end
local function keep(b)
  local seconds = math.ceil(ttl)
  for _, suffix in ipairs(SUFFIXES) do redis.call('EXPIRE', b .. suffix, seconds) end
  redis.call('EXPIRE', index, seconds)
end
-- Past `max_tools`, drop the hash's entry with the lowest sequence number (its value's first number).
local function bound(hash)
  if redis.call('HLEN', hash) <= max_tools then return end
  local oldest, lowest = nil, nil
  local fields = redis.call('HGETALL', hash)
  for i = 1, #fields, 2 do
    local seq = tonumber(string.match(fields[i + 1], '^(%d+)'))
    if lowest == nil or seq < lowest then oldest, lowest = fields[i], seq end
  end
  redis.call('HDEL', hash, oldest)
end
"""

# Then: window, the asked tool ('' for none), the repeats (kind, key) and the streaks (tool, key or
# '' for a success), each list led by its length.
_LUA_OBSERVE = """
local b = touch(scope)
local width = math.max(tonumber(ARGV[7]), tonumber(redis.call('HGET', b .. 'meta', 'width') or '0'))
redis.call('HSET', b .. 'meta', 'width', width)
local asked = ARGV[8]
if asked ~= '' then
  local blocked = redis.call('HGET', b .. 'blocked', asked)
  if blocked then
    keep(b)
    return {blocked, {}, {}}
  end
end
local i = 9
local repeats = {}
for r = 1, tonumber(ARGV[i]) do
  local list, key = b .. ARGV[i + 1], ARGV[i + 2]
  i = i + 2
  redis.call('LPUSH', list, key)
  redis.call('LTRIM', list, 0, width - 1)
  local found = {}
  for position, entry in ipairs(redis.call('LRANGE', list, 0, -1)) do
    if entry == key then found[#found + 1] = position - 1 end
  end
  repeats[r] = found
end
i = i + 1
local streaks = {}
local errors = b .. 'errors'
for s = 1, tonumber(ARGV[i]) do
  local tool, key = ARGV[i + 1], ARGV[i + 2]
  i = i + 2
  if key == '' then
    redis.call('HDEL', errors, tool)
    streaks[s] = 0
  else
    local count = 1
    local previous = redis.call('HGET', errors, tool)
    if previous then
      local before, same = string.match(previous, '^%d+ (%d+) (.*)$')
      if same == key then count = tonumber(before) + 1 end
    end
    local seq = redis.call('HINCRBY', b .. 'meta', 'seq', 1)
    redis.call('HSET', errors, tool, seq .. ' ' .. count .. ' ' .. key)
    bound(errors)
    streaks[s] = count
  end
end
keep(b)
return {false, repeats, streaks}
"""

# Then: tool, rule, reason.
_LUA_BLOCK = """
local b = touch(scope)
local seq = redis.call('HINCRBY', b .. 'meta', 'seq', 1)
redis.call('HSET', b .. 'blocked', ARGV[7], seq .. '\\31' .. ARGV[8] .. '\\31' .. ARGV[9])
bound(b .. 'blocked')
keep(b)
return 1
"""

# Then: rule, kind.
_LUA_ANNOUNCE = """
local b = touch(scope)
local added = redis.call('SADD', b .. 'announced', ARGV[7] .. '\\31' .. ARGV[8])
keep(b)
return added
"""


class RedisLoopHistory:
    """Loop histories on Redis, shared by a fleet; see the module's docstring."""

    def __init__(
        self,
        client: StateClient,
        max_sessions: int = MAX_SESSIONS,
        idle_ttl: float = IDLE_TTL,
        max_tools: int = MAX_TOOLS,
    ) -> None:
        self.client = client
        self.max_sessions = max_sessions
        self.idle_ttl = idle_ttl
        self.max_tools = max_tools
        self._observe = client.script(_LUA_SESSION + _LUA_OBSERVE)
        self._block = client.script(_LUA_SESSION + _LUA_BLOCK)
        self._announce = client.script(_LUA_SESSION + _LUA_ANNOUNCE)

    def _args(self, scope: str, now: float) -> list[Any]:
        # The TTL at least a second: EXPIRE takes whole seconds.
        ttl = max(1.0, self.idle_ttl)
        return [self.client.prefix, scope, repr(now), repr(ttl), self.max_sessions, self.max_tools]

    async def observe(
        self,
        scope: str,
        window: int,
        now: float,
        repeats: Sequence[Repeat] = (),
        streaks: Sequence[Streak] = (),
        tool: str | None = None,
    ) -> Seen:
        check_kinds(repeats)
        args = [*self._args(scope, now), window, tool or "", len(repeats)]
        for repeat in repeats:
            args += [repeat.kind, repeat.key.hex()]
        args.append(len(streaks))
        for streak in streaks:
            args += [streak.tool, "" if streak.error is None else streak.error.hex()]
        blocked, found, lengths = await self._observe(args)
        if blocked is not None:
            _, rule, reason = bytes(blocked).decode("utf-8", "replace").split(SEP, 2)
            return Seen((rule, reason), [], [])
        return Seen(None, [[int(p) for p in positions] for positions in found], [int(n) for n in lengths])

    async def block(self, scope: str, tool: str, rule: str, reason: str, now: float) -> None:
        await self._block([*self._args(scope, now), tool, rule, reason])

    async def announce(self, scope: str, rule: str, kind: str, now: float) -> bool:
        return bool(await self._announce([*self._args(scope, now), rule, kind]))

    async def aclose(self) -> None:
        await self.client.aclose()


__all__ = ["RedisLoopHistory"]
