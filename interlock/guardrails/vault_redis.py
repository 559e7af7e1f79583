"""`RedisVault`: the `Vault` interface on Redis, so a session's turn 2 on replica B restores the
placeholders its turn 1 got on replica A (docs/guardrails.md, "A shared vault").

Per session, under `<key_prefix>v:<session>:`, refreshed to `state.vault_ttl` on every use:

- `p`: placeholder → 16-byte HMAC of (entity, value) + AES-256-GCM(value) (nonce first): values are
  encrypted at rest, with the session and the entity as associated data, so a blob copied to another
  session or entity does not decrypt;
- `h`: that HMAC → placeholder, to find a value's placeholder without storing or comparing the value;
- `n`: entity → the last number issued (and `#seq`, a use counter); `o`: placeholders by last use, so
  past `guardrails.vault_values` the least recently used goes first, as in the embedded vault.

Numbers are issued only inside Redis, by the `open` script (`reserve`): two replicas can never hand
out one placeholder for two values. `commit` writes what a call issued locally (values it did not
reserve) and refuses, with `VaultConflict`, a placeholder another replica has meanwhile issued for
another value. The keys (HKDF-SHA256 of `state.vault_key`) never leave this process; Redis sees only
HMACs, ciphertexts and placeholder names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from interlock.config import State
from interlock.core.redisstate import StateClient
from interlock.guardrails.vault import SessionVault, VaultConflict
from interlock.guardrails.vault_crypto import MAC_BYTES, VaultCipher
from interlock.guardrails.vault_crypto import parse_placeholder as _parse

# Past `limit` values, the least recently used go (with their HMACs); the session lives `ttl` more.
_TRIM = """
while redis.call('ZCARD', o) > limit do
  local old = redis.call('ZPOPMIN', o)[1]
  local entry = redis.call('HGET', p, old)
  if entry then redis.call('HDEL', h, string.sub(entry, 1, MAC_BYTES)) end
  redis.call('HDEL', p, old)
end
for _, key in ipairs({p, h, n, o}) do redis.call('PEXPIRE', key, ttl) end
"""

# ARGV: prefix of the session's keys, ttl ms, limit, create (1/0), then (entity, mac, blob) triples.
# Returns nil (no such session, create 0) or {{placeholder, blob, ...} by use, oldest first,
# {entity, last number, ...}}.
_OPEN = """
local k, ttl, limit, create = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local p, h, n, o = k .. 'p', k .. 'h', k .. 'n', k .. 'o'
if create ~= '1' and redis.call('EXISTS', n) == 0 then return false end
local function use(ph) redis.call('ZADD', o, redis.call('HINCRBY', n, '#seq', 1), ph) end
for i = 5, #ARGV, 3 do
  local entity, mac, blob = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local ph = redis.call('HGET', h, mac)
  if not ph then
    ph = '<' .. entity .. '_' .. redis.call('HINCRBY', n, entity, 1) .. '>'
    redis.call('HSET', h, mac, ph)
    redis.call('HSET', p, ph, mac .. blob)
  end
  use(ph)
end
if redis.call('EXISTS', n) == 0 then redis.call('HSET', n, '#seq', 0) end
TRIM
local out = {}
local order = redis.call('ZRANGE', o, 0, -1)
local blobs = #order > 0 and redis.call('HMGET', p, unpack(order)) or {}
for i, ph in ipairs(order) do
  if blobs[i] then table.insert(out, ph); table.insert(out, string.sub(blobs[i], MAC_BYTES + 1)) end
end
return {out, redis.call('HGETALL', n)}
""".replace("TRIM", _TRIM).replace("MAC_BYTES", str(MAC_BYTES))

# ARGV: prefix, ttl ms, limit, then (entity, number, placeholder, mac, blob). Returns the first
# placeholder that conflicts, or ''.
_COMMIT = """
local k, ttl, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local p, h, n, o = k .. 'p', k .. 'h', k .. 'n', k .. 'o'
for i = 4, #ARGV, 5 do
  local entity, number, ph, mac, blob = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local known = redis.call('HGET', h, mac)
  if known and known ~= ph then return ph end
  if not known then
    if redis.call('HEXISTS', p, ph) == 1 then return ph end
    redis.call('HSET', h, mac, ph)
    redis.call('HSET', p, ph, mac .. blob)
    if tonumber(redis.call('HGET', n, entity) or '0') < number then redis.call('HSET', n, entity, number) end
  end
  redis.call('ZADD', o, redis.call('HINCRBY', n, '#seq', 1), ph)
end
TRIM
return ''
""".replace("TRIM", _TRIM).replace("MAC_BYTES", str(MAC_BYTES))


class RedisVault:
    """Per-session placeholder tables in Redis, values encrypted; see the module's docstring."""

    def __init__(self, client: StateClient, state: State, values: int) -> None:
        if not state.vault_key:
            # Checked at startup with the configuration (config.settings_from_document); here too,
            # for a caller building one directly: never plaintext values in a shared server.
            raise ValueError("a vault on Redis needs state.vault_key (or INTERLOCK_VAULT_KEY)")
        self.client = client
        self.prefix = client.prefix + "v:"
        self.ttl_ms = int(state.vault_ttl * 1000)
        self.limit = values
        self.cipher = VaultCipher(state.vault_key)
        self._open = client.script(_OPEN)
        self._commit = client.script(_COMMIT)

    async def open(self, session: str, *, create: bool, reserve: Sequence[tuple[str, str]] = ()) -> SessionVault | None:
        args: list[Any] = [f"{self.prefix}{session}:", self.ttl_ms, self.limit, "1" if create or reserve else "0"]
        for entity, value in dict.fromkeys(reserve):
            args += [entity, self.cipher.mac(session, entity, value), self.cipher.seal(session, entity, value)]
        found = await self._open(args)
        if found is None:
            return None
        entries, numbers = found
        table = SessionVault(self.limit)
        for i in range(0, len(entries), 2):
            placeholder = entries[i].decode()
            entity = _parse(placeholder)[0]
            table.put(entity, self.cipher.unseal(session, entity, entries[i + 1]), placeholder)
        # Local numbering goes on from the last number issued (a number issued here that another
        # replica issued meanwhile is caught by `commit`: reserve first to never need that).
        table.counters = {numbers[i].decode(): int(numbers[i + 1]) for i in range(0, len(numbers), 2)}
        table.counters.pop("#seq", None)
        table.issued = []
        return table

    async def commit(self, session: str, table: SessionVault) -> None:
        issued = table.issued
        if not issued:
            return
        args: list[Any] = [f"{self.prefix}{session}:", self.ttl_ms, self.limit]
        for entity, value, placeholder in issued:
            args += [entity, _parse(placeholder)[1], placeholder, self.cipher.mac(session, entity, value)]
            args.append(self.cipher.seal(session, entity, value))
        conflict = await self._commit(args)
        if conflict:
            raise VaultConflict(f"placeholder {conflict.decode()} was issued meanwhile for another value")
        table.issued = []

    async def aclose(self) -> None:
        await self.client.aclose()


__all__ = ["RedisVault"]
