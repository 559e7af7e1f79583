"""The `interlock` command: a thin layer over the library. Every flag is also an INTERLOCK_* variable."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import sys
from typing import Any

import click
import yaml

from interlock import __version__
from interlock.config import Settings, SourceError, fleet_warnings, load_settings, settings_to_yaml
from interlock.protocols import ADAPTERS
from interlock.yamlsource import load_yaml


def load_or_exit(config: str | None) -> Settings:
    try:
        return load_settings(config)
    except SourceError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)


config_option = click.option(
    "--config", "-c", type=click.Path(dir_okay=False), default=None, help="interlock.yaml (default: embedded)."
)


def flag_envvars(command: click.Command, prefix: str) -> click.Command:
    """Name each option's environment variable after its flag, not its Python parameter:
    `interlock traces ls --store` reads INTERLOCK_TRACES_LS_STORE (click's own would be
    ..._STORE_PATH), and show it in --help. Subcommands of a group get `prefix_SUBCOMMAND_`."""
    for param in command.params:
        if not isinstance(param, click.Option) or not param.expose_value:
            continue  # --help, --version
        flag = next((o for o in param.opts if o.startswith("--")), None)
        if param.envvar is None and flag is not None:
            param.envvar = f"{prefix}_{flag[2:].replace('-', '_').upper()}"
        param.show_envvar = param.envvar is not None
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            flag_envvars(sub, f"{prefix}_{name.replace('-', '_').upper()}")
    return command


class LazyGroup(click.Group):
    """Commands from other modules are imported when used, not on every start: `interlock serve`
    should not pay for the CEL, rich or sqlite-utils imports of `policy` or `traces` (~0.4 s)."""

    lazy = {
        "traces": "interlock.cli.traces:traces",
        "policy": "interlock.cli.policy:policy",
        "export": "interlock.cli.replay:export_command",
        "import": "interlock.cli.replay:import_command",
        "replay": "interlock.cli.replay:replay",
        "store": "interlock.cli.store:store",
        "mcp": "interlock.cli.mcp:mcp",
        "sessions": "interlock.cli.stops:sessions",
        "agents": "interlock.cli.stops:agents",
        "audit": "interlock.cli.audit:audit_command",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module_name, attribute = self.lazy[name].split(":")
            command = getattr(importlib.import_module(module_name), attribute)
            assert isinstance(command, click.Command)
        else:
            command = super().get_command(ctx, name)
        if command is None:
            return None
        return flag_envvars(command, f"INTERLOCK_{name.replace('-', '_').upper()}")


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})  # env vars: flag_envvars
@click.version_option(__version__, prog_name="interlock")
def main() -> None:
    """interlock: an observability and guardrail sidecar for AI agents."""


@main.command()
@config_option
@click.option("--port", type=int, default=None, help="Proxy port (overrides listen.port).")
@click.option("--admin-port", type=int, default=None, help="Admin port (overrides admin.port).")
@click.option(
    "--store", "store_path", default=None, help="SQLite store path or postgresql:// URL (overrides store.path/url)."
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes sharing the ports, the store file, limits and the vault (docs/fleet.md).",
)
def serve(config: str | None, port: int | None, admin_port: int | None, store_path: str | None, workers: int) -> None:
    """Run the proxy (and the admin port) until SIGTERM."""
    settings = load_or_exit(config)
    settings = apply_overrides(settings, port=port, admin_port=admin_port, store_path=store_path)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Startup: a command imports only what it runs (hoisted, the commands' imports add 3.9-5.0 s to every
    # `interlock` command, measured under shared load).
    from interlock.server import serve as run_server
    from interlock.tracing.store import StoreError

    # Optional dependency: uvloop comes with uvicorn[standard] and may be absent.
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        run = asyncio.run
    else:
        # uvicorn's `loop="uvloop"` only applies when uvicorn runs the loop; here interlock does.
        # Measured with callgrind (bench/, c8): 11% fewer instructions per proxied call than asyncio's loop.
        run = uvloop.run

    def announce(_: Any, port: int, admin: int) -> None:
        click.echo(point_agents(settings, port, admin))

    try:
        if workers == 1:
            run(run_server(settings, on_ready=announce))
        else:
            sys.exit(serve_workers(settings, workers, run, announce))
    except (StoreError, SourceError) as exc:  # an unreadable store, a broken policy file: say which
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:  # a port in use, an address not on this machine
        listen, admin = settings.listen, settings.admin
        click.echo(
            f"Error: cannot listen on {listen.host}:{listen.port} and {admin.host}:{admin.port}: {exc}", err=True
        )
        sys.exit(2)


def serve_workers(settings: Settings, workers: int, run: Any, announce: Any) -> int:
    """`serve --workers N` (interlock/workers.py): the supervisor's exit status."""
    # Startup: a command imports only what it runs (hoisted, the commands' imports add 3.9-5.0 s to every
    # `interlock` command, measured under shared load).
    from interlock.server import serve as run_server
    from interlock.tracing.backend import open_store
    from interlock.tracing.store import StoreError
    from interlock.workers import needs_shared_state, supervise

    why = needs_shared_state(settings)
    if why is not None:
        click.echo(
            f"Error: --workers {workers} needs shared state (state.url or INTERLOCK_STATE_URL: Redis): {why}; "
            "see docs/fleet.md",
            err=True,
        )
        return 2
    if settings.store.enabled:
        # Created or migrated once, here, before the workers open it side by side.
        open_store(settings.store).close()

    def run_worker(mine: Settings, proxy: Any, admin: Any, board: Any) -> None:
        try:
            on_ready = announce if board.index == 0 else None  # one "point agents at" line
            run(run_server(mine, on_ready=on_ready, sockets=(proxy, admin), board=board))
        except (StoreError, SourceError) as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)

    return supervise(settings, workers, run_worker)


