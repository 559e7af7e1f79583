"""CLI: `interlock export`, `interlock import`, `interlock replay [serve] FILE`, `interlock replay run FILE`.

`replay` is a group whose default command is `serve`, so the common case reads as the issue wrote
it (`interlock replay incident.db`) while `interlock replay run incident.db` names the other mode.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from interlock.cli import load_or_exit

if TYPE_CHECKING:
    from interlock.config import Settings
    from interlock.replay.bundle import Bundle

EXIT_BAD_INPUT = 2
#: `--on-miss` choices (the server's ON_MISS; repeated here so `interlock --help` imports nothing heavy).
ON_MISS = ("error", "next", "live")


def _fail(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def _open(path: str, **filters: Any) -> Bundle:
    # Startup: a command imports only what it runs (hoisted, the commands' imports add 3.9-5.0 s to every
    # `interlock` command, measured under shared load).
    from interlock.replay.bundle import BundleError, open_bundle

    try:
        return open_bundle(path, **filters)
    except BundleError as exc:
        _fail(str(exc))
        raise  # unreachable


def parse_time(value: str | None) -> float | None:
    """Epoch seconds, or an ISO 8601 date / date-time (local time when it has no offset)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither epoch seconds nor an ISO 8601 time") from None


def parse_speed(value: str) -> float | None:
    if value == "max":
        return None
    try:
        speed = float(value)
    except ValueError:
        raise click.BadParameter("give a positive number or `max`") from None
    if speed <= 0:
        raise click.BadParameter("give a positive number or `max`")
    return speed


def _check_patterns(patterns: tuple[str, ...]) -> tuple[str, ...]:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise click.BadParameter(f"{pattern!r} is not a regular expression: {exc}") from None
    return patterns


def _store_path(config: str | None, store: str | None) -> str:
    if store:
        return store
    return load_or_exit(config).store.location


config_option = click.option(
    "--config", "-c", type=click.Path(dir_okay=False), default=None, help="interlock.yaml (default: embedded)."
)
store_option = click.option(
    "--store", "store_path", default=None, help="Store file or postgresql:// URL (default: the config's store)."
)


@click.command("export")
@click.option("--session", default=None, help="Only this session's calls.")
@click.option("--since", default=None, help="Only calls from this time (epoch seconds or ISO 8601).")
@click.option("--until", default=None, help="Only calls before this time.")
@click.option("--agent", default=None, help="Only this agent's calls.")
@click.option("--workflow", default=None, help="Only this workflow's calls: every agent's (docs/workflows.md).")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="The bundle file to write.")
@config_option
@store_option
def export_command(
    session: str | None,
    since: str | None,
    until: str | None,
    agent: str | None,
    workflow: str | None,
    output: str,
    config: str | None,
    store_path: str | None,
) -> None:
    """Write calls to a self-contained bundle file (for `interlock replay`)."""
    # Startup: a command imports only what it runs (hoisted, the commands' imports add 3.9-5.0 s to every
    # `interlock` command, measured under shared load).
    from interlock.tracing.backend import StoreError, open_store

    path = _store_path(config, store_path)
    try:
        with open_store(path, readonly=True) as store:
            count = store.export(
                output,
                session=session,
                since=parse_time(since),
                until=parse_time(until),
                agent=agent,
                workflow=workflow,
            )
    except (StoreError, OSError) as exc:
        _fail(str(exc))
    if count == 0:
        os.unlink(output)
        _fail("no calls match; nothing exported")
    click.echo(f"exported {count} calls to {output}")


