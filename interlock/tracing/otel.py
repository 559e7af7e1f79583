"""OpenTelemetry export: every finished call becomes a span tree and metrics, off the event loop.

The `done` hook only queues the Call. A worker thread turns it into spans after the fact, with the
call's own timestamps and ids: the call span has exactly `call.span_id` in `call.trace_id` under
`call.parent_span_id`, the ids the Identify stage chose and interlock forwarded upstream in
`traceparent`, so the agent's spans, interlock's and the upstream's join one trace. The SDK's batch
processor and the OTLP exporter then ship them from their own thread.

Configured by the `otel:` section and the standard OTEL_* variables; docs/otel.md says how.
"""

from __future__ import annotations

import contextvars
import logging
import os
import queue
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from interlock import __version__
from interlock.config import Otel
from interlock.tracing.call import Call
from interlock.tracing.otel_attributes import describe_attempt, describe_call
from interlock.tracing.otel_metrics import CallMetrics

log = logging.getLogger("interlock.otel")

PROTOCOLS = ("http/protobuf", "grpc")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


# -- ids: the exported call span takes the ids interlock already used on the wire ---------------

_forced: contextvars.ContextVar[tuple[int | None, int | None]] = contextvars.ContextVar(
    "interlock_otel_ids", default=(None, None)
)


class CallIdGenerator(IdGenerator):
    """Random ids, except that the next span started under `forcing` gets the given ids."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        trace_id, span_id = _forced.get()
        if span_id is not None:
            _forced.set((None, None))  # only the call span; its children get fresh ids
            return span_id
        return self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        trace_id, _ = _forced.get()
        return trace_id if trace_id is not None else self._random.generate_trace_id()


def _hex(value: str | None, length: int) -> int | None:
    if value is None or len(value) != length:
        return None
    try:
        number = int(value, 16)
    except ValueError:
        return None
    return number or None


# -- quiet failures: an unreachable collector is logged once, not once a batch ------------------

_quiet = threading.local()


class _QuietFilter(logging.Filter):
    """Swallows the OTel SDK's own log records while interlock's export code runs on this thread."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(_quiet, "on", False):
            _quiet.last = record.getMessage()
            return False
        return True


_QUIET_FILTER = _QuietFilter()


def _install_quiet_filter() -> None:
    # Filters apply to records of the logger they sit on, so every OTel logger gets it (the
    # exporters' modules are imported by now). Other threads' records, e.g. an agent's own OTel
    # in the same process, are untouched.
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("opentelemetry") and isinstance(logger, logging.Logger):
            if _QUIET_FILTER not in logger.filters:
                logger.addFilter(_QUIET_FILTER)


class _Health:
    """Export failures: the first is logged with its reason, then silence until a success."""

    def __init__(self, what: str, endpoint: str) -> None:
        self.what, self.endpoint = what, endpoint
        self.failures = 0
        self.failing = False
        self.lock = threading.Lock()

    def note(self, ok: bool, reason: str | None) -> None:
        with self.lock:
            if ok:
                if self.failing:
                    log.warning("OTel %s export to %s works again", self.what, self.endpoint)
                self.failing = False
                return
            self.failures += 1
            if not self.failing:
                self.failing = True
                log.warning(
                    "OTel %s export to %s failed (%s); dropping %s until it recovers (not logged again)",
                    self.what,
                    self.endpoint,
                    reason or "no reason given",
                    self.what,
                )


def _guarded(health: _Health, export: Any) -> bool:
    was = getattr(_quiet, "on", False)
    _quiet.on, _quiet.last = True, None
    try:
        ok = bool(export())
    except Exception as exc:  # noqa: BLE001 - an exporter must never take interlock down
        ok, _quiet.last = False, f"{type(exc).__name__}: {exc}"
    finally:
        _quiet.on = was
    health.note(ok, _quiet.last)
    return ok


class _GuardedSpanExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, health: _Health) -> None:
        self.inner, self.health = inner, health

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        ok = _guarded(self.health, lambda: self.inner.export(spans) == SpanExportResult.SUCCESS)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        _guarded(self.health, lambda: _returns_true(self.inner.shutdown))

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _GuardedMetricExporter(MetricExporter):
    def __init__(self, inner: MetricExporter, health: _Health) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self.inner, self.health = inner, health

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        ok = _guarded(
            self.health,
            lambda: self.inner.export(metrics_data, timeout_millis=timeout_millis) == MetricExportResult.SUCCESS,
        )
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        _guarded(self.health, lambda: _returns_true(self.inner.shutdown, timeout_millis=timeout_millis))


def _returns_true(function: Any, *args: Any, **kwargs: Any) -> bool:
    function(*args, **kwargs)
    return True