def point_agents(settings: Settings, port: int, admin_port: int) -> str:
    """The line `serve` prints once it listens: the base URL of each route, and the UI's."""

    def url(host: str, port: int) -> str:
        host = "127.0.0.1" if host in ("", "0.0.0.0") else "[::1]" if host == "::" else host
        return f"http://{f'[{host}]' if ':' in host and not host.startswith('[') else host}:{port}"

    proxy = url(settings.listen.host, port)
    routes = [f"{proxy}/{name} ({ADAPTERS[route.protocol].title})" for name, route in settings.routes.items()]
    where = ", ".join(routes) if routes else f"{proxy}/<route>/ (no routes configured)"
    return f"interlock: point agents at {where}; UI {url(settings.admin.host, admin_port)}/"


def apply_overrides(settings: Settings, **overrides: Any) -> Settings:
    data = settings.model_dump(exclude={"source"})
    if overrides.get("port") is not None:
        data["listen"]["port"] = overrides["port"]
    if overrides.get("admin_port") is not None:
        data["admin"]["port"] = overrides["admin_port"]
    if overrides.get("store_path") is not None:
        # `--store` names a file or a database URL; either replaces the configured store.
        location = overrides["store_path"]
        networked = "://" in location and not location.startswith("sqlite://")
        data["store"]["url"] = location if networked else None
        data["store"]["path"] = location
    if data["store"]["url"] is not None:
        data["store"].pop("path")  # the dump has the default path: with a URL, "both" would be refused
    for route in data["routes"].values():
        route.pop("upstream", None)
        route.pop("api_key", None)
    return Settings.model_validate({**data, "source": settings.source})


@main.group()
def config() -> None:
    """Inspect the configuration."""


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (for machines).")


@config.command("show")
@config_option
@json_option
def config_show(config: str | None, as_json: bool) -> None:
    """Print the effective configuration (secrets masked)."""
    text = settings_to_yaml(load_or_exit(config))
    if as_json:
        # The YAML is the masked form: reading it back keeps one place that knows what is secret.
        click.echo(json.dumps(yaml.safe_load(text), indent=2))
    else:
        click.echo(text, nl=False)


