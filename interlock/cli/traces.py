"""`interlock traces`: list, show and follow recorded calls. A thin layer over `Store` and `views`."""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import datetime
from typing import Any

import click

from interlock.cli import load_or_exit
from interlock.core.call import OUTCOMES
from interlock.prices import cost_text
from interlock.tracing.backend import Store, StoreError
from interlock.tracing.backend import open_store as open_backend
from interlock.tracing.views import call_detail

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(value: str | None) -> float | None:
    """`15m`, `2h`, `3d` (ago), an ISO date or time (local unless it names a zone), or epoch seconds."""
    if value is None:
        return None
    text = value.strip()
    match = _DURATION.match(text)
    if match:
        return time.time() - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise click.BadParameter(f"{value!r}: use 15m, 2h, 3d, an ISO date/time, or epoch seconds") from None


def open_store(store_path: str | None, config: str | None, *, readonly: bool = True) -> Store:
    """The store `--store` names (a file or a database URL), else the configuration's (`store.url`
    or `store.path`; `INTERLOCK_STORE_URL` wins over both), read-only unless asked."""
    target: Any = store_path
    if store_path is None:
        target = load_or_exit(config).store
        store_path = target.location
    try:
        return open_backend(target, readonly=readonly)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # SchemaError, a file that is not SQLite
        raise click.ClickException(f"{store_path}: {exc}") from None


store_options = [
    click.option(
        "--store",
        "store_path",
        default=None,
        help="The store: a SQLite file or a postgresql:// URL (default: the config's store.url or store.path).",
    ),
    click.option("--config", "-c", type=click.Path(dir_okay=False), default=None, help="interlock.yaml."),
]


def with_store(function: Any) -> Any:
    for option in reversed(store_options):
        function = option(function)
    return function


@click.group()
def traces() -> None:
    """Read the recorded calls."""