# -- configuration: the otel: section, then the standard OTEL_* variables -----------------------


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def resolve_protocol(config: Otel, signal: str) -> str:
    protocol = config.protocol or _env(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    protocol = protocol or "http/protobuf"
    if protocol not in PROTOCOLS:
        raise ValueError(f"OTLP protocol {protocol!r} is not supported; use one of {', '.join(PROTOCOLS)}")
    return protocol


def resolve_endpoint(config: Otel, signal: str) -> str | None:
    """The endpoint to export `signal` ("TRACES"/"METRICS") to, or None: not configured."""
    path = "v1/" + signal.lower()
    if config.endpoint:
        return config.endpoint.rstrip("/")
    exact = _env(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    if exact:
        return exact
    base = _env("OTEL_EXPORTER_OTLP_ENDPOINT")
    if base is None:
        return None
    return base.rstrip("/") if resolve_protocol(config, signal) == "grpc" else f"{base.rstrip('/')}/{path}"


def _signal_wanted(signal: str) -> bool:
    # OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER: "none" turns a signal off; "otlp" is the default.
    value = (_env(f"OTEL_{signal}_EXPORTER") or "otlp").lower()
    return value != "none"


def export_configured(config: Otel) -> bool:
    """Whether there is anywhere to export to; without, interlock adds no export stage at all."""
    if not config.enabled or (_env("OTEL_SDK_DISABLED") or "").lower() == "true":
        return False
    return any(
        _signal_wanted(signal) and resolve_endpoint(config, signal) is not None for signal in ("TRACES", "METRICS")
    ) and (_signal_wanted("TRACES") or config.metrics)


def _resource(config: Otel) -> Resource:
    attributes: dict[str, Any] = {"service.version": __version__}
    if config.service_name or not _env("OTEL_SERVICE_NAME"):
        attributes["service.name"] = config.service_name or "interlock"
    return Resource.create(attributes)


def _span_exporter(config: Otel, endpoint: str) -> SpanExporter:
    headers = dict(config.headers) or None
    if resolve_protocol(config, "TRACES") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

        return GrpcSpanExporter(endpoint=endpoint, headers=headers)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

    if config.endpoint:
        endpoint += "/v1/traces"
    return HttpSpanExporter(endpoint=endpoint, headers=headers)


def _metric_exporter(config: Otel, endpoint: str) -> MetricExporter:
    headers = dict(config.headers) or None
    if resolve_protocol(config, "METRICS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter

        return GrpcMetricExporter(endpoint=endpoint, headers=headers)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter

    if config.endpoint:
        endpoint += "/v1/metrics"
    return HttpMetricExporter(endpoint=endpoint, headers=headers)


def build_exporter(config: Otel) -> Exporter | None:
    """The export stage for this configuration, or None when nothing is to be exported."""
    if not export_configured(config):
        return None
    processor: SpanProcessor | None = None
    readers: list[MetricReader] = []
    health: list[_Health] = []
    traces_endpoint = resolve_endpoint(config, "TRACES")
    if traces_endpoint and _signal_wanted("TRACES"):
        health.append(_Health("spans", traces_endpoint))
        # The SDK's batch processor bounds memory (OTEL_BSP_MAX_QUEUE_SIZE spans, 2048 by default).
        processor = BatchSpanProcessor(_GuardedSpanExporter(_span_exporter(config, traces_endpoint), health[-1]))
    metrics_endpoint = resolve_endpoint(config, "METRICS")
    if config.metrics and metrics_endpoint and _signal_wanted("METRICS"):
        health.append(_Health("metrics", metrics_endpoint))
        metrics = _GuardedMetricExporter(_metric_exporter(config, metrics_endpoint), health[-1])
        interval = config.metrics_interval * 1000 if config.metrics_interval else None
        readers.append(PeriodicExportingMetricReader(metrics, export_interval_millis=interval))
    _install_quiet_filter()
    exporter = Exporter(config, processor, readers)
    exporter.health = health
    return exporter


# -- the stage ----------------------------------------------------------------------------------


class Exporter:
    """Stage: queues each finished call; a worker thread exports it (spans and metrics)."""

    name = "export"

    def __init__(
        self, config: Otel, processor: SpanProcessor | None, metric_readers: Sequence[MetricReader] = ()
    ) -> None:
        self.config = config
        resource = _resource(config)
        self.processor = processor
        self.tracer_provider: TracerProvider | None = None
        self.tracer: trace.Tracer | None = None
        if processor is not None:
            self.tracer_provider = TracerProvider(
                resource=resource, id_generator=CallIdGenerator(), shutdown_on_exit=False
            )
            self.tracer_provider.add_span_processor(processor)
            self.tracer = self.tracer_provider.get_tracer("interlock", __version__)
        self.meter_provider: MeterProvider | None = None
        self.metrics: CallMetrics | None = None
        if metric_readers:
            self.meter_provider = MeterProvider(
                resource=resource, metric_readers=list(metric_readers), shutdown_on_exit=False
            )
            self.metrics = CallMetrics(self.meter_provider.get_meter("interlock", __version__))
        self.queue_size = config.queue_size
        self.dropped = 0  # calls not exported because the queue was full
        self.health: list[_Health] = []  # per signal: export failures seen
        self.exported = 0
        self._queue: queue.SimpleQueue[Call | threading.Event | None] = queue.SimpleQueue()
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
        _quiet.on = True  # the SDK's "queue full, dropping span" warnings, once per span: counted below
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            try:
                self.export(item)
                self.exported += 1
            except Exception:  # noqa: BLE001 - one odd call must not stop the exports
                _quiet.on = False
                log.exception("exporting call %s to OpenTelemetry failed", item.id)
                _quiet.on = True

    def export(self, call: Call) -> None:
        """Turn one finished call into its spans and metric points (runs on the worker thread)."""
        config = self.config
        described = describe_call(
            call, capture_content=config.capture_content, content_max_chars=config.content_max_chars
        )
        if self.tracer is not None:
            self._spans(self.tracer, call, described.name, described.attributes)
        if self.metrics is not None:
            self.metrics.record(call, described)

    def _spans(self, tracer: trace.Tracer, call: Call, name: str, attributes: dict[str, Any]) -> None:
        start = int(call.started_at * 1e9)
        end = start + int((call.duration_ms or 0.0) * 1e6)
        trace_id = _hex(call.trace_id, 32)
        parent_id = _hex(call.parent_span_id, 16)
        if trace_id is not None and parent_id is not None:
            parent = SpanContext(trace_id, parent_id, is_remote=True, trace_flags=_SAMPLED)
            context = trace.set_span_in_context(NonRecordingSpan(parent))
        else:
            context = Context()
        _forced.set((trace_id, _hex(call.span_id, 16)))
        try:
            span = tracer.start_span(name, context, SpanKind.CLIENT, attributes, start_time=start)
        finally:
            _forced.set((None, None))
        if not span.is_recording():
            return
        inside = trace.set_span_in_context(span)
        for number, attempt in enumerate(call.attempts, 1):
            attempt_name, attempt_attributes = describe_attempt(call, attempt, number)
            attempt_start = start + int(attempt.started_ms * 1e6)
            child = tracer.start_span(
                attempt_name, inside, SpanKind.CLIENT, attempt_attributes, start_time=attempt_start
            )
            if attempt.error or (attempt.status is not None and attempt.status >= 500):
                child.set_status(Status(StatusCode.ERROR, attempt.error or f"HTTP {attempt.status}"))
            duration = attempt.duration_ms
            child.end(attempt_start + int(duration * 1e6) if duration is not None else end)
        for decision in call.decisions:
            at = start + int((decision.t_ms or 0.0) * 1e6)
            decision_attributes: dict[str, Any] = {
                "interlock.decision.stage": decision.stage,
                "interlock.decision.action": decision.action,
            }
            if decision.rule:
                decision_attributes["interlock.decision.rule"] = decision.rule
            if decision.reason:
                decision_attributes["interlock.decision.reason"] = decision.reason
            child = tracer.start_span(
                f"{decision.stage} {decision.action}", inside, SpanKind.INTERNAL, decision_attributes, start_time=at
            )
            if decision.action == "error":
                child.set_status(Status(StatusCode.ERROR, decision.reason))
            child.end(at)
        for finding in call.findings:  # never the value: entity, place and action only
            span.add_event(
                "interlock.finding",
                {
                    "interlock.finding.entity": finding.entity,
                    "interlock.finding.where": finding.where,
                    "interlock.finding.action": finding.action,
                    "interlock.finding.score": finding.score,
                },
                timestamp=end,
            )
        if call.outcome != "ok":
            span.set_status(Status(StatusCode.ERROR, call.error or call.outcome))
        span.end(end)

    # -- flushing and shutdown --------------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued call is exported and handed to the collector (tests, shutdown)."""
        marker = threading.Event()
        self._queue.put(marker)
        if not marker.wait(timeout):
            return False
        ok = True
        if self.processor is not None:
            ok = self.processor.force_flush(int(timeout * 1000))
        if self.meter_provider is not None:
            ok = self.meter_provider.force_flush(int(timeout * 1000)) and ok
        return ok

    def close(self, timeout: float = 5.0) -> None:
        """Export what is queued, then stop; bounded by `timeout` even if the collector is gone."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._worker.join(timeout)
        # TracerProvider.shutdown waits up to 30 s for a collector that may be gone: bound it.
        if self.tracer_provider is not None:
            _bounded(self.tracer_provider.shutdown, timeout)
        if self.meter_provider is not None:
            _bounded(self.meter_provider.shutdown, timeout)


def _bounded(function: Any, timeout: float) -> None:
    thread = threading.Thread(target=function, name="interlock-otel-shutdown", daemon=True)
    thread.start()
    thread.join(timeout)


__all__ = ["Exporter", "CallIdGenerator", "build_exporter", "export_configured", "resolve_endpoint"]
