"""`interlock store query` and `interlock store migrate`: a person's direct access to the store.

The store's own readers go through the `Store` interface (`backend.py`); `query` is for a person
with a question the UI does not answer ("which agents called gpt-4o yesterday?"), in the backend's
own SQL (`Store.read_only_query`): SQLite's through sqlite-utils on the file opened read-only
(`mode=ro`: a write statement is refused by SQLite), PostgreSQL's in a READ ONLY transaction. It
prints at most `--limit` rows: a tab-separated table, or one JSON object a line with `--json`. The
schema is in docs/store.md. `migrate` applies the schema migrations (`serve` does at start).
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

import click

from interlock.cli.traces import open_store, with_store
from interlock.tracing.backend import StoreError


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
    """Ask the store directly (a SQLite file or a PostgreSQL database)."""


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
    with open_store(store_path, config) as opened:
        try:
            rows = opened.read_only_query(sql, params, limit)
        except StoreError as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        for row in rows:
            click.echo(json.dumps({k: _plain(v) for k, v in row.items()}, ensure_ascii=False, default=str))
        return
    if not rows:
        click.echo("(no rows)")
        return
    click.echo("\t".join(rows[0]))
    for row in rows:
        click.echo("\t".join("" if v is None else str(_plain(v)) for v in row.values()))


@store.command("migrate")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for machines).")
@with_store
def migrate(as_json: bool, store_path: str | None, config: str | None) -> None:
    """Create the store, or bring its schema to this interlock's version (`serve` does it at start)."""
    with open_store(store_path, config, readonly=False) as opened:
        before, after = opened.migrate()
        where = opened.path
    if as_json:
        click.echo(json.dumps({"store": where, "from": before, "to": after}))
    elif before == after:
        click.echo(f"{where}: schema version {after}, nothing to do")
    else:
        click.echo(f"{where}: schema version {before} → {after}")


__all__ = ["store"]


def _anchors(given: tuple[str, ...]) -> dict[str, dict[int, str]]:
    """`WRITER:POS:HASH` values (as `verify --json` printed a head) by writer and position."""
    anchors: dict[str, dict[int, str]] = {}
    for value in given:
        writer, _, rest = value.rpartition(":")
        writer, _, pos = writer.rpartition(":")
        if not writer or not pos.isdigit() or len(rest) != 64 or any(c not in "0123456789abcdef" for c in rest):
            raise click.BadParameter(f"{value!r}: use WRITER:POS:HASH (a head `verify --json` printed)")
        anchors.setdefault(writer, {})[int(pos)] = rest
    return anchors


@store.command("verify")
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
@click.option(
    "--anchor",
    "anchors",
    multiple=True,
    help="WRITER:POS:HASH of a head recorded outside the store earlier: it must still be on the chain.",
)
@with_store
def verify(as_json: bool, anchors: tuple[str, ...], store_path: str | None, config: str | None) -> None:
    """Check the tamper-evident chain: recompute every recorded call's link from its stored rows.

    Exits 1 naming the first altered, deleted or inserted call, or an anchored head that was
    rewritten or cut off (docs/audit.md); 0 when it verifies."""
    anchored = _anchors(anchors)
    opened = open_store(store_path, config)
    try:
        report = opened.verify_chain(anchored)
        heads = opened.chain_heads()
    finally:
        opened.close()
    if as_json:
        click.echo(json.dumps({**report.as_dict(), "heads": heads}))
    else:
        for problem in report.problems:
            click.echo(f"{problem.kind}: {problem.message}")
        if report.problem_count > len(report.problems):
            click.echo(f"... {report.problem_count - len(report.problems)} more")
        for head in heads:
            click.echo(f"writer {head['writer']}: {head['pos']} links, head {head['hash']}")
        if report.unchained:
            click.echo(f"{report.unchained} calls were recorded before the chain (not covered)")
        if report.absent:
            click.echo(report.absent)
        for note in report.unanchored:
            click.echo(f"anchor not checked: {note}")
        verdict = "verifies" if report.ok else "does NOT verify"
        click.echo(f"chain {verdict}: {report.checked} calls checked, {report.problem_count} problems")
    if not report.ok:
        sys.exit(1)
