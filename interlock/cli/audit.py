"""`interlock audit`: who did what, from the recorded calls (a thin layer over `audit.py`)."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import click

from interlock.cli.traces import open_store, parse_time, with_store
from interlock.tracing.audit import DEFAULT_ROWS, MAX_ROWS, Filters, audit, audit_rows, chain_status, csv_lines, jsonl


def _when(at: float) -> str:
    return datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


def _row_line(row: dict[str, Any]) -> str:
    entities = ", ".join(f"{e['entity']} ({e['action']})" for e in row["entities"]) or "-"
    tools = ", ".join(t["name"] for t in row["tools"]) or "-"
    denied = f"   DENIED {', '.join(row['denied'])}" if row["denied"] else ""
    what = row["model"] or row["route"]
    return f"{_when(row['at'])}  {row['id']}  {row['agent']}  {what}  {row['outcome']}  data: {entities}  tools: {tools}{denied}"


def chain_line(chain: dict[str, Any]) -> str:
    if chain["absent"]:
        return f"chain: {chain['absent']}"
    if chain["ok"]:
        return f"chain verifies ({chain['checked']:,} calls checked)"
    first = chain["first_problem"]
    return f"chain does NOT verify: {chain['problem_count']} problem(s); first: {first['message'] if first else '?'}"


@click.command("audit")
@with_store
@click.option("--since", default=None, help="15m, 2h, 3d, an ISO time, or epoch seconds.")
@click.option("--until", default=None)
@click.option("--agent", default=None)
@click.option("--session", default=None)
@click.option("--workflow", default=None)
@click.option("--entity", default=None, help="A PII or secret entity type found (EMAIL_ADDRESS, ...).")
@click.option("--tool", default=None, help="A tool called (MCP or function) or denied.")
@click.option("--route", default=None)
@click.option("--model", default=None)
@click.option("--decision", default=None, help="A decision action (allow, modify, deny, monitor) or a rule name.")
@click.option(
    "--rows",
    type=click.IntRange(min=0, max=MAX_ROWS),
    default=DEFAULT_ROWS,
    show_default=True,
    help="The newest rows shown behind the summaries.",
)
@click.option("--export", "export_format", type=click.Choice(["jsonl", "csv"]), help="Every matching row, for a SIEM.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write the export here.")
@click.option("--no-verify", is_flag=True, help="Do not check the tamper-evident chain (it reads every call).")
@click.option("--json", "as_json", is_flag=True, help="The answer as one JSON object.")
def audit_command(
    store_path: str | None,
    config: str | None,
    rows: int,
    export_format: str | None,
    output: str | None,
    no_verify: bool,
    as_json: bool,
    **given: Any,
) -> None:
    """Who did what: per agent, the data touched (entity types), tools, models and decisions, and
    the calls behind them; `--export` writes every matching call as JSON lines or CSV."""
    given["since"], given["until"] = parse_time(given["since"]), parse_time(given["until"])
    filters = Filters(**given)
    with open_store(store_path, config) as store:
        if export_format is not None:
            lines = (jsonl if export_format == "jsonl" else csv_lines)(audit_rows(store, filters))
            if output is None:
                for line in lines:
                    sys.stdout.write(line)
            else:
                with open(output, "w", encoding="utf-8", newline="") as out:
                    out.writelines(lines)
            return
        answer = audit(store, filters, rows=rows)
        chain = None if no_verify else chain_status(store)
    if as_json:
        click.echo(json.dumps({**answer, "chain": chain}, ensure_ascii=False))
        return
    if chain is not None:
        click.echo(chain_line(chain))
    click.echo(f"{answer['total']:,} calls match")
    for summary in answer["agents"]:
        click.echo(summary["line"])
    if answer["rows"]:
        click.echo("")
        for row in answer["rows"]:
            click.echo(_row_line(row))


__all__ = ["audit_command", "chain_line"]
