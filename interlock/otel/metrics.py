"""Metrics for every exported call: the GenAI client metrics, MCP's, and interlock's own counters.

Aggregated here, exported as the SDK's metric data through the SDK's OTLP metric exporter.

Why not the SDK's instruments: a synchronous `Histogram.record` costs ~15 µs (a Measurement
object, attribute cleaning and hashing, a lock) and a call makes three or four of them, more than
building and encoding the call's spans. A call's metric attributes repeat from call to call, so
`record` here is a dict lookup and a bucket increment per point (~1 µs), and every
`metrics_interval` the totals become `MetricsData` (histograms with the conventions' bucket
boundaries, min and max; monotonic sums) for the exporter. Temporality follows the exporter's
preference (`OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`: cumulative by default, or delta).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from bisect import bisect_left
from typing import Any

from opentelemetry.sdk.metrics import Counter as SdkCounter
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics, mcp_metrics

from interlock import __version__
from interlock.core.call import Call
from interlock.otel.attributes import Described
from interlock.protocols import ADAPTERS

log = logging.getLogger("interlock.otel")

#: Bucket boundaries the GenAI conventions recommend.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
SECONDS_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)

AttributeKey = tuple[tuple[str, Any], ...]
#: Attribute sets per metric before new ones go to one overflow series (the SDK's limit and marker):
#: agent names come from a header, so the number of series must be bounded.
CARDINALITY_LIMIT = 2000
OVERFLOW: AttributeKey = (("otel.metric.overflow", True),)


class _Histogram:
    """Explicit-bucket histogram points by attribute set (buckets are upper-inclusive, as the SDK's)."""

    def __init__(self, name: str, unit: str, description: str, bounds: tuple[float, ...]) -> None:
        self.name, self.unit, self.description, self.bounds = name, unit, description, bounds
        # attributes → [count, sum, min, max, bucket counts]
        self.points: dict[AttributeKey, list[Any]] = {}

    def record(self, value: float, attributes: AttributeKey) -> None:
        point = self.points.get(attributes)
        if point is None:
            if len(self.points) >= CARDINALITY_LIMIT - 1:
                attributes = OVERFLOW
                point = self.points.get(attributes)
        if point is None:
            point = self.points[attributes] = [0, 0, value, value, [0] * (len(self.bounds) + 1)]
        point[0] += 1
        point[1] += value
        if value < point[2]:
            point[2] = value
        if value > point[3]:
            point[3] = value
        point[4][bisect_left(self.bounds, value)] += 1

    def data(self, since: int, now: int, temporality: AggregationTemporality) -> Histogram:
        return Histogram(
            [
                HistogramDataPoint(dict(key), since, now, count, total, list(buckets), self.bounds, low, high)
                for key, (count, total, low, high, buckets) in self.points.items()
            ],
            temporality,
        )


class _Sum:
    """A monotonic sum by attribute set (interlock's counters)."""

    def __init__(self, name: str, unit: str, description: str) -> None:
        self.name, self.unit, self.description = name, unit, description
        self.points: dict[AttributeKey, float] = {}

    def add(self, attributes: AttributeKey, value: float = 1) -> None:
        points = self.points
        if attributes not in points and len(points) >= CARDINALITY_LIMIT - 1:
            attributes = OVERFLOW
        points[attributes] = points.get(attributes, 0) + value

    def data(self, since: int, now: int, temporality: AggregationTemporality) -> Sum:
        return Sum(
            [NumberDataPoint(dict(key), since, now, value) for key, value in self.points.items()],
            temporality,
            True,
        )


class CallMetrics:
    """The call metrics: `record` runs on the export worker; `collect` and the periodic export on a
    thread of their own (when an exporter is given)."""

    def __init__(
        self,
        resource: Resource,
        exporter: MetricExporter | None = None,
        *,
        interval: float | None = None,
        temporality: dict[type, AggregationTemporality] | None = None,
    ) -> None:
        self.resource = resource
        self.scope = InstrumentationScope("interlock", __version__)
        self.exporter = exporter
        preferred = temporality or getattr(exporter, "_preferred_temporality", None) or {}
        self.histogram_temporality = preferred.get(SdkHistogram, AggregationTemporality.CUMULATIVE)
        self.sum_temporality = preferred.get(SdkCounter, AggregationTemporality.CUMULATIVE)
        self.token_usage = _Histogram(
            gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE,
            "{token}",
            "Number of input and output tokens used.",
            TOKEN_BUCKETS,
        )
        self.duration = _Histogram(
            gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION, "s", "GenAI operation duration.", SECONDS_BUCKETS
        )
        self.first_chunk = _Histogram(
            gen_ai_metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK,
            "s",
            "Time to receive the first chunk of a streamed response.",
            SECONDS_BUCKETS,
        )
        self.mcp_duration = _Histogram(
            mcp_metrics.MCP_CLIENT_OPERATION_DURATION,
            "s",
            "The duration of the MCP request or notification as observed by the sender.",
            SECONDS_BUCKETS,
        )
        self.calls = _Sum("interlock.calls", "{call}", "Calls through interlock, by route, agent and outcome.")
        self.retries = _Sum("interlock.retries", "{attempt}", "Upstream attempts after the first one, by route.")
        self.decisions = _Sum("interlock.policy.decisions", "{decision}", "Policy and guardrail decisions.")
        self.findings = _Sum("interlock.guardrail.findings", "{finding}", "PII and secrets found by the guardrails.")
        self.cost = _Sum("interlock.cost", "USD", "What calls cost, by route, agent and model (docs/policies.md).")
        self._histograms = (self.token_usage, self.duration, self.first_chunk, self.mcp_duration)
        self._sums = (self.calls, self.retries, self.decisions, self.findings, self.cost)
        self._lock = threading.Lock()
        # a point's start time: cumulative, when these metrics began; delta, the last collection
        self._started = self._last_collect = time.time_ns()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if exporter is not None:
            seconds = interval or float(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL") or 60_000) / 1000.0
            self.interval = seconds
            self._thread = threading.Thread(target=self._run, name="interlock-otel-metrics", daemon=True)
            self._thread.start()

    def record(self, call: Call, described: Described) -> None:
        with self._lock:
            self.calls.add(
                (("interlock.route", call.route), ("interlock.agent", call.agent), ("interlock.outcome", call.outcome))
            )
            if len(call.attempts) > 1:
                self.retries.add((("interlock.route", call.route),), len(call.attempts) - 1)
            if call.cost_usd:
                model = call.model or ""
                self.cost.add(
                    (("interlock.route", call.route), ("interlock.agent", call.agent), ("gen_ai.request.model", model)),
                    call.cost_usd,
                )
            for decision in call.decisions:
                attributes: AttributeKey = (
                    ("interlock.decision.stage", decision.stage),
                    ("interlock.decision.action", decision.action),
                )
                if decision.rule:
                    attributes += (("interlock.decision.rule", decision.rule),)
                self.decisions.add(attributes)
            for finding in call.findings:
                self.findings.add(
                    (("interlock.finding.entity", finding.entity), ("interlock.finding.action", finding.action))
                )
            seconds = (call.duration_ms or 0.0) / 1000.0
            metric = described.metric_key
            if ADAPTERS[call.protocol].is_jsonrpc:
                self.mcp_duration.record(seconds, metric)
                return
            if described.operation is None:
                return
            self.duration.record(seconds, metric)
            if call.stream and call.ttfb_ms is not None:
                self.first_chunk.record(call.ttfb_ms / 1000.0, metric)
            if call.input_tokens is not None:
                self.token_usage.record(call.input_tokens, (*metric, (gen_ai.GEN_AI_TOKEN_TYPE, "input")))
            if call.output_tokens is not None:
                self.token_usage.record(call.output_tokens, (*metric, (gen_ai.GEN_AI_TOKEN_TYPE, "output")))

    def collect(self) -> MetricsData:
        """The metrics so far, as the SDK's data model (delta: since the last collect, then reset)."""
        now = time.time_ns()
        metrics: list[Metric] = []
        instruments: list[tuple[_Histogram | _Sum, AggregationTemporality]] = [
            *((histogram, self.histogram_temporality) for histogram in self._histograms),
            *((total, self.sum_temporality) for total in self._sums),
        ]
        with self._lock:
            for instrument, temporality in instruments:
                if not instrument.points:
                    continue
                delta = temporality == AggregationTemporality.DELTA
                since = self._last_collect if delta else self._started
                data = instrument.data(since, now, temporality)
                metrics.append(Metric(instrument.name, instrument.description, instrument.unit, data))
                if delta:
                    instrument.points = {}
            self._last_collect = now
        return MetricsData([ResourceMetrics(self.resource, [ScopeMetrics(self.scope, metrics, "")], "")])

    def export(self) -> bool:
        """Collect and hand the metrics to the exporter now."""
        if self.exporter is None:
            return True
        data = self.collect()
        if not data.resource_metrics[0].scope_metrics[0].metrics:
            return True
        result = self.exporter.export(data, timeout_millis=10_000)
        return bool(result == MetricExportResult.SUCCESS)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.export()

    def close(self, timeout: float = 5.0) -> None:
        """A last export, then the exporter shuts down."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.exporter is not None:
            self.export()
            self.exporter.shutdown(timeout_millis=timeout * 1000)
