"""`interlock policy`: check, test, whatif, schema. A thin layer over the loader, cases and whatif."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from typing import Any

import click

from interlock.cli import load_or_exit
from interlock.config import Settings
from interlock.policies.loader import PolicyError, check_policies, load_policies
from interlock.policies.model import json_schema

config_option = click.option(
    "--config",
    "-c",
    type=click.Path(dir_okay=False),
    default=None,
    help="interlock.yaml: enables the route checks (default: $INTERLOCK_CONFIG, else no route checks).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")


def _settings(config: str | None) -> Settings | None:
    config = config or os.environ.get("INTERLOCK_CONFIG")
    return load_or_exit(config) if config else None


def _routes(settings: Settings | None) -> dict[str, str] | None:
    # Startup: a command imports only what it runs (hoisted, the commands' imports add 3.9-5.0 s to every
    # `interlock` command, measured under shared load).
    from interlock.policies.stage import route_protocols

    return route_protocols(settings) if settings is not None else None


def _hosts(settings: Settings | None) -> dict[str, str | None]:
    # Startup: a command imports only what it runs (hoisted, the commands' imports add 3.9-5.0 s to every
    # `interlock` command, measured under shared load).
    from interlock.policies.stage import route_hosts

    return route_hosts(settings) if settings is not None else {}


@click.group()
def policy() -> None:
    """Check, test and try out policy files."""


@policy.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@config_option
@json_option
def check(paths: tuple[str, ...], config: str | None, as_json: bool) -> None:
    """Validate and lint policy files (or folders); errors as file:line:col. Exit 1 on errors."""
    settings = _settings(config)
    loaded = check_policies(paths, _routes(settings), settings.prices if settings is not None else None)
    for problem in loaded.problems:
        if as_json:
            click.echo(json.dumps(_problem(problem)))
        else:
            click.echo(str(problem), err=problem.severity == "error")
    errors = len(loaded.errors)
    if as_json:
        click.echo(
            json.dumps({"type": "summary", "files": len(loaded.files), "rules": len(loaded.rules), "errors": errors})
        )
    elif errors:
        click.echo(f"{errors} error{'s' if errors != 1 else ''} in {len(loaded.files)} files", err=True)
    else:
        click.echo(f"ok: {len(loaded.rules)} rules in {len(loaded.files)} files")
    sys.exit(1 if errors else 0)


def _problem(problem: Any) -> dict[str, Any]:
    return {
        "type": "problem",
        "file": problem.file,
        "line": problem.line,
        "col": problem.col,
        "severity": problem.severity,
        "message": problem.message,
    }


@policy.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--cases", "cases_paths", multiple=True, required=True, type=click.Path(exists=True, dir_okay=False))
@config_option
@click.option("--verbose", "-v", is_flag=True, help="Show passing cases too.")
@json_option
def test(
    paths: tuple[str, ...], cases_paths: tuple[str, ...], config: str | None, verbose: bool, as_json: bool
) -> None:
    """Run table-driven cases against policy files; a pass/fail report. Exit 1 on any failure."""
    # Startup: a command imports only what it runs (hoisted, the commands' imports add 3.9-5.0 s to every
    # `interlock` command, measured under shared load).
    from interlock.policies.cases import SourceError, run_cases

    settings = _settings(config)
    try:
        engine = load_policies(paths, _routes(settings))
        deployments = {name: dict(r.deployments) for name, r in settings.routes.items()} if settings else None
        results = run_cases(engine, list(cases_paths), _routes(settings), _hosts(settings), deployments)
    except PolicyError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(1)
    except SourceError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    failed = [r for r in results if not r.passed]
    for result in results:
        if as_json:
            outcome = result.outcome
            click.echo(
                json.dumps(
                    {
                        "type": "case",
                        "name": result.case.name,
                        "where": result.where,
                        "passed": result.passed,
                        "failures": result.failures,
                        "decision": outcome.decision if outcome else None,
                        "rule": outcome.rule if outcome else None,
                        "ms": round(result.ms, 3),
                    }
                )
            )
        elif not result.passed:
            click.echo(f"FAIL: {result.where}: {result.case.name} ({result.ms:.2f}ms)")
            for failure in result.failures:
                click.echo(f"  {failure}")
        elif verbose:
            click.echo(f"PASS: {result.where}: {result.case.name} ({result.ms:.2f}ms)")
    if as_json:
        click.echo(json.dumps({"type": "summary", "passed": len(results) - len(failed), "failed": len(failed)}))
    else:
        if failed or verbose:
            click.echo("-" * 80)
        click.echo(f"PASS: {len(results) - len(failed)}/{len(results)}")
        if failed:
            click.echo(f"FAIL: {len(failed)}/{len(results)}")
    sys.exit(1 if failed else 0)


@policy.command()
@click.option(
    "--policy",
    "policy_paths",
    multiple=True,
    required=True,
    type=click.Path(exists=True),
    help="The candidate policy (files or folders).",
)
@click.option(
    "--since", default="24h", show_default=True, help="Calls since: 15m, 2h, 3d, an ISO time, or epoch seconds."
)
@click.option(
    "--store", "store_path", default=None, help="The store: a file or postgresql:// URL (default: the config's)."
)
@config_option
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="How many changed calls to list (0: all).",
)
@json_option
def whatif(
    policy_paths: tuple[str, ...], since: str, store_path: str | None, config: str | None, limit: int, as_json: bool
) -> None:
    """Evaluate a candidate policy over recorded calls: which decisions would change, per rule."""
    # Startup: a command imports only what it runs (hoisted, the commands' imports add 3.9-5.0 s to every
    # `interlock` command, measured under shared load).
    from interlock.cli.traces import open_store, parse_time
    from interlock.policies.whatif import whatif as run_whatif

    settings = _settings(config)
    try:
        engine = load_policies(policy_paths, _routes(settings))
    except PolicyError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(1)
    store = open_store(store_path, config)
    try:
        prices = settings.prices if settings is not None else None
        report = run_whatif(engine, store.iter_calls(since=parse_time(since)), _hosts(settings), prices=prices)
    finally:
        store.close()
    shown = report.changes if limit <= 0 else report.changes[:limit]
    if as_json:
        for change in shown:
            click.echo(json.dumps(change.to_json()))
        click.echo(json.dumps(report.summary()))
        return
    click.echo(
        f"{report.evaluated} calls evaluated in {report.seconds:.2f}s"
        + (f" ({report.skipped} skipped: malformed requests)" if report.skipped else "")
        + f"; {len(report.changes)} would change"
    )
    for (before, after), count in sorted(report.transitions.items()):
        click.echo(f"  {before} → {after}: {count}")
    if report.fired:
        click.echo("\nrules of the candidate          fired  changed")
        for name, count in report.fired.most_common():
            click.echo(f"  {name:<30} {count:>5}  {report.changed_by_rule.get(name, 0):>7}")
    if shown:
        click.echo("\nchanged calls:")
        for change in shown:
            when = datetime.fromtimestamp(change.started_at).strftime("%Y-%m-%d %H:%M:%S")
            rule = f" [{change.rule}]" if change.rule else ""
            click.echo(
                f"  {change.id}  {when}  {change.agent}  {change.route}  {change.model or '-'}  "
                f"{change.before} → {change.after}{rule}  {change.reason}"
            )
        if len(shown) < len(report.changes):
            click.echo(f"  ... and {len(report.changes) - len(shown)} more (--limit 0 shows all)")


@policy.command()
@click.option("--cases", "cases", is_flag=True, help="The schema of test cases files instead.")
def schema(cases: bool) -> None:
    """Print the JSON Schema of policy files, for editors' YAML autocompletion."""
    if cases:
        # Startup: a command imports only what it runs (hoisted, the commands' imports add 3.9-5.0 s to every
        # `interlock` command, measured under shared load).
        from interlock.policies.cases import cases_schema

        click.echo(json.dumps(cases_schema(), indent=2))
    else:
        click.echo(json.dumps(json_schema(), indent=2))


__all__ = ["policy"]
