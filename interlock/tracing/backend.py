"""The `Store` interface: what the recorder, the CLI, the admin API, the UI and replay may ask of a store.

Every caller outside the store's own modules holds a `Store` (this protocol), never a connection
or SQL: the embedded SQLite implementation (`interlock.tracing.store.SQLiteStore`) and the
PostgreSQL one (`interlock.tracing.postgres.PostgresStore`) implement the same methods and pass the
same conformance suite (`tests/conformance/test_store_contract.py`). Callers get a store from
`open_store`, the one factory.

The methods are synchronous on purpose: reads already run in worker threads (the admin port shares
the proxy's event loop; see `ui/pages.py`), writes in the recorder's writer thread. A networked
backend does its I/O there too, with one connection per thread as SQLite does. Records are
`Call.to_record()` dicts; list rows are the narrow rows `LIST_COLUMNS` names (plus `LIST_EXTRAS`);
docs/store.md says what each method promises.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from interlock.core.call import Call
from interlock.tracing.chain import DEFAULT_WRITER, Report
from interlock.tracing.rows import Indexer, Record
from interlock.tracing.schema import StoreError, StoreUnavailable
from interlock.tracing.store import SQLiteStore
from interlock.tracing.writing import Rows

if TYPE_CHECKING:
    from interlock.config import Store as StoreSettings


class Store(Protocol):
    """A store of recorded calls. Thread-safe: one object is shared by the writer and readers."""

    @property
    def path(self) -> str:
        """Where it is (a file path, or a URL without its password), for messages and `stats`."""

    @property
    def writer(self) -> str:
        """Whose tamper-evident chain this store's writes extend (`chain.py`)."""

    # -- writing ---------------------------------------------------------------------------------

    def write(self, records: Sequence[Record], *, capture: str = "full", indexer: Indexer | None = None) -> int:
        """Write a batch of records in one transaction (all or none); returns how many were new
        (a record whose id is already stored is skipped, so a batch may be written again)."""

    def add(self, call: Call, *, capture: str = "full") -> None:
        """Write one call now (tests and tools)."""

    def write_rows(self, rows: Rows) -> int:
        """The recorder's batch (`writing.Rows`, built off the loop) in one transaction; how many were new."""

    def write_chunks(self, rows: Rows) -> None:
        """Only the chunks of `rows` in one transaction: a large call is written in pieces, its other
        rows last (`write_rows`), so it appears whole at that last commit."""

    def file_problem(self) -> str | None:
        """Why the store is no longer where it was opened (a file deleted or replaced), or None."""

    def reopen(self) -> None:
        """Open the store at its location again (after `file_problem`)."""

    def migrate(self) -> tuple[int, int]:
        """Bring the schema to this interlock's version; (the version found when opened, the version now)."""

    def read_only_query(self, sql: str, params: Sequence[Any], limit: int) -> list[dict[str, Any]]:
        """`interlock store query`: one read-only statement in the backend's own SQL, at most `limit` rows."""

    # -- one call --------------------------------------------------------------------------------

    def get_record(self, call_id: str) -> Record | None: ...

    def get_detail(self, call_id: str) -> tuple[Record, dict[str, Any]] | None:
        """The record and its stored row (the record plus `capture`, `size`, `attempt_count`, `response_message`)."""

    def get_call(self, call_id: str) -> Call | None: ...

    def call_row(self, call_id: str) -> dict[str, Any] | None: ...

    def resolve_id(self, prefix: str) -> str | None:
        """The id that starts with `prefix`, if exactly one does."""

    def neighbours(self, call_id: str, session: str | None) -> dict[str, Any]:
        """`{"prev", "next", "position", "total"}` of a call in its session (all None without one)."""

    def call_parts(self, ids: Sequence[str], *, bodies: bool = False) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """Per call id: its `attempts` (upstream, url, model, started_ms, duration_ms, ttfb_ms, status,
        error, backoff_ms), its `decisions` and `findings` (decoded), and with `bodies` its `body`
        (a one-element list: response_headers, response_body, response_message as stored)."""

    # -- lists -----------------------------------------------------------------------------------

    def iter_calls(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        session: str | None = None,
        agent: str | None = None,
        route: str | None = None,
    ) -> Iterator[Call]:
        """Full calls matching the filters, oldest first, read in pages (memory stays flat)."""

    def list_calls(
        self,
        *,
        session: str | None = None,
        agent: str | None = None,
        route: str | None = None,
        outcome: str | None = None,
        model: str | None = None,
        trace_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        q: str | None = None,
        limit: int = 50,
        before: str | None = None,
        after: str | None = None,
        workflow: str | None = None,
    ) -> list[dict[str, Any]]:
        """Narrow rows newest first (`before=<id>` pages on); with `after`, oldest first. `q` is a
        full-text search; a malformed one raises StoreError."""

    def session_calls(self, session: str, *, limit: int = 500, offset: int = 0) -> list[dict[str, Any]]: ...

    def written_since(self, seq: int | None, *, limit: int = 500) -> tuple[list[dict[str, Any]], int]:
        """Calls written after write position `seq`, in write order, and the new position."""

    def count_calls(self, **filters: Any) -> int: ...

    def filter_choices(self, *, limit: int = 500) -> dict[str, list[str]]:
        """The distinct `agents` and `routes` seen (sorted, at most `limit` each), for filter menus."""

    # -- sessions and agents ---------------------------------------------------------------------

    def sessions(
        self,
        *,
        agent: str | None = None,
        route: str | None = None,
        outcome: str | None = None,
        since: float | None = None,
        until: float | None = None,
        active_since: float | None = None,
        q: str | None = None,
        limit: int = 50,
        offset: int = 0,
        order: str = "recent",
    ) -> list[dict[str, Any]]:
        """Session summaries, most recently active first (`order="cost"`: costliest first), a page
        of them; each with `cost_usd` (the sum of its calls' costs) and `unpriced` (calls without a price)."""

    def session_summary(self, session: str) -> dict[str, Any] | None: ...

    def session(self, session: str, *, limit: int = 1000) -> dict[str, Any] | None: ...

    def agents(self) -> list[dict[str, Any]]:
        """Every agent seen: `agent`, `calls`, `sessions`, `last_at`, `problems`, `cost_usd`."""

    # -- workflows (docs/workflows.md) -----------------------------------------------------------

    def workflows(
        self,
        *,
        agent: str | None = None,
        since: float | None = None,
        until: float | None = None,
        active_since: float | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Workflow summaries (a `sessions` row's fields, keyed `workflow`), most recently active first."""

    def workflow_summary(self, workflow: str) -> dict[str, Any] | None: ...

    def workflow_calls(self, workflow: str, *, limit: int = 2000) -> list[dict[str, Any]]:
        """A workflow's narrow rows in start order, plus `parent_span_id` and `findings` (a count)."""

    def call_texts(self, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """Per call id: (request text, response text), as the full-text index holds them."""

    def stats(self) -> dict[str, Any]:
        """`calls`, `outcomes`, `sessions`, `oldest`, `newest`, `bytes`, `bytes_used`, `schema_version`."""

    @property
    def schema_version(self) -> int: ...

    # -- retention and moving calls --------------------------------------------------------------

    def used_bytes(self) -> int: ...

    def prune(
        self, *, max_age: float | None = None, max_size: int | None = None, now: float | None = None, chunk: int = 500
    ) -> int:
        """Delete calls older than `max_age` seconds, then the oldest while over `max_size` bytes."""

    def delete(self, ids: Sequence[str]) -> int:
        """Delete these calls and everything recorded with them; returns how many were stored."""

    def export(
        self,
        dest_path: str | os.PathLike[str],
        *,
        session: str | None = None,
        since: float | None = None,
        until: float | None = None,
        agent: str | None = None,
        workflow: str | None = None,
    ) -> int:
        """Write the matching calls to a bundle (a self-contained SQLite file, whatever the backend)."""

    def import_from(self, path: str | os.PathLike[str]) -> int:
        """Add the calls of a bundle; ids already stored are skipped. Returns how many were new."""

    # -- pinned MCP tool contracts (docs/mcp.md; rows are `tracing.pins.PIN_COLUMNS`) -------------

    def mcp_pins(self, route: str | None = None) -> list[dict[str, Any]]:
        """Pin rows of one route (or all), ordered by route and tool; none before the first pin."""

    def save_mcp_pins(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert or replace pin rows, all or none."""

    def approve_mcp_pins(self, route: str, tool: str | None = None, *, now: float | None = None) -> list[str]:
        """Pin the listed definition of the route's flagged tools (or one); returns the tools approved."""

    # -- the kill switch (docs/policies.md "Kill switch"; rows are `tracing.stops.STOP_COLUMNS`) ---

    def stops(self) -> list[dict[str, Any]]:
        """Every stopped session and agent, oldest stop first; none before the first stop."""

    def set_stop(self, kind: str, name: str, reason: str, stopped_at: float) -> None:
        """Stop a session or an agent (`kind`), or restate its reason."""

    def clear_stop(self, kind: str, name: str) -> bool:
        """Resume a session or an agent; False when it was not stopped."""

    # -- tamper evidence and audit ---------------------------------------------------------------

    def verify_chain(self, anchors: Mapping[str, Mapping[int, str]] | None = None) -> Report:
        """Walk every writer's chain from its checkpoint, recomputing each call's link from its
        stored rows; the report names the altered, deleted and inserted calls (docs/audit.md).
        `anchors` (writer → position → hash, kept outside the store) catch a rewritten or cut chain."""

    def audit_calls(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        agent: str | None = None,
        session: str | None = None,
        workflow: str | None = None,
        route: str | None = None,
        model: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Calls matching the filters, oldest first (by `started_at`, then id), read in pages: `id`,
        `started_at`, `agent`, `session`, `workflow`, `route`, `protocol`, `model`, `outcome`,
        `status`, `error_code`, `stream`, `meta` (decoded), `decisions` and `findings` (decoded;
        findings without `value`), `response_message` (JSON text), `response_body`,
        `response_headers` (as stored). What `tracing/audit.py` builds the audit trail from."""

    def chain_heads(self) -> list[dict[str, Any]]:
        """Per writer: `writer`, `pos` and `hash` of its last link (to anchor outside the store),
        `checkpoint_pos` and `pruned` (calls folded into its checkpoint)."""

    # -- lifetime --------------------------------------------------------------------------------

    def close(self) -> None: ...

    def __enter__(self) -> Store: ...

    def __exit__(self, *_: object) -> None: ...


def open_store(target: StoreSettings | str | os.PathLike[str], *, readonly: bool = False) -> Store:
    """The store `target` names: the `store:` settings, a file path, or a URL (`sqlite:///path`,
    `postgresql://user@host:5432/db`).

    The one factory: every caller opens its store here, so a new backend is one branch (its URL
    scheme). A scheme no backend handles is a StoreError that names it (never the URL's password).
    A database server that cannot be reached is a `StoreUnavailable` saying why."""
    location = str(getattr(target, "url", None) or getattr(target, "path", target))
    scheme = urlsplit(location).scheme if "://" in location else ""
    if scheme == "sqlite":
        location = location[len("sqlite://") :]
    elif scheme in ("postgresql", "postgres"):
        # Imported here: psycopg is the `fleet` extra, and an embedded interlock never loads it.
        try:
            from interlock.tracing.postgres import PostgresStore
        except ImportError as exc:  # pragma: no cover - the fleet extra not installed
            raise StoreError(f"{scheme}:// needs the fleet extra (pip install 'interlock[fleet]'): {exc}") from None
        pool_size, timeout = getattr(target, "pool_size", 8), getattr(target, "connect_timeout", 5.0)
        writer = getattr(target, "writer", None) or DEFAULT_WRITER
        return PostgresStore(location, readonly=readonly, pool_size=pool_size, connect_timeout=timeout, writer=writer)
    elif scheme:
        raise StoreError(
            f"{location.split('@')[-1]}: no store backend for {scheme}:// (this interlock has sqlite, postgresql)"
        )
    return SQLiteStore(location, readonly=readonly, writer=getattr(target, "writer", None) or DEFAULT_WRITER)


__all__ = ["Store", "StoreError", "StoreUnavailable", "open_store"]
