"""The workflows list (`/workflows`) and one workflow's page (`/workflow?id=`): a swimlane per agent
on one time axis, the handoffs between them drawn over the lanes, failures and what followed them,
and the totals per agent (docs/ui.md, docs/workflows.md). Reads run in worker threads."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from interlock.tracing.backend import Store
from interlock.tracing.workflow import workflow_view
from interlock.ui import queries, render

#: Workflows a page of the list shows.
PAGE = 50


@dataclass(slots=True)
class LaneCall:
    """A call placed on its agent's lane: where its bar starts and how wide it is (percent of the
    axis), and which row of the lane it takes (calls of one agent that overlap stack)."""

    call: queries.TimelineCall
    left: float
    width: float
    row: int


@dataclass(slots=True)
class Lane:
    agent: str
    totals: dict[str, Any]
    calls: list[LaneCall] = field(default_factory=list)
    rows: int = 1


def _lanes(view: dict[str, Any], timeline: dict[str, queries.TimelineCall], total_ms: float) -> list[Lane]:
    lanes = []
    for found in view["lanes"]:
        lane = Lane(found["agent"], found["totals"])
        ends: list[float] = []  # per lane row: where its last bar ends
        for row in found["calls"]:
            start, duration = row["offset_ms"], row["duration_ms"] or 0.0
            # A bar is at least ~0.5 % wide on screen: leave that room before the next one on the row.
            place = next((i for i, end in enumerate(ends) if end <= start), len(ends))
            end = start + max(duration, total_ms * 0.005)
            if place == len(ends):
                ends.append(end)
            else:
                ends[place] = end
            lane.calls.append(LaneCall(timeline[row["id"]], start / total_ms * 100, duration / total_ms * 100, place))
        lane.rows = max(1, len(ends))
        lanes.append(lane)
    return lanes


async def workflows_page(request: Request) -> Response:
    store = await render._open_store(request)
    if isinstance(store, Response):
        return store
    agent = request.query_params.get("agent") or None
    offset = render._offset(request)

    def read(store: Store) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
        return store.workflows(agent=agent, limit=PAGE + 1, offset=offset), queries.choices(store)

    rows, menus = await run_in_threadpool(read, store)
    context = {
        "rows": rows[:PAGE],
        "agent": agent,
        "agents": menus["agents"],
        "next_offset": offset + PAGE if len(rows) > PAGE else None,
        "prev_offset": max(0, offset - PAGE) if offset else None,
    }
    return await render._page(request, "workflows.html", context)


async def workflow_page(request: Request) -> Response:
    store = await render._open_store(request)
    if isinstance(store, Response):
        return store
    workflow = request.query_params.get("id", "")

    def read(store: Store) -> tuple[dict[str, Any] | None, dict[str, queries.TimelineCall]]:
        view = workflow_view(store, workflow)
        if view is None:
            return None, {}
        rows = [row for lane in view["lanes"] for row in lane["calls"]]
        return view, {c.row["id"]: c for c in queries.timeline_calls(store, rows)}

    view, timeline = await run_in_threadpool(read, store)
    if view is None:
        message = f"no workflow {workflow!r}"
        return await render._page(request, "message.html", {"title": "No such workflow", "message": message}, 404)
    total = max(1.0, view["totals"]["duration_ms"])
    agent_of = {call_id: c.row["agent"] for call_id, c in timeline.items()}
    handoffs = [
        {**h, "from_agent": agent_of.get(h["from"]), "to_agent": agent_of.get(h["to"])} for h in view["handoffs"]
    ]
    bundle = f"{render._safe_name(workflow)}.db"
    context = {
        "workflow": workflow,
        "view": view,
        "summary": view["summary"],
        "totals": view["totals"],
        "lanes": _lanes(view, timeline, total),
        "ticks": render._ticks(total),
        "handoffs": handoffs,
        "handoffs_json": json.dumps([[h["from"], h["to"], h["kind"]] for h in handoffs]),
        "incidents": view["incidents"],
        "agent_of": agent_of,
        "bundle_name": bundle,
        "replay_command": f"interlock export --workflow {shlex.quote(workflow)} -o {bundle}"
        f" && interlock replay serve {bundle}",
    }
    return await render._page(request, "workflow.html", context)


__all__ = ["workflow_page", "workflows_page"]
