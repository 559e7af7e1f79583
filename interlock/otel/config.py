"""Where OpenTelemetry data goes: the `otel:` section, then the standard OTEL_* variables.

Also how failures stay quiet: the SDK's exporters log every failed batch and retry; interlock logs
the first failure of each signal with its reason, then nothing until it works again.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from interlock import __version__
from interlock.config import Otel
from interlock.otel.spans import CachedHashResource

log = logging.getLogger("interlock.otel")

PROTOCOLS = ("http/protobuf", "grpc")

# -- quiet failures: an unreachable collector is logged once, not once a batch ------------------

quiet = threading.local()


class _QuietFilter(logging.Filter):
    """Swallows the OTel SDK's own log records while interlock's export code runs on this thread."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(quiet, "on", False):
            if getattr(quiet, "last", None) is None:  # the first says why (e.g. connection refused)
                quiet.last = record.getMessage()
            return False
        return True


_QUIET_FILTER = _QuietFilter()


def install_quiet_filter() -> None:
    # Filters apply to records of the logger they sit on, so every OTel logger gets it (the
    # exporters' modules are imported by now). Other threads' records, e.g. an agent's own OTel
    # in the same process, are untouched.
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("opentelemetry") and isinstance(logger, logging.Logger):
            if _QUIET_FILTER not in logger.filters:
                logger.addFilter(_QUIET_FILTER)


class Health:
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


def _guarded(health: Health, export: Any) -> bool:
    was = getattr(quiet, "on", False)
    quiet.on, quiet.last = True, None
    try:
        ok = bool(export())
    except Exception as exc:  # noqa: BLE001 - an exporter must never take interlock down
        ok, quiet.last = False, f"{type(exc).__name__}: {exc}"
    finally:
        quiet.on = was
    health.note(ok, quiet.last)
    return ok


class _GuardedSpanExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, health: Health) -> None:
        self.inner, self.health = inner, health

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        ok = _guarded(self.health, lambda: self.inner.export(spans) == SpanExportResult.SUCCESS)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        _quietly(self.inner.shutdown)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _GuardedMetricExporter(MetricExporter):
    def __init__(self, inner: MetricExporter, health: Health) -> None:
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
        _quietly(self.inner.shutdown, timeout_millis=timeout_millis)


def _quietly(function: Any, *args: Any, **kwargs: Any) -> None:
    was = getattr(quiet, "on", False)
    quiet.on = True
    try:
        function(*args, **kwargs)
    except Exception:  # noqa: BLE001 - shutting down: nothing left to do about it
        pass
    finally:
        quiet.on = was


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


def signal_wanted(signal: str) -> bool:
    # OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER: "none" turns a signal off; "otlp" is the default.
    value = (_env(f"OTEL_{signal}_EXPORTER") or "otlp").lower()
    return value != "none"


def export_configured(config: Otel) -> bool:
    """Whether there is anywhere to export to; without, interlock adds no export stage at all."""
    if not config.enabled or (_env("OTEL_SDK_DISABLED") or "").lower() == "true":
        return False
    return any(
        signal_wanted(signal) and resolve_endpoint(config, signal) is not None for signal in ("TRACES", "METRICS")
    ) and (signal_wanted("TRACES") or config.metrics)


def resource(config: Otel) -> Resource:
    attributes: dict[str, Any] = {"service.version": __version__}
    if config.service_name or not _env("OTEL_SERVICE_NAME"):
        attributes["service.name"] = config.service_name or "interlock"
    created = Resource.create(attributes)
    return CachedHashResource(created.attributes, created.schema_url)


def _span_exporter(config: Otel, endpoint: str) -> SpanExporter:
    headers = dict(config.headers) or None
    # The SDK's OTLP exporters with a faster span encoder (encode.py).
    if resolve_protocol(config, "TRACES") == "grpc":
        # Only the configured protocol's exporter is imported: the gRPC one brings grpcio, a large import.
        from interlock.otel.encode import grpc_span_exporter

        return grpc_span_exporter(endpoint=endpoint, headers=headers)
    # Only the configured protocol's exporter is imported (see above).
    from interlock.otel.encode import FastHttpSpanExporter

    if config.endpoint:
        endpoint += "/v1/traces"
    return FastHttpSpanExporter(endpoint=endpoint, headers=headers)


def _metric_exporter(config: Otel, endpoint: str) -> MetricExporter:
    headers = dict(config.headers) or None
    if resolve_protocol(config, "METRICS") == "grpc":
        # Only the configured protocol's exporter is imported: the gRPC one brings grpcio, a large import.
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter

        return GrpcMetricExporter(endpoint=endpoint, headers=headers)
    # Only the configured protocol's exporter is imported (see above).
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter

    if config.endpoint:
        endpoint += "/v1/metrics"
    return HttpMetricExporter(endpoint=endpoint, headers=headers)


def providers(config: Otel) -> tuple[SpanProcessor | None, MetricExporter | None, list[Health]]:
    """The span processor and metric exporter for this configuration, each with its failure count."""
    processor: SpanProcessor | None = None
    metrics: MetricExporter | None = None
    health: list[Health] = []
    traces_endpoint = resolve_endpoint(config, "TRACES")
    if traces_endpoint and signal_wanted("TRACES"):
        health.append(Health("spans", traces_endpoint))
        # The SDK's batch processor bounds memory (OTEL_BSP_MAX_QUEUE_SIZE spans, 2048 by default).
        processor = BatchSpanProcessor(_GuardedSpanExporter(_span_exporter(config, traces_endpoint), health[-1]))
    metrics_endpoint = resolve_endpoint(config, "METRICS")
    if config.metrics and metrics_endpoint and signal_wanted("METRICS"):
        health.append(Health("metrics", metrics_endpoint))
        metrics = _GuardedMetricExporter(_metric_exporter(config, metrics_endpoint), health[-1])
    install_quiet_filter()
    return processor, metrics, health
