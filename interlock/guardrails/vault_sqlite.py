"""`SqliteVault`: the `Vault` interface in the store's SQLite file, shared by the worker processes of
`interlock serve --workers N` on one host when there is no Redis (`state.url`).

The same design as the Redis vault (`vault_redis.py`), with a `BEGIN IMMEDIATE` transaction where
Redis runs a script: placeholders are numbered inside the transaction (`reserve`), so two workers
never hand out one placeholder for two values; values are encrypted (`vault_crypto.py`) with
`state.vault_key`, or, without one, with a key the supervisor draws at start and hands to its
workers in memory only (never written: a restart leaves the old values unreadable, which is what
the embedded vault's restart does too; such entries are skipped). A session keeps at most
`vault_values` values (least recently used out first) and is forgotten `state.vault_ttl` seconds
after its last use. Transactions run in a thread of each worker, never on its event loop.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag

from interlock.core.sqlite_state import SqliteState
from interlock.guardrails.vault import SessionVault, VaultConflict
from interlock.guardrails.vault_crypto import VaultCipher, parse_placeholder

log = logging.getLogger("interlock.guardrails")

#: Every this many opens (per worker), sessions past their TTL are deleted.
SWEEP_EVERY = 1024

Entry = tuple[str, str, bytes, bytes]  # entity, placeholder, mac, blob


class SqliteVault(SqliteState):
    """Per-session placeholder tables in SQLite, values encrypted; see the module's docstring."""

    def __init__(self, path: str, secret: str, values: int, ttl: float) -> None:
        super().__init__(path, "the vault", "vault")
        self.cipher = VaultCipher(secret)
        self.limit = values
        self.ttl = ttl
        self._opens = 0

    async def open(self, session: str, *, create: bool, reserve: Sequence[tuple[str, str]] = ()) -> SessionVault | None:
        wanted = [
            (entity, self.cipher.mac(session, entity, value), self.cipher.seal(session, entity, value))
            for entity, value in dict.fromkeys(reserve)
        ]
        self._opens += 1
        sweep = self._opens % SWEEP_EVERY == 1

        def work(db: sqlite3.Connection) -> tuple[list[tuple[str, bytes]], dict[str, int]] | None:
            now = time.time()
            if sweep:
                _sweep(db, now - self.ttl)
            known = db.execute("SELECT 1 FROM vault_sessions WHERE session = ?", (session,)).fetchone()
            if known is None and not (create or wanted):
                return None
            db.execute(
                "INSERT INTO vault_sessions (session, touched) VALUES (?, ?)"
                " ON CONFLICT (session) DO UPDATE SET touched = excluded.touched",
                (session, now),
            )
            for entity, mac, blob in wanted:
                found = db.execute(
                    "SELECT placeholder FROM vault_values WHERE session = ? AND mac = ?", (session, mac)
                ).fetchone()
                if found is not None:
                    _use(db, session, found[0])
                    continue
                (number,) = db.execute(
                    "INSERT INTO vault_numbers (session, entity, n) VALUES (?, ?, 1)"
                    " ON CONFLICT (session, entity) DO UPDATE SET n = n + 1 RETURNING n",
                    (session, entity),
                ).fetchone()
                placeholder = f"<{entity}_{number}>"
                db.execute(
                    "INSERT INTO vault_values (session, placeholder, mac, blob, used) VALUES (?, ?, ?, ?, 0)",
                    (session, placeholder, mac, blob),
                )
                _use(db, session, placeholder)
            _trim(db, session, self.limit)
            rows = db.execute(
                "SELECT placeholder, blob FROM vault_values WHERE session = ? ORDER BY used", (session,)
            ).fetchall()
            numbers = dict(db.execute("SELECT entity, n FROM vault_numbers WHERE session = ?", (session,)))
            return rows, numbers

        found = await self._run(work)
        if found is None:
            return None
        rows, numbers = found
        table = SessionVault(self.limit)
        for placeholder, blob in rows:
            entity = parse_placeholder(placeholder)[0]
            try:
                table.put(entity, self.cipher.unseal(session, entity, blob), placeholder)
            except InvalidTag:  # written under another key (an earlier run's): unreadable, skipped
                continue
        table.counters = numbers
        table.issued = []
        return table

    async def commit(self, session: str, table: SessionVault) -> None:
        issued = table.issued
        if not issued:
            return
        entries = [
            (entity, placeholder, self.cipher.mac(session, entity, value), self.cipher.seal(session, entity, value))
            for entity, value, placeholder in issued
        ]

        def work(db: sqlite3.Connection) -> str | None:
            for entity, placeholder, mac, blob in entries:
                known = db.execute(
                    "SELECT placeholder FROM vault_values WHERE session = ? AND mac = ?", (session, mac)
                ).fetchone()
                if known is not None and known[0] != placeholder:
                    return placeholder
                if known is None:
                    taken = db.execute(
                        "SELECT 1 FROM vault_values WHERE session = ? AND placeholder = ?", (session, placeholder)
                    ).fetchone()
                    if taken is not None:
                        return placeholder
                    db.execute(
                        "INSERT INTO vault_values (session, placeholder, mac, blob, used) VALUES (?, ?, ?, ?, 0)",
                        (session, placeholder, mac, blob),
                    )
                    db.execute(
                        "INSERT INTO vault_numbers (session, entity, n) VALUES (?, ?, ?)"
                        " ON CONFLICT (session, entity) DO UPDATE SET n = max(n, excluded.n)",
                        (session, entity, parse_placeholder(placeholder)[1]),
                    )
                    db.execute(
                        "INSERT INTO vault_sessions (session, touched) VALUES (?, ?)"
                        " ON CONFLICT (session) DO UPDATE SET touched = excluded.touched",
                        (session, time.time()),
                    )
                _use(db, session, placeholder)
            _trim(db, session, self.limit)
            return None

        conflict = await self._run(work)
        if conflict is not None:
            raise VaultConflict(f"placeholder {conflict} was issued meanwhile for another value")
        table.issued = []


def _use(db: sqlite3.Connection, session: str, placeholder: str) -> None:
    """Mark a value the session's most recently used (the order `_trim` evicts by)."""
    (seq,) = db.execute(
        "UPDATE vault_sessions SET seq = seq + 1 WHERE session = ? RETURNING seq", (session,)
    ).fetchone()
    db.execute("UPDATE vault_values SET used = ? WHERE session = ? AND placeholder = ?", (seq, session, placeholder))


def _trim(db: sqlite3.Connection, session: str, limit: int) -> None:
    db.execute(
        "DELETE FROM vault_values WHERE session = ? AND placeholder NOT IN"
        " (SELECT placeholder FROM vault_values WHERE session = ? ORDER BY used DESC LIMIT ?)",
        (session, session, limit),
    )


def _sweep(db: sqlite3.Connection, before: float) -> None:
    """Forget the sessions unused since `before` (the TTL)."""
    old = [session for (session,) in db.execute("SELECT session FROM vault_sessions WHERE touched < ?", (before,))]
    for table in ("vault_values", "vault_numbers", "vault_sessions"):
        db.executemany(f"DELETE FROM {table} WHERE session = ?", [(s,) for s in old])


__all__ = ["SqliteVault"]