@traces.command("ls")
@with_store
@click.option("--session", default=None)
@click.option("--workflow", default=None, help="Only this workflow's calls, every agent's (docs/workflows.md).")
@click.option("--agent", default=None)
@click.option("--route", default=None)
@click.option("--outcome", type=click.Choice(OUTCOMES))
@click.option("--model", default=None)
@click.option("--since", default=None, help="15m, 2h, 3d, an ISO time, or epoch seconds.")
@click.option("--until", default=None)
@click.option("--search", "-q", "q", default=None, help="Full-text search in request and response text.")
@click.option(
    "--limit", "-n", type=click.IntRange(min=1), default=50, show_default=True, help="At most this many calls."
)
@click.option("--before", default=None, help="Page: only calls older than this id.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
def ls(store_path: str | None, config: str | None, as_json: bool, limit: int, **filters: Any) -> None:
    """List calls, newest first."""
    filters["since"] = parse_time(filters["since"])
    filters["until"] = parse_time(filters["until"])
    with open_store(store_path, config) as store:
        try:
            rows = store.list_calls(limit=limit, **filters)
        except StoreError as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    click.echo(table(rows))


def _ms(value: Any) -> str:
    return "" if value is None else f"{value:.0f}ms"


def _when(started_at: float) -> str:
    return datetime.fromtimestamp(started_at).strftime("%Y-%m-%d %H:%M:%S")


def _tokens(row: dict[str, Any]) -> str:
    if row["input_tokens"] is None and row["output_tokens"] is None:
        return ""
    return f"{row['input_tokens'] or 0}/{row['output_tokens'] or 0}"


def _what(row: dict[str, Any]) -> str:
    """The model, or for an MCP call its method and tool (`tools/call lookup`)."""
    if row.get("mcp_method"):
        return " ".join(str(part) for part in (row["mcp_method"], row.get("mcp_tool")) if part)
    return str(row["model"] or "")


COLUMNS: list[tuple[str, Any]] = [
    ("ID", lambda r: r["id"]),
    ("TIME", lambda r: _when(r["started_at"])),
    ("AGENT", lambda r: r["agent"]),
    ("SESSION", lambda r: r["session"] or ""),
    ("ROUTE", lambda r: r["route"]),
    ("MODEL/TOOL", lambda r: _what(r)),
    ("STATUS", lambda r: "" if r["status"] is None else str(r["status"])),
    ("OUTCOME", lambda r: r["outcome"] + (f" ({r['error_code']})" if r["error_code"] else "")),
    ("DURATION", lambda r: _ms(r["duration_ms"])),
    ("TOKENS", _tokens),
    ("COST", lambda r: cost_text(r.get("cost_usd"), r.get("cost_source"))),
]


#: Column widths for `tail`, whose rows arrive a few at a time but should line up.
TAIL_WIDTHS = [26, 19, 12, 12, 9, 16, 6, 14, 8, 9, 9]


def table(rows: list[dict[str, Any]], widths: list[int] | None = None) -> str:
    cells = [[str(get(row)) for _, get in COLUMNS] for row in rows]
    if widths is None:
        widths = [max([len(name)] + [len(c[i]) for c in cells]) for i, (name, _) in enumerate(COLUMNS)]
    lines = ["  ".join(name.ljust(w) for (name, _), w in zip(COLUMNS, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)).rstrip() for cell in cells]
    return "\n".join(lines)


@traces.command("show")
@with_store
@click.argument("call_id")
@click.option("--json", "as_json", is_flag=True, help="The whole record as one JSON object.")
def show(store_path: str | None, config: str | None, call_id: str, as_json: bool) -> None:
    """Everything recorded about one call (an id, or a unique prefix of one)."""
    with open_store(store_path, config) as store:
        resolved = store.resolve_id(call_id) or call_id
        detail = call_detail(store, resolved)
    if detail is None:
        raise click.ClickException(f"no call {call_id!r} in the store")
    if as_json:
        click.echo(json.dumps(detail))
        return
    click.echo(render(detail))


def _body(view: dict[str, Any] | None) -> str:
    if view is None:
        return "(not recorded)"
    if view["encoding"] == "json":
        return json.dumps(view["content"], indent=2, ensure_ascii=False)
    if view["encoding"] == "base64":
        return f"({view['size']} bytes of binary, base64) {view['content'][:200]}"
    return str(view["content"]) if view["content"] else "(empty)"


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines()) or prefix + "(empty)"


