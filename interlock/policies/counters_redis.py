"""`RedisCounters`: the `Counters` interface on Redis (or Valkey), shared by every interlock of a
fleet (`state: {url: redis://...}`; docs/policies.md, "Shared state").

Each operation is one Lua script, so one round trip, atomic in Redis: no other replica's add lands
between an admission's reads and its adds. The counters keep the embedded ones' meaning:

- a sliding minute (`m:`): a sorted set of entries scored by the callers' time (members
  `<unique id>:amount`, the id made by the replica: no round trip of its own) and a running total (`:t`), expired as the embedded window is, entries a minute old
  dropped, so a check is O(entries expiring), not O(entries);
- a gauge (`n:`, calls in flight): a hash of counts per replica. Each replica renews a lease key
  (`lease:<id>`, `state.slot_lease` seconds) every third of it; a count whose replica's lease is gone
  (it crashed, or was killed before releasing its slots) is dropped by the next script that reads it;
- a day (`d:<day>:`): a hash with `tokens` and `usd`, expired 8 days after its last add (the embedded
  table keeps a week);
- a session's life (`l:`, run caps): a hash of sums and `age`'s first-add time, expired `LIFE_IDLE`
  after its last add.

Keys and values are the callers' (rule, subject, metric) joined by U+001F under `state.key_prefix`;
the callers' `now` decides windows and days, so replicas should keep their clocks in sync (NTP: a
skew of a second moves a minute window by a second). A failed round trip raises `StateUnavailable`;
the limiter applies the concern's failure mode (`state.on_failure`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from interlock.core.redisstate import StateClient
from interlock.core.state import StateUnavailable
from interlock.core.tasks import cancel_and_wait
from interlock.policies.counters import (
    LIFE_IDLE,
    WINDOW,
    Add,
    Check,
    Counter,
    Over,
    seconds_to_midnight,
    today,
)

log = logging.getLogger("interlock.state")

SEP = "\x1f"
#: Seconds a day counter outlives its last add (the embedded store keeps a week of them).
DAY_TTL = 8 * 86400

# The shared part of both scripts. ARGV: prefix, now, window, replica id, lease ms, then the checks
# (kind, key, field, limit, enforce) and the adds (kind, key, field, amount), each list led by its length.
_LUA_COMMON = """
local prefix, now, window, me, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
local function minute_total(key)
  local total = tonumber(redis.call('GET', key .. ':t') or '0')
  local cutoff = now - window
  local old = redis.call('ZRANGEBYSCORE', key, '-inf', cutoff)
  if #old > 0 then
    for _, member in ipairs(old) do total = total - tonumber(string.match(member, ':(.*)$')) end
    redis.call('ZREMRANGEBYSCORE', key, '-inf', cutoff)
    if redis.call('ZCARD', key) == 0 then
      total = 0  -- no drift from float sums
      redis.call('DEL', key .. ':t')
    else
      redis.call('SET', key .. ':t', tostring(total), 'KEEPTTL')
    end
  end
  return total
end
local function gauge_total(key)
  local fields = redis.call('HGETALL', key)
  local total = 0
  for i = 1, #fields, 2 do
    local replica, count = fields[i], tonumber(fields[i + 1])
    if replica ~= me and redis.call('EXISTS', prefix .. 'lease:' .. replica) == 0 then
      redis.call('HDEL', key, replica)  -- that replica is gone: its slots with it
    else
      total = total + count
    end
  end
  return total
end
local function value(kind, key, field)
  if kind == 'm' then return minute_total(key) end
  if kind == 'n' then return gauge_total(key) end
  if kind == 'l' then
    local stored = redis.call('HGET', key, field)
    if not stored then return 0 end
    if field == 'age' then return math.max(0, now - tonumber(stored)) end
    return tonumber(stored)
  end
  return tonumber(redis.call('HGET', key, field) or '0')
