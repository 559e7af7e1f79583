"""`interlock store query`: ad-hoc, read-only SQL over the embedded store, through sqlite-utils.

The store's own readers go through the `Store` interface (`backend.py`); this command is for a
person with a question the UI does not answer ("which agents called gpt-4o yesterday?"). It opens
the file read-only (`mode=ro`: a write statement is refused by SQLite) and prints at most `--limit`
rows: a tab-separated table, or one JSON object a line with `--json`. The schema is in docs/store.md.
"""

from __future__ import annotations

import base64
import itertools
import json
import sqlite3
from typing import Any

import click

from interlock.tracing.commands import open_store, with_store
from interlock.tracing.store import SQLiteStore


def _plain(value: Any) -> Any:
    """A BLOB (bodies, chunks) as UTF-8 text when it is, else base64."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(value).decode()
    return value


@click.group("store")
def store() -> None:
    """Ask the store directly (the embedded SQLite file)."""


@store.command("query")
@click.argument("sql")
@click.option("--param", "-p", "params", multiple=True, help="A value for the next `?` in SQL (repeatable).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1), help="At most this many rows.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@with_store
def query(
    sql: str, params: tuple[str, ...], limit: int, as_json: bool, store_path: str | None, config: str | None
) -> None:
    """Run one read-only SQL statement, e.g. `interlock store query "SELECT agent, count(*) FROM calls GROUP BY agent"`."""
    opened = open_store(store_path, config)
    try:
        if not isinstance(opened, SQLiteStore):  # pragma: no cover - the only backend today
            raise click.ClickException("store query reads the embedded SQLite store only")
        try:
            rows = list(itertools.islice(opened.db.query(sql, list(params)), limit))
        except sqlite3.Error as exc:
            raise click.ClickException(f"the query failed: {exc}") from None
    finally:
        opened.close()
    if as_json:
        for row in rows:
            click.echo(json.dumps({k: _plain(v) for k, v in row.items()}, ensure_ascii=False))
        return
    if not rows:
        click.echo("(no rows)")
        return
    click.echo("\t".join(rows[0]))
    for row in rows:
        click.echo("\t".join("" if v is None else str(_plain(v)) for v in row.values()))


__all__ = ["store"]