@click.command("import")
@click.argument("bundle", type=click.Path(dir_okay=False))
@config_option
@store_option
def import_command(bundle: str, config: str | None, store_path: str | None) -> None:
    """Merge a bundle's calls into the store (calls already there are skipped)."""
    # Startup: a command imports only what it runs (hoisted, the commands' imports add 3.9-5.0 s to every
    # `interlock` command, measured under shared load).
    from interlock.replay.bundle import BundleError, check_bundle
    from interlock.tracing.backend import StoreError, open_store

    try:
        check_bundle(bundle)
    except BundleError as exc:
        _fail(str(exc))
    path = _store_path(config, store_path)
    try:
        with open_store(path) as store:
            count = store.import_from(bundle)
    except (StoreError, OSError) as exc:
        _fail(str(exc))
    click.echo(f"imported {count} new calls into {path}")


class DefaultGroup(click.Group):
    """A group that runs `default_command` when the first argument names no subcommand."""

    default_command = "serve"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = [self.default_command, *args]
        elif not args:
            args = [self.default_command]
        return super().parse_args(ctx, args)


@click.group("replay", cls=DefaultGroup)
def replay() -> None:
    """Replay a recorded bundle: `replay FILE` serves it, `replay run FILE` re-sends it to a live upstream."""


@replay.command("serve")
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=4141, show_default=True, type=int)
@click.option("--speed", default="1", show_default=True, help="Timing: 1 as recorded, N times faster, or `max`.")
@click.option(
    "--on-miss",
    type=click.Choice(ON_MISS),
    default="error",
    show_default=True,
    help="What a request that matches nothing gets.",
)
@click.option("--session", default=None, help="Replay only this session of the bundle.")
@click.option(
    "--ignore", multiple=True, help="Also ignore this body field when matching (`name`, or `*.name` at any depth)."
)
@click.option(
    "--ignore-pattern",
    multiple=True,
    callback=lambda _ctx, _param, value: _check_patterns(value),
    help="Also ignore text matching this regular expression when matching (repeatable).",
)
@click.option("--keep-timestamps", is_flag=True, help="Match dates and times inside texts exactly.")
@click.option(
    "--summary",
    "summary_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the summary as JSON here at the end.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--allow-unused", is_flag=True, help="With COMMAND: recorded calls never asked for are not a divergence.")
@click.option(
    "--allow-host",
    "allow_hosts",
    multiple=True,
    help="Also answer this Host name (besides localhost, IP addresses and --host; `.example.com` a domain, "
    "`*` any), as listen.allowed_hosts does; added to --config's listen.allowed_hosts (repeatable).",
)
@config_option
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def serve(
    bundle: str,
    host: str,
    port: int,
    speed: str,
    on_miss: str,
    session: str | None,
    ignore: tuple[str, ...],
    ignore_pattern: tuple[str, ...],
    keep_timestamps: bool,
    summary_path: str | None,
    as_json: bool,
    allow_unused: bool,
    allow_hosts: tuple[str, ...],
    config: str | None,
    command: tuple[str, ...],
) -> None:
    """Serve BUNDLE's routes from the recording, until Ctrl-C — or, given `-- COMMAND...`, run the
    command with OPENAI_BASE_URL / ANTHROPIC_BASE_URL pointing at the replay, then exit: the
    command's own exit code when it failed, else 1 when the run left the recording (a miss, or a
    recorded call never asked for, unless --allow-unused), else 0."""
    # Startup: a command imports only what it runs (hoisted, the commands' imports add 3.9-5.0 s to every
    # `interlock` command, measured under shared load).
    from interlock.replay.match import MatchOptions
    from interlock.replay.runner import ReplayConfigError, ReplayHost, ReplaySettings, run_loop, serve_foreground

    began = time.perf_counter()
    loaded = _open(bundle, session=session)
    live_settings = None
    if on_miss == "live" or config:
        live_settings = load_or_exit(config) if config else None
    # The replay stands in for the interlock of `--config`: agents reach it by the same names.
    allowed_hosts = (*(live_settings.listen.allowed_hosts if live_settings is not None else ()), *allow_hosts)
    options = MatchOptions().with_ignored(ignore)
    options = dataclasses.replace(options, ignore_timestamps=not keep_timestamps, ignore_patterns=ignore_pattern)
    settings = ReplaySettings(
        host=host,
        port=port,
        speed=parse_speed(speed),
        on_miss=on_miss,
        options=options,
        live_settings=live_settings,
        open_live=_open_live if on_miss == "live" else None,
        allowed_hosts=allowed_hosts,
    )
    try:
        replay_host = ReplayHost(loaded, settings)
    except ReplayConfigError as exc:
        _fail(str(exc))

    def ready(running: ReplayHost) -> None:
        click.echo(f"{loaded.describe()}; ready in {time.perf_counter() - began:.2f}s", err=True)
        click.echo(f"replaying on {running.url}/<route>/... (speed {speed}, on miss: {on_miss})", err=True)
        if host in ("0.0.0.0", "::", "") and not allowed_hosts:
            # As `interlock serve` warns: agents that reach it by a DNS name get 403 host_refused.
            click.echo(
                f"warning: listening on {host}, the replay answers Host names localhost and IP addresses only "
                "(DNS rebinding); name the others with --allow-host",
                err=True,
            )

    try:
        code = run_loop(serve_foreground(replay_host, on_ready=ready, command=command))
    except ReplayConfigError as exc:
        _fail(str(exc))
    summary = replay_host.summary()
    if summary_path:
        with open(summary_path, "w", encoding="utf-8") as handle:
            json.dump(summary.to_json(), handle, indent=2)
    if as_json:
        click.echo(json.dumps(summary.to_json()))
    else:
        click.echo(summary.text(), err=not command)
    if command:
        # The same path as recorded: nothing missed, and (unless allowed) every recorded call asked for.
        diverged = summary.diverged or (bool(summary.unused) and not allow_unused)
        sys.exit(code if code else (1 if diverged else 0))


