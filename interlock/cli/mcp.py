"""`interlock mcp pins ls|diff|approve ROUTE [TOOL]`: the pinned MCP tool contracts in the store.

`approve` pins what the server lists now; a running interlock reads the store again before it
judges the route's next `tools/list` answer, so the approval counts from then on (docs/mcp.md).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click

from interlock.cli import load_or_exit
from interlock.cli.traces import with_store
from interlock.tracing.backend import open_store as open_backend
from interlock.tracing.pins import pin_diff


def _state(row: dict[str, Any]) -> str:
    if row["pinned_hash"] is None:
        return "new"
    return "changed" if row["pinned_hash"] != row["seen_hash"] else "pinned"


def _when(at: float | None) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ") if at else "-"


def _open(store_path: str | None, config: str | None, *, readonly: bool) -> Any:
    if store_path is None:
        store_path = load_or_exit(config).store.path
    try:
        return open_backend(store_path, readonly=readonly)
    except Exception as exc:  # StoreError, SchemaError, a file that is not SQLite
        raise click.ClickException(f"{store_path}: {exc}") from None


def _rows(store: Any, route: str | None, tool: str | None) -> list[dict[str, Any]]:
    rows = [r for r in store.mcp_pins(route) if tool is None or r["tool"] == tool]
    if route is not None and not rows:
        what = f"tool {tool!r} of route {route!r}" if tool else f"route {route!r}"
        raise click.ClickException(f"no pins for {what} (a route is pinned at its first tools/list answer)")
    return rows


@click.group("mcp")
def mcp() -> None:
    """MCP tool endpoints."""


@mcp.group("pins")
def pins() -> None:
    """Pinned MCP tool contracts: what each route's server listed first, and what changed since."""


@pins.command("ls")
@click.argument("route", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@with_store
def pins_ls(route: str | None, as_json: bool, store_path: str | None, config: str | None) -> None:
    """Each pinned tool and its state: pinned, changed (listed differently since), new (not pinned)."""
    store = _open(store_path, config, readonly=True)
    try:
        rows = _rows(store, route, None)
    finally:
        store.close()
    if as_json:
        for row in rows:
            plain = {k: row[k] for k in ("route", "tool", "pinned_hash", "seen_hash", "pinned_at", "seen_at")}
            click.echo(json.dumps({**plain, "state": _state(row)}))
        return
    if not rows:
        click.echo("(no pins)")
        return
    click.echo(f"{'ROUTE':<16} {'TOOL':<28} {'STATE':<8} {'PINNED':<21} {'LISTED':<21} HASH")
    for row in rows:
        click.echo(
            f"{row['route']:<16} {row['tool']:<28} {_state(row):<8} {_when(row['pinned_at']):<21} "
            f"{_when(row['seen_at']):<21} {row['seen_hash'][:12]}"
        )


@pins.command("diff")
@click.argument("route")
@click.argument("tool", required=False)
@with_store
def pins_diff(route: str, tool: str | None, store_path: str | None, config: str | None) -> None:
    """What changed in the route's flagged tools (or one tool): a unified diff, pinned → listed."""
    store = _open(store_path, config, readonly=True)
    try:
        rows = _rows(store, route, tool)
    finally:
        store.close()
    diffs = [pin_diff(row) for row in rows if row["pinned_hash"] != row["seen_hash"]]
    click.echo("\n".join(diffs) if diffs else "(no changes)")


@pins.command("approve")
@click.argument("route")
@click.argument("tool", required=False)
@with_store
def pins_approve(route: str, tool: str | None, store_path: str | None, config: str | None) -> None:
    """Pin what the server lists now, for the route's changed and new tools (or one tool)."""
    store = _open(store_path, config, readonly=False)
    try:
        _rows(store, route, tool)
        approved = store.approve_mcp_pins(route, tool)
    finally:
        store.close()
    click.echo(f"approved: {', '.join(approved)}" if approved else "nothing to approve")


__all__ = ["mcp"]