end
local function apply(kind, key, field, amount)
  if kind == 'm' then
    if amount ~= 0 then
      redis.call('ZADD', key, now, field .. ':' .. tostring(amount))  -- field: the add's unique id
      redis.call('INCRBYFLOAT', key .. ':t', tostring(amount))
      redis.call('EXPIRE', key, math.ceil(window) * 2)
      redis.call('EXPIRE', key .. ':t', math.ceil(window) * 2)
    end
  elseif kind == 'n' then
    redis.call('SET', prefix .. 'lease:' .. me, '1', 'PX', lease)
    local left = redis.call('HINCRBYFLOAT', key, me, tostring(amount))
    if tonumber(left) <= 0 then redis.call('HDEL', key, me) end
    redis.call('SADD', prefix .. 'gauges', key)
  elseif kind == 'l' then
    if field == 'age' then redis.call('HSETNX', key, field, tostring(now))  -- the clock starts once
    else redis.call('HINCRBYFLOAT', key, field, tostring(amount)) end
    redis.call('EXPIRE', key, LIFE_TTL)
  elseif amount ~= 0 then
    redis.call('HINCRBYFLOAT', key, field, tostring(amount))
    redis.call('EXPIRE', key, DAY_TTL)
    local index = prefix .. 'days:' .. string.sub(key, #prefix + 3, #prefix + 12)
    redis.call('SADD', index, key)
    redis.call('EXPIRE', index, DAY_TTL)
  end
end
local function apply_adds(at)
  local n = tonumber(ARGV[at])
  for i = 0, n - 1 do
    local base = at + 1 + i * 4
    apply(ARGV[base], ARGV[base + 1], ARGV[base + 2], tonumber(ARGV[base + 3]))
  end
end
""".replace("DAY_TTL", str(DAY_TTL)).replace("LIFE_TTL", str(int(LIFE_IDLE)))

# Returns {position, value, seconds} for each check at or over its limit (seconds: a minute window's
# wait; 0 elsewhere, worked out by the caller), the adds applied unless an enforced one is over.
_ADMIT = (
    _LUA_COMMON
    + """
local checks = tonumber(ARGV[6])
local over, stop = {}, false
for i = 0, checks - 1 do
  local base = 7 + i * 5
  local kind, key, field, limit = ARGV[base], ARGV[base + 1], ARGV[base + 2], tonumber(ARGV[base + 3])
  local v = value(kind, key, field)
  if v >= limit then
    local wait = 0
    if kind == 'm' then
      wait = 1
      local total = v
      local entries = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
      for j = 1, #entries, 2 do
        total = total - tonumber(string.match(entries[j], ':(.*)$'))
        if total < limit then
          wait = math.max(1, math.ceil(tonumber(entries[j + 1]) + window - now))
          break
        end
      end
    end
    table.insert(over, {i, tostring(v), wait})
    if ARGV[base + 4] == '1' then stop = true end
  end
end
if not stop then apply_adds(7 + checks * 5) end
return over
"""
)

_ADD = _LUA_COMMON + "\napply_adds(6)\nreturn 0\n"

# Each counter's value, as a check reads it. ARGV after the head: the count, then (kind, key, field) each.
_READ = (
    _LUA_COMMON
    + """
local out = {}
for i = 0, tonumber(ARGV[6]) - 1 do
  local base = 7 + i * 3
  table.insert(out, tostring(value(ARGV[base], ARGV[base + 1], ARGV[base + 2])))
end
return out
"""
)

# The gauges (with live replicas) and today's day counters: {key, value...} flattened.
_SNAPSHOT = (
    _LUA_COMMON
    + """
local out = {}
for _, key in ipairs(redis.call('SMEMBERS', prefix .. 'gauges')) do
  local v = gauge_total(key)
  if v > 0 then table.insert(out, key); table.insert(out, tostring(v)) else redis.call('SREM', prefix .. 'gauges', key) end
end
table.insert(out, '')
for _, key in ipairs(redis.call('SMEMBERS', prefix .. 'days:' .. ARGV[6])) do
  local fields = redis.call('HGETALL', key)
  table.insert(out, key)
  table.insert(out, tostring(#fields / 2))
  for _, f in ipairs(fields) do table.insert(out, f) end
end
return out
"""
)


class RedisCounters:
    """Counters in Redis, under `<key_prefix>c:`; see the module's docstring."""

    def __init__(self, client: StateClient, slot_lease: float = 30.0) -> None:
        self.client = client
        self.prefix = client.prefix + "c:"
        self.replica = uuid.uuid4().hex[:16]
        self.lease = slot_lease
        self._admit = client.script(_ADMIT)
        self._add = client.script(_ADD)
        self._snapshot = client.script(_SNAPSHOT)
        self._read = client.script(_READ)
        self._renewer: asyncio.Task[None] | None = None
        self._sequence = itertools.count()

    def key(self, counter: Counter, now: float) -> tuple[str, str, str]:
        """(kind, key, field) of a counter in the scripts' terms."""
        name = SEP.join((*counter.scope, counter.metric))
        if counter.window == "minute":
            return "m", f"{self.prefix}m:{name}", ""
        if counter.window == "none":
            return "n", f"{self.prefix}n:{name}", ""
        if counter.window == "life":
            return "l", f"{self.prefix}l:{SEP.join(counter.scope)}", counter.metric
        return "d", f"{self.prefix}d:{today(now)}:{SEP.join(counter.scope)}", counter.metric

    def _head(self, now: float) -> list[Any]:
        return [self.prefix, repr(now), repr(WINDOW), self.replica, int(self.lease * 1000)]

    def _adds(self, adds: Sequence[Add], now: float) -> list[Any]:
        args: list[Any] = [len(adds)]
        for item in adds:
            kind, key, field = self.key(item.counter, now)
            if kind == "m":  # a minute entry's member: unique across the fleet (replica id, sequence)
                field = f"{self.replica}.{next(self._sequence)}"
            elif kind == "n":
                self._renew_leases()
            args += [kind, key, field, repr(float(item.amount))]
        return args

    async def admit(self, checks: Sequence[Check], adds: Sequence[Add], now: float) -> list[Over]:
        args = [*self._head(now), len(checks)]
        for check in checks:
            args += [*self.key(check.counter, now), repr(float(check.limit)), "1" if check.enforce else "0"]
        args += self._adds(adds, now)
        over = []
        for position, value, wait in await self._admit(args):
            window = checks[position].counter.window
            retry = {"minute": int(wait), "life": 0, "none": 1}.get(window, None)
            retry = seconds_to_midnight(now) if retry is None else retry
            over.append(Over(int(position), _number(value), retry))
        return over

    async def add(self, adds: Sequence[Add], now: float) -> None:
        if adds:
            await self._add([*self._head(now), *self._adds(adds, now)])

    async def read(self, counters: Sequence[Counter], now: float) -> list[float]:
        if not counters:
            return []
        args: list[Any] = [*self._head(now), len(counters)]
        for counter in counters:
            args += self.key(counter, now)
        return [_number(value) for value in await self._read(args)]

    async def snapshot(self, now: float) -> dict[str, Any]:
        flat = [_text(x) for x in await self._snapshot([*self._head(now), today(now)])]
        split = flat.index("")
        inflight: dict[str, int] = {}
        for i in range(0, split, 2):
            rule, subject, _ = flat[i][len(self.prefix) + 2 :].split(SEP)
            inflight[f"{rule} {subject}"] = int(float(flat[i + 1]))
        daily: dict[str, dict[str, Any]] = {}
        i = split + 1
        while i < len(flat):
            rule, subject = flat[i][len(self.prefix) + 2 + 11 :].split(SEP)
            count = int(flat[i + 1])
            fields = dict(zip(flat[i + 2 : i + 2 + 2 * count : 2], flat[i + 3 : i + 3 + 2 * count : 2], strict=True))
            daily[f"{rule} {subject}"] = {
                "tokens": int(float(fields.get("tokens", 0))),
                "usd": round(float(fields.get("usd", 0)), 6),
            }
            i += 2 + 2 * count
        return {"inflight": inflight, "daily": daily}

    def _renew_leases(self) -> None:
        """Keep this replica's slots alive while it runs: a task renewing its lease every third of it."""
        if self._renewer is None or self._renewer.done():
            with contextlib.suppress(RuntimeError):  # no running loop: the scripts set the lease too
                self._renewer = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        key = f"{self.prefix}lease:{self.replica}"
        while True:
            try:
                await self.client.run(lambda: self.client.redis.set(key, "1", px=int(self.lease * 1000)))
            except StateUnavailable as exc:
                log.warning("cannot renew this replica's concurrency slots: %s", exc)
            await asyncio.sleep(self.lease / 3)

    async def aclose(self) -> None:
        await cancel_and_wait(self._renewer)
        self._renewer = None
        await self.client.aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _number(value: Any) -> float:
    number = float(_text(value))
    return int(number) if number.is_integer() else number


__all__ = ["RedisCounters"]
