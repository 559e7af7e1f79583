"""`interlock sessions stop|resume|stopped` and `interlock agents stop|resume|stopped`: the kill
switch from a shell. They write the store's `stops` table (`--store`, else the configuration's);
every interlock on that store applies a stop within `kill_switch.poll_interval` (its calls in
flight ended, new ones refused) and lifts it on `resume`. The escalation webhook, when configured,
is told here (the running interlocks only apply what they read)."""

from __future__ import annotations

import json
import time
from typing import Any

import click
import httpx

from interlock.cli import load_or_exit
from interlock.cli.traces import open_store, with_store

DEFAULT_REASON = "stopped from the command line"


def _escalate(config: str | None, event: str, **fields: Any) -> None:
    """Post the event to `escalation.webhook`, if the configuration has one (bounded by its timeout)."""
    try:
        settings = load_or_exit(config)
    except SystemExit:  # the configuration does not load (its error is said above): its webhook is unknown
        click.echo(f"warning: {event} not escalated: the configuration cannot be read", err=True)
        return
    escalation = settings.escalation
    if escalation.webhook is None:
        return

    body = {"event": event, "at": time.time(), **fields}
    try:
        httpx.post(escalation.webhook, json=body, headers=dict(escalation.headers), timeout=escalation.timeout)
    except httpx.HTTPError as exc:
        click.echo(f"warning: the escalation webhook failed: {exc}", err=True)


def _group(kind: str) -> click.Group:
    @click.group(name=f"{kind}s", help=f"Stop and resume {kind}s (the kill switch).")
    def group() -> None:
        pass

    @group.command("stop")
    @with_store
    @click.argument("name")
    @click.option("--reason", default=DEFAULT_REASON, show_default=True, help="Shown to the agent and kept.")
    def stop(store_path: str | None, config: str | None, name: str, reason: str) -> None:
        """New calls are refused and calls in flight ended, by every interlock on this store."""
        with open_store(store_path, config, readonly=False) as store:
            store.set_stop(kind, name, reason, time.time())
        click.echo(f"{kind} {name!r} stopped: {reason}")
        _escalate(config, f"{kind}_stopped", **{kind: name}, reason=reason)

    @group.command("resume")
    @with_store
    @click.argument("name")
    def resume(store_path: str | None, config: str | None, name: str) -> None:
        """Lift a stop (exit 1 when it was not stopped)."""
        with open_store(store_path, config, readonly=False) as store:
            found = store.clear_stop(kind, name)
        if not found:
            raise click.ClickException(f"{kind} {name!r} is not stopped")
        click.echo(f"{kind} {name!r} resumed")
        _escalate(config, f"{kind}_resumed", **{kind: name})

    @group.command("stopped")
    @with_store
    @click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
    def stopped(store_path: str | None, config: str | None, as_json: bool) -> None:
        """The stopped ones, oldest stop first."""
        with open_store(store_path, config, readonly=False) as store:
            rows = [row for row in store.stops() if row["kind"] == kind]
        for row in rows:
            if as_json:
                click.echo(json.dumps(row))
            else:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["stopped_at"]))
                click.echo(f"{row['name']}  since {when}  {row['reason']}")

    return group


sessions = _group("session")
agents = _group("agent")

__all__ = ["agents", "sessions"]