@replay.command("run")
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option("--route", required=True, help="The recorded route whose calls are re-sent.")
@click.option("--model", default=None, help="Send every request with this model instead of the recorded one.")
@click.option("--upstream", default=None, help="Base URL to send to (default: the route's upstream in --config).")
@click.option("--api-key", default=None, help="Key for --upstream (default: the route's api_key in --config).")
@click.option("--session", default=None, help="Only this session of the bundle.")
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 64))
@click.option("--output", "-o", default=None, help="Report path prefix: writes PREFIX.md and PREFIX.json.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of the Markdown.")
@config_option
def run(
    bundle: str,
    route: str,
    model: str | None,
    upstream: str | None,
    api_key: str | None,
    session: str | None,
    concurrency: int,
    output: str | None,
    as_json: bool,
    config: str | None,
) -> None:
    """Re-send each recorded request of a route to a live upstream and compare the answers."""
    # Startup: a command imports only what it runs (hoisted, the commands' imports add 3.9-5.0 s to every
    # `interlock` command, measured under shared load).
    from interlock.replay.rerun import RerunError, rerun, target_for

    loaded = _open(bundle, session=session, route=route)
    try:
        target = target_for(route, loaded, upstream=upstream, api_key=api_key, config=config)
        report = asyncio.run(rerun(loaded.calls, target, model=model, concurrency=concurrency))
    except RerunError as exc:
        _fail(str(exc))
    prefix = output or f"replay-run-{route}"
    markdown = report.markdown(bundle)
    with open(prefix + ".md", "w", encoding="utf-8") as handle:
        handle.write(markdown)
    with open(prefix + ".json", "w", encoding="utf-8") as handle:
        json.dump(report.to_json(), handle, indent=2)
    click.echo(json.dumps(report.to_json()) if as_json else markdown)
    click.echo(f"report written to {prefix}.md and {prefix}.json", err=True)


COMMANDS = (export_command, import_command, replay)


def _open_live(settings: Settings) -> Any:
    """The live runtime `replay --on-miss live` forwards misses to."""
    # Startup: the whole proxy (1.6-2.1 s more to import, measured under shared load) only for
    # --on-miss live.
    from interlock.runtime import Runtime

    return Runtime(settings)
