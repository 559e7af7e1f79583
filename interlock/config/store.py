"""Where state lives: the recorded calls (`store:`, a SQLite file or a database server) and the
shared state of a fleet (`state:`: limits, budgets, slots and the vault on Redis), with the
environment variables that name them (a Secret in Kubernetes wins over the file)."""

from __future__ import annotations

import os
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from interlock.config.model import Model

BOTH_LOCATIONS = "give store.path (the embedded SQLite file) or store.url (a database server), not both"


class Store(Model):
    #: Recording on or off (off: nothing is written, the admin API has no calls; for benchmarks).
    enabled: bool = True
    path: str = "./interlock.db"
    #: A database server instead of the file: `postgresql://user@host:5432/db` (docs/store.md). Or
    #: the environment's `INTERLOCK_STORE_URL`, which wins over the file's store location.
    url: str | None = None
    #: Most connections to the database server at once (the writer, the large-call and overflow
    #: writers, retention, and the admin port's readers share them).
    pool_size: int = Field(8, ge=1, le=1000)
    #: Seconds to connect to the database server, and to wait for a pooled connection.
    connect_timeout: float = Field(5.0, gt=0)
    #: `full` keeps bodies and chunks; `metadata` keeps only the narrow call row and events.
    capture: Literal["full", "metadata"] = "full"
    batch_size: int = Field(256, ge=1)
    batch_interval_ms: int = Field(50, ge=1)
    queue_size: int = Field(20000, ge=1)
    #: Retention: calls older than this many seconds are pruned (None keeps everything).
    max_age: float | None = Field(None, gt=0)
    #: Retention: prune the oldest calls while the database is larger than this many bytes.
    max_size: int | None = Field(None, gt=0)
    #: Keep raw PII at rest (only with capture `full`); off by default, the redacted form is stored.
    store_raw_pii: bool = False
    #: Most bytes of one call kept for the record, per body and per side of a stream: a stream past
    #: it keeps its head and its last 64 KB (`meta.record_cut` says what was dropped), a body its
    #: head. Bounds the proxy's memory and the writer's work for one call (docs/store.md).
    record_max_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    #: A call holding more than this many bytes is written by its own thread, its chunks in
    #: transactions of about this size, so other calls keep being written meanwhile.
    large_call_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    #: Calls kept in memory (bytes of bodies and chunks) while the store cannot be written (disk
    #: full, file gone), retried with backoff; past it, spilled to `spill_path`.
    retry_max_bytes: int = Field(256 * 1024 * 1024, ge=0)
    #: Side file for calls that could not be written (JSON lines; default `<path>.spill`), written
    #: into the store once it can be, and at the next start.
    spill_path: str | None = None
    #: Most bytes the side file may hold; calls past it are lost, counted (`lost`) and logged.
    spill_max_bytes: int = Field(1024 * 1024 * 1024, ge=0)
    #: Longest wait, in seconds, for the side file's lock (held by another thread's or process's
    #: append or replay): past it an append counts its calls lost and a replay is retried later.
    spill_lock_timeout: float = Field(5.0, gt=0)
    #: Whose tamper-evident chain this instance's writes extend (docs/audit.md; env
    #: `INTERLOCK_STORE_WRITER` when the file names none): instances sharing a fleet store each
    #: name their own so each anchors its own head; writers sharing a name share one chain, correctly.
    writer: str = Field("local", min_length=1, max_length=200)

    @field_validator("url")
    @classmethod
    def _database_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        scheme = urlsplit(url).scheme
        if scheme not in ("postgresql", "postgres"):
            raise ValueError(f"{scheme or 'a URL without a scheme'}: store.url takes postgresql://user@host:5432/db")
        return url

    @model_validator(mode="after")
    def _one_location(self) -> Store:
        if self.url is not None and "path" in self.model_fields_set:
            raise ValueError(BOTH_LOCATIONS)
        return self

    @property
    def location(self) -> str:
        """What `open_store` opens: the URL, else the file."""
        return self.url or self.path


StateFailure = Literal["fail_open", "fail_closed"]


class StateOnFailure(Model):
    """What a limit (or loop detection) does when the shared state cannot be reached (docs/policies.md, "Shared state").
    Open: the call passes, with a `limits error` decision on its record and a log line (never silent);
    closed: the call is refused with 503 `state_unavailable`. Money and token budgets default closed
    (an overspend cannot be taken back); rate and concurrency limits open (the provider enforces its
    own rate limits, and a lost minute window or slot count cannot run up a bill past the budgets)."""

    rate: StateFailure = "fail_open"
    concurrency: StateFailure = "fail_open"
    budget: StateFailure = "fail_closed"
    #: Loop detection (`loop:` rules) when the shared loop history cannot be reached. Open: each
    #: interlock counts the session's repeats on its own meanwhile (a loop within one replica is
    #: still caught; spread over k, after up to k times the repeats), an `error` decision on each
    #: call says so; closed: calls under a `loop:` rule are refused with 503 `state_unavailable`.
    loops: StateFailure = "fail_open"


class State(Model):
    """Shared state for a fleet (limits, budgets, concurrency slots, the redaction vault) on Redis or
    Valkey. Without `url`, all of it stays in this process (one replica: docs/policies.md)."""

    #: `redis://[user:password@]host:6379/0` (or `rediss://`); env `INTERLOCK_STATE_URL` when unset.
    url: str | None = None
    #: Prefix of every key interlock writes, so several fleets (or tests) can share one server.
    key_prefix: str = "interlock:"
    #: Seconds one round trip to Redis may take (connect included) before the concern's failure mode
    #: applies: a Redis that is down or stalled never hangs a call.
    timeout: float = Field(0.5, gt=0, le=30)
    on_failure: StateOnFailure = StateOnFailure()
    #: Seconds a replica's concurrency slots outlive it: each replica renews a lease every third of
    #: this; a replica that crashed stops renewing, and its slots are freed this long after.
    slot_lease: float = Field(30.0, ge=3)
    #: Seconds a session's vault lives in Redis after its last use (the embedded vault's bound is a
    #: count of sessions instead).
    vault_ttl: float = Field(86400.0, gt=0)
    #: Key for the vault's values at rest (AES-256-GCM; any string of 32+ characters, stretched by
    #: HKDF); env `INTERLOCK_VAULT_KEY` when unset. Required when guardrails run with `url` set.
    vault_key: str | None = Field(None, repr=False)

    @field_validator("url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        if url is not None and urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"{url.split(':', 1)[0]!r}: a state url is redis://, rediss:// or unix://")
        return url

    @field_validator("vault_key")
    @classmethod
    def _long_key(cls, key: str | None) -> str | None:
        if key is not None and len(key) < 32:
            raise ValueError("vault_key must be at least 32 characters (e.g. `openssl rand -base64 32`)")
        return key

    def resolved(self) -> State:
        """With the `INTERLOCK_STATE_URL` and `INTERLOCK_VAULT_KEY` environment variables applied (a
        Secret in Kubernetes; never written into interlock.yaml). The one rule for every variable that
        names a setting: set and non-empty, it wins over the file (docs/fleet.md, "Configuration")."""
        url = os.environ.get("INTERLOCK_STATE_URL") or self.url or None
        key = os.environ.get("INTERLOCK_VAULT_KEY") or self.vault_key or None
        if url == self.url and key == self.vault_key:
            return self
        return State.model_validate({**self.model_dump(), "url": url, "vault_key": key})