def render(d: dict[str, Any]) -> str:
    """A call as a person reads it: summary, request, attempts, response, stream, decisions."""
    out: list[str] = []
    add = out.append
    add(f"call {d['id']}   {_when(d['started_at'])}")
    add(
        f"  agent {d['agent']}   session {d['session'] or '-'}   trace {d['trace_id'] or '-'} span {d['span_id'] or '-'}"
    )
    status = "-" if d["status"] is None else d["status"]
    add(f"  {d['method']} /{d['route']}{d['path']}{'?' + d['query'] if d['query'] else ''}   model {d['model'] or '-'}")
    add(
        f"  status {status}   outcome {d['outcome']}{' (' + d['error_code'] + ')' if d['error_code'] else ''}"
        f"   ttfb {_ms(d['ttfb_ms']) or '-'}   duration {_ms(d['duration_ms']) or '-'}"
        f"   tokens in {d['input_tokens'] if d['input_tokens'] is not None else '-'}"
        f" out {d['output_tokens'] if d['output_tokens'] is not None else '-'}"
        f"{'   stream' if d['stream'] else ''}{'   TRUNCATED' if d['truncated'] else ''}"
    )
    if d.get("cost_source"):
        add(f"  cost {cost_text(d.get('cost_usd'), d['cost_source']) or '-'}   price from {d['cost_source']}")
    if d.get("error"):
        add(f"  error: {d['error']}")
    if d.get("capture") == "metadata":
        add("  (recorded with capture: metadata, so no bodies)")
    add("")
    add("request headers:")
    add(_indent("\n".join(f"{k}: {v}" for k, v in d["request_headers"]) or "(none)"))
    add("request body:")
    add(_indent(_body(d["request_body"])))
    if d["upstream_body"] is not None:
        add("sent upstream (changed by interlock):")
        add(_indent(_body(d["upstream_body"])))
    if d["attempts"]:
        add("attempts:")
        for i, a in enumerate(d["attempts"], 1):
            line = f"#{i} {a.get('upstream')} {a.get('url')}"
            if a.get("model"):
                line += f" model {a['model']}"
            line += f"  status {a.get('status') if a.get('status') is not None else '-'}"
            line += f"  at +{a.get('started_ms') or 0:.0f}ms  ttfb {_ms(a.get('ttfb_ms')) or '-'}"
            line += f"  took {_ms(a.get('duration_ms')) or '-'}"
            if a.get("backoff_ms"):
                line += f"  after backoff {a['backoff_ms']:.0f}ms"
            if a.get("error"):
                line += f"  error: {a['error']}"
            add("    " + line)
    if d["decisions"]:
        add("decisions:")
        for dec in d["decisions"]:
            rule = f" rule {dec.get('rule')}" if dec.get("rule") else ""
            add(f"    [{dec.get('stage')}] {dec.get('action')}{rule}: {dec.get('reason', '')}")
    if d["findings"]:
        add("findings:")
        for f in d["findings"]:
            add(
                f"    {f.get('entity')} at {f.get('where')}[{f.get('start')}:{f.get('end')}] score {f.get('score')} → {f.get('action')}"
            )
    add("response headers:")
    add(_indent("\n".join(f"{k}: {v}" for k, v in d["response_headers"]) or "(none)"))
    if d["stream"] and d["chunks"] is not None and (d["chunks"] or d.get("capture") == "full"):
        for title, chunks in (
            ("stream (as the upstream sent it)", d["chunks"]),
            ("stream (as the agent got it)", d["agent_chunks"]),
        ):
            if chunks is None:
                continue
            add(f"{title}: {len(chunks)} chunks")
            for c in chunks:
                add(f"    +{c['t_ms']:8.1f}ms  {c['size']:6d}B  {c['text'].rstrip()!r}")
        if d.get("response_message") is not None:
            add("reassembled response:")
            add(_indent(json.dumps(d["response_message"], indent=2, ensure_ascii=False)))
    else:
        add("response body:")
        add(_indent(_body(d["response_body"])))
        if d["agent_response_body"] is not None:
            add("response body as the agent got it (changed by interlock):")
            add(_indent(_body(d["agent_response_body"])))
    if d.get("meta"):
        add("meta:")
        add(_indent(json.dumps(d["meta"], indent=2, ensure_ascii=False, default=str)))
    return "\n".join(out)


@traces.command("tail")
@with_store
@click.option(
    "--lines",
    "-n",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Show this many recent calls first.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0, min_open=True),
    default=0.5,
    show_default=True,
    help="Seconds between looks at the store.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
def tail(store_path: str | None, config: str | None, lines: int, interval: float, as_json: bool) -> None:
    """Follow new calls as they are recorded (Ctrl-C to stop)."""
    with open_store(store_path, config) as store:
        recent = list(reversed(store.list_calls(limit=lines))) if lines > 0 else []
        _, position = store.written_since(None)
        print_rows(recent, as_json, header=True)
        header = not recent
        try:
            while True:
                rows, position = store.written_since(position)
                if rows:
                    print_rows(rows, as_json, header=header)
                    header = False
                else:
                    time.sleep(interval)
        except KeyboardInterrupt:
            pass


def print_rows(rows: list[dict[str, Any]], as_json: bool, header: bool) -> None:
    if not rows:
        return
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
    else:
        text = table(rows, TAIL_WIDTHS)
        click.echo(text if header else text.split("\n", 1)[1])
    sys.stdout.flush()