def startup_errors(settings: Settings) -> list[SourceError]:
    """What `serve` would refuse beyond the file itself, found without serving: policy files that do not
    load (at their own file:line), a store file that is not interlock's. (A policy path that does not
    exist is the configuration's own error, at its line, from `load_settings`.)"""
    # Startup: a command imports only what it runs (hoisted, the commands' imports add 3.9-5.0 s to every
    # `interlock` command, measured under shared load).
    from interlock.policies.loader import check_policies
    from interlock.policies.stage import policy_paths, route_protocols
    from interlock.tracing.backend import StoreError, open_store

    errors: list[SourceError] = []
    if settings.policies:
        loaded = check_policies(policy_paths(settings), route_protocols(settings), settings.prices)
        errors += [SourceError(p.file, p.line, p.col, p.message) for p in loaded.errors]
    if settings.store.enabled and settings.store.url is None and os.path.exists(settings.store.path):
        try:
            open_store(settings.store, readonly=True).close()  # read only: a check writes nothing
        except StoreError as exc:
            line, col = 1, 1
            if os.path.isfile(settings.source):  # the line of interlock.yaml that names the store
                line, col = load_yaml(settings.source, expand_env=True).locate(("store", "path"))
            errors.append(SourceError(str(settings.source), line, col, f"store.path: {exc}"))
    return errors


@config.command("check")
@config_option
@json_option
def config_check(config: str | None, as_json: bool) -> None:
    """Validate a configuration file; errors as file:line:col. With --json: {"ok": true, ...} or
    {"ok": false, "errors": [{"file", "line", "col", "message"}]} (exit 2)."""
    # Startup: a command imports only what it runs (hoisted, the commands' imports add 3.9-5.0 s to every
    # `interlock` command, measured under shared load).
    from interlock.policies.stage import unpriced_warnings

    if not as_json:
        settings = load_or_exit(config)
        refused = startup_errors(settings)
        for exc in refused:
            click.echo(f"Error: {exc}", err=True)
        if refused:
            sys.exit(2)
        for warning in [*fleet_warnings(settings), *unpriced_warnings(settings)]:
            click.echo(warning, err=True)
        click.echo(f"{settings.source}: ok ({len(settings.routes)} routes)")
        return
    try:
        settings = load_settings(config)
        refused = startup_errors(settings)
    except SourceError as exc:
        refused = [exc]
    if refused:
        errors = [{"file": e.file, "line": e.line, "col": e.col, "message": e.message} for e in refused]
        click.echo(json.dumps({"ok": False, "errors": errors}))
        sys.exit(2)
    result = {"ok": True, "file": str(settings.source), "routes": len(settings.routes)}
    click.echo(json.dumps({**result, "warnings": [*fleet_warnings(settings), *unpriced_warnings(settings)]}))


@main.command()
@click.option("--port", type=int, default=4141, show_default=True, help="Proxy port.")
@click.option("--admin-port", type=int, default=4142, show_default=True, help="Admin and UI port.")
@click.option("--store", "store_path", default=None, help="SQLite store path (default: a new temporary file).")
@click.option("--exit-after-seed", is_flag=True, help="Record the demo sessions, then exit instead of serving.")
def demo(port: int, admin_port: int, store_path: str | None, exit_after_seed: bool) -> None:
    """A scripted upstream, interlock and a scripted agent: a few sessions (a retry, a policy denial,
    a PII redaction, a streamed tool loop) to look at in the UI."""
    # Startup: a command imports only what it runs (hoisted, the commands' imports add 3.9-5.0 s to every
    # `interlock` command, measured under shared load).
    from interlock.demo import run_demo

    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_demo(port=port, admin_port=admin_port, store=store_path, exit_after_seed=exit_after_seed, echo=click.echo)
    except OSError as exc:
        click.echo(f"Error: {exc} (ports {port} and {admin_port}; choose others with --port / --admin-port)", err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
