"""`GET /metrics`: the recorder's counters in Prometheus' text format, for a fleet's scraper.

What `/api/stats` says under `recorder`, as metrics: an outage of the store (a database server
down, a disk full) shows as `interlock_store_fault 1` while it lasts, and in the totals after it.
Read from memory only: it answers while the store itself cannot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from interlock.ui.state import AdminState

#: (metric, type, help, the `Recorder.counters()` key it reads).
_RECORDER = (
    ("interlock_store_fault", "gauge", "1 while the store cannot be written (calls held, then spilled)", "fault"),
    ("interlock_store_faults_total", "counter", "Episodes of the store not being writable", "faults"),
    ("interlock_store_fault_seconds_total", "counter", "Seconds the store could not be written", "fault_seconds"),
    ("interlock_record_written_total", "counter", "Calls written to the store (new rows only)", "written"),
    (
        "interlock_record_duplicates_skipped_total",
        "counter",
        "Calls written again that the store already held, skipped (a side file replayed twice)",
        "duplicates_skipped",
    ),
    ("interlock_record_queue", "gauge", "Calls waiting for the writer", "queue"),
    ("interlock_record_overflow_total", "counter", "Calls past the queue, written by the fallback", "overflow"),
    ("interlock_record_held", "gauge", "Calls held in memory while the store cannot be written", "held"),
    ("interlock_record_spilled", "gauge", "Calls in the side file, waiting for the store", "spilled"),
    ("interlock_record_lost_total", "counter", "Calls that could be neither written, held nor spilled", "lost"),
    ("interlock_record_write_errors_total", "counter", "Calls the store refused (logged)", "write_errors"),
)


async def metrics(request: Request) -> Response:
    runtime: AdminState = request.app.state.runtime
    recorder = runtime.recorder
    lines: list[str] = []
    if recorder is not None:
        counters = recorder.counters()
        for name, kind, text, key in _RECORDER:
            value = counters.get(key)
            if key == "fault":
                value = 0 if value is None else 1
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {value or 0}"]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


def routes() -> list[BaseRoute]:
    return [Route("/metrics", metrics)]


__all__ = ["routes"]
