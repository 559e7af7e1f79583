"""OpenTelemetry export: every finished call becomes a span tree and metrics, never on the event loop.

The `done` hook only queues the Call. Spans are built after the fact, with the call's own
timestamps and ids: the call span has exactly `call.span_id` in `call.trace_id` under
`call.parent_span_id`, the ids the Identify stage chose and interlock forwarded upstream in
`traceparent`, so the agent's spans, interlock's and the upstream's join one trace.

Where that work runs (`otel.worker`): `process` (the default) hands each call to a child process
(`process.py`) that builds, encodes and ships the spans and metrics there, because building and
OTLP-encoding them in Python costs about a third of the proxy's own CPU per call; `thread` does the
same on a thread of this process (`Exporter` below, which the child runs too).

Configured by the `otel:` section and the standard OTEL_* variables (`config.py`, docs/otel.md).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from interlock.config import Otel
from interlock.core.call import Call
from interlock.otel.attributes import describe_call
from interlock.otel.config import (
    Health,
    export_configured,
    providers,
    quiet,
    resolve_endpoint,
    resolve_protocol,
    resource,
)
from interlock.otel.metrics import CallMetrics
from interlock.otel.process import ProcessExporter
from interlock.otel.spans import SpanBuilder

log = logging.getLogger("interlock.otel")


def build_exporter(config: Otel) -> Any:
    """The export stage for this configuration (a `ProcessExporter` or an `Exporter`), or None
    when there is nowhere to export to."""
    if not export_configured(config):
        return None
    for signal in ("TRACES", "METRICS"):
        resolve_protocol(config, signal)  # a bad protocol fails here, at startup, not in the child
    if config.worker == "process":
        return ProcessExporter(config)
    return local_exporter(config)


def local_exporter(config: Otel, *, worker: bool = True) -> Exporter:
    """An `Exporter` in this process, shipping to the configured endpoints."""
    processor, metric_exporter, health = providers(config)
    exporter = Exporter(config, processor, metric_exporter or False, worker=worker)
    exporter.health = health
    return exporter


# -- the stage ----------------------------------------------------------------------------------


class Exporter:
    """Stage: queues each finished call; a worker thread exports it (spans and metrics)."""

    name = "export"

    def __init__(
        self,
        config: Otel,
        processor: SpanProcessor | None,
        metrics: MetricExporter | bool = False,
        *,
        worker: bool = True,
    ) -> None:
        self.config = config
        resource_ = resource(config)
        self.processor = processor
        self.tracer_provider: TracerProvider | None = None
        self.spans: SpanBuilder | None = None
        if processor is not None:
            # The provider holds the sampler (OTEL_TRACES_SAMPLER) and shuts the processor down.
            self.tracer_provider = TracerProvider(resource=resource_, shutdown_on_exit=False)
            self.tracer_provider.add_span_processor(processor)
            self.spans = SpanBuilder(processor, resource_, self.tracer_provider.sampler)
        # `metrics`: an exporter to ship them to every `metrics_interval`, or True to only aggregate
        # them (read with `self.metrics.collect()`).
        self.metrics: CallMetrics | None = None
        if metrics is not False:
            metric_exporter = None if metrics is True else metrics
            self.metrics = CallMetrics(resource_, metric_exporter, interval=config.metrics_interval)
        self.queue_size = config.queue_size
        self.dropped = 0  # calls not exported because the queue was full
        self.health: list[Health] = []  # per signal: export failures seen
        self.exported = 0
        self._queue: queue.SimpleQueue[Call | threading.Event | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        if worker:
            self._worker = threading.Thread(target=self._run, name="interlock-otel", daemon=True)
            self._worker.start()
        self._closed = False

    def done(self, call: Call) -> None:
        """The call is final: queue it for export (never blocks; drops and counts when full)."""
        if self._queue.qsize() >= self.queue_size or self._closed:
            self.dropped += 1
            return
        self._queue.put(call)

    # -- the worker thread ------------------------------------------------------------------

    def _run(self) -> None:
        quiet.on = True  # the SDK's "queue full, dropping span" warning comes once per span: silenced
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            self.export_one(item)

    def export_one(self, call: Call) -> None:
        """Export one call, counting it; a failure is logged and does not stop later exports."""
        quiet.on = True
        try:
            self.export(call)
            self.exported += 1
        except Exception:  # noqa: BLE001 - one odd call must not stop the exports
            quiet.on = False
            log.exception("exporting call %s to OpenTelemetry failed", call.id)
            quiet.on = True

    def export(self, call: Call) -> None:
        """Turn one finished call into its spans and metric points (runs on the worker thread)."""
        config = self.config
        described = describe_call(
            call, capture_content=config.capture_content, content_max_chars=config.content_max_chars
        )
        if self.spans is not None:
            self.spans.export(call, described.name, described.attributes)
        if self.metrics is not None:
            self.metrics.record(call, described)

    # -- flushing and shutdown --------------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued call is exported and handed to the collector (tests, shutdown)."""
        if self._worker is not None:
            marker = threading.Event()
            self._queue.put(marker)
            if not marker.wait(timeout):
                return False
        ok = True
        if self.processor is not None:
            ok = self.processor.force_flush(int(timeout * 1000))
        if self.metrics is not None:
            ok = self.metrics.export() and ok
        return ok

    def close(self, timeout: float = 5.0) -> None:
        """Export what is queued, then stop; bounded by `timeout` even if the collector is gone."""
        if self._closed:
            return
        self._closed = True
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(timeout)
        # TracerProvider.shutdown waits up to 30 s for a collector that may be gone: bound it.
        if self.tracer_provider is not None:
            _bounded(self.tracer_provider.shutdown, timeout)
        if self.metrics is not None:
            _bounded(self.metrics.close, timeout)


def _bounded(function: Any, timeout: float) -> None:
    thread = threading.Thread(target=function, name="interlock-otel-shutdown", daemon=True)
    thread.start()
    thread.join(timeout)


__all__ = ["Exporter", "build_exporter", "export_configured", "local_exporter", "resolve_endpoint"]
