"""interlock's own metric aggregation: the SDK's numbers, both temporalities, and OTLP on the wire."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.resources import Resource

from interlock.otel.attributes import describe_call
from interlock.otel.metrics import CARDINALITY_LIMIT, SECONDS_BUCKETS, TOKEN_BUCKETS, CallMetrics
from interlock.scripted import Script, ScriptedUpstream
from interlock.testing import Running
from tests.otel.otel_helpers import chat_call

DURATIONS_MS = [5.0, 10.0, 20.0, 20.0001, 640.0, 99_000.0, 0.0]  # on, between and past the bounds


def calls(model: str = "gpt-4o-mini") -> list[Any]:
    made = []
    for number, duration in enumerate(DURATIONS_MS):
        call = chat_call()
        call.model = model
        call.duration_ms = duration
        call.input_tokens, call.output_tokens = 4 * number, 1024 + number
        made.append(call)
    return made


def points(data: Any) -> dict[str, dict[tuple[tuple[str, Any], ...], Any]]:
    found: dict[str, dict[tuple[tuple[str, Any], ...], Any]] = {}
    for resource_metrics in data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    found.setdefault(metric.name, {})[tuple(sorted(point.attributes.items()))] = point
    return found


def test_histograms_match_what_the_sdk_instruments_aggregate() -> None:
    ours = CallMetrics(Resource.create({}))
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("reference")
    duration = meter.create_histogram(
        "gen_ai.client.operation.duration", explicit_bucket_boundaries_advisory=SECONDS_BUCKETS
    )
    tokens = meter.create_histogram("gen_ai.client.token.usage", explicit_bucket_boundaries_advisory=TOKEN_BUCKETS)
    for call in calls():
        described = describe_call(call)
        ours.record(call, described)
        duration.record(call.duration_ms / 1000.0, described.metric_attributes)
        tokens.record(call.input_tokens, {**described.metric_attributes, "gen_ai.token.type": "input"})
        tokens.record(call.output_tokens, {**described.metric_attributes, "gen_ai.token.type": "output"})
    expected, got = points(reader.get_metrics_data()), points(ours.collect())
    for name in ("gen_ai.client.operation.duration", "gen_ai.client.token.usage"):
        assert got[name].keys() == expected[name].keys()
        for key, point in expected[name].items():
            mine = got[name][key]
            assert (mine.count, mine.min, mine.max, list(mine.bucket_counts), list(mine.explicit_bounds)) == (
                point.count,
                point.min,
                point.max,
                list(point.bucket_counts),
                list(point.explicit_bounds),
            )
            assert mine.sum == pytest.approx(point.sum)
    assert (
        got["interlock.calls"][
            (("interlock.agent", "planner"), ("interlock.outcome", "ok"), ("interlock.route", "openai"))
        ].value
        == 7
    )


def test_cumulative_keeps_totals_and_delta_resets_them() -> None:
    cumulative = CallMetrics(Resource.create({}))
    delta = CallMetrics(
        Resource.create({}),
        temporality={Histogram: AggregationTemporality.DELTA, Counter: AggregationTemporality.DELTA},
    )
    first, second = calls("a"), calls("b")
    for metrics in (cumulative, delta):
        for call in first:
            metrics.record(call, describe_call(call))
    start = points(cumulative.collect())["interlock.calls"]
    assert points(delta.collect())
    for metrics in (cumulative, delta):
        for call in second[:2]:
            metrics.record(call, describe_call(call))
    later, changed = points(cumulative.collect()), points(delta.collect())
    assert sum(p.value for p in later["interlock.calls"].values()) == 9  # 7 + 2, since the start
    assert sum(p.value for p in changed["interlock.calls"].values()) == 2  # only what came since
    (duration,) = changed["gen_ai.client.operation.duration"].values()
    assert duration.count == 2 and duration.attributes["gen_ai.request.model"] == "b"  # the new series only
    kept = next(iter(later["interlock.calls"].values()))
    assert kept.start_time_unix_nano == next(iter(start.values())).start_time_unix_nano
    delta_point = next(iter(changed["interlock.calls"].values()))
    assert delta_point.start_time_unix_nano > kept.start_time_unix_nano  # the last collection
    assert points(delta.collect()) == {}  # nothing new: no points


class Collector(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP receiver that decodes what arrives with the official protobuf messages."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), CollectorHandler)
        self.metrics: list[Any] = []
        self.traces: list[Any] = []
        self.lock = threading.Lock()


class CollectorHandler(http.server.BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["content-length"]))
        with self.server.lock:
            if self.path == "/v1/metrics":
                self.server.metrics.append(ExportMetricsServiceRequest.FromString(body))
            elif self.path == "/v1/traces":
                self.server.traces.append(ExportTraceServiceRequest.FromString(body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def metric(requests: list[Any], name: str) -> list[Any]:
    return [
        m
        for r in requests
        for rm in r.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == name
    ]


def test_metrics_and_spans_reach_an_otlp_collector_from_the_export_process(
    make_interlock: Any, upstream: ScriptedUpstream, collector: Collector
) -> None:
    running: Running = make_interlock(
        otel={"endpoint": f"http://127.0.0.1:{collector.server_address[1]}", "metrics_interval": 0.1}
    )
    client = openai.OpenAI(base_url=running.url + "/openai", api_key="sk-agent", max_retries=0)
    for number in range(3):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"q{number}"}])
    exporter = running.runtime.services["otel"]
    deadline = time.monotonic() + 20
    while True:
        exporter.flush(timeout=2)
        with collector.lock:
            durations = metric(collector.metrics, "gen_ai.client.operation.duration")
            spans = [s for r in collector.traces for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
        if durations and durations[-1].histogram.data_points[0].count == 3 and len(spans) >= 6:
            break
        assert time.monotonic() < deadline, (durations, len(spans))
    (point,) = durations[-1].histogram.data_points
    assert durations[-1].histogram.aggregation_temporality == 2  # cumulative
    assert list(point.explicit_bounds) == list(SECONDS_BUCKETS) and sum(point.bucket_counts) == 3
    attributes = {kv.key: kv.value.string_value for kv in point.attributes}
    assert attributes["gen_ai.request.model"] == "gpt-4o-mini" and attributes["gen_ai.operation.name"] == "chat"
    (calls_metric,) = metric(collector.metrics[-1:], "interlock.calls")
    assert calls_metric.sum.is_monotonic and calls_metric.sum.data_points[0].as_int == 3
    assert sorted(s.name for s in spans).count("chat gpt-4o-mini") == 3


def test_series_are_capped_per_metric_with_an_overflow_series() -> None:
    metrics = CallMetrics(Resource.create({}))
    call = chat_call()
    described = describe_call(call)
    for number in range(CARDINALITY_LIMIT + 500):
        call.agent = f"agent-{number}"  # agents come from a header: unbounded
        metrics.record(call, described)
    series = points(metrics.collect())["interlock.calls"]
    assert len(series) == CARDINALITY_LIMIT
    overflow = series[(("otel.metric.overflow", True),)]
    assert overflow.value == 501  # every call is still counted
    assert sum(p.value for p in series.values()) == CARDINALITY_LIMIT + 500


def test_cost_reaches_the_collector_as_span_attributes_and_the_cost_metric(
    make_interlock: Any, upstream: ScriptedUpstream, collector: Collector
) -> None:
    """Issue 22: each call span carries `interlock.cost.usd` (the recorded price) and
    `interlock.cost.source`; the `interlock.cost` sum adds the calls' costs per route, agent and model.
    An unpriced call says so on its span and adds nothing to the metric."""
    running: Running = make_interlock(
        otel={"endpoint": f"http://127.0.0.1:{collector.server_address[1]}", "metrics_interval": 0.1},
        prices={"house-*": {"input": 1.0, "output": 2.0}},
    )
    client = openai.OpenAI(base_url=running.url + "/openai", api_key="sk-agent", max_retries=0)
    upstream.script(
        Script(input_tokens=1200, output_tokens=300, cached_tokens=1000),
        Script(input_tokens=50_000, output_tokens=10),
        Script(input_tokens=400, output_tokens=100),
        Script(input_tokens=10, output_tokens=10),
    )
    for model in ("gpt-4o-mini", "gpt-4o-mini", "house-llama", "mystery-model"):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    recorder, store = running.runtime.recorder, running.runtime.store
    assert recorder is not None and recorder.flush()
    recorded = {row["id"]: row for row in store.list_calls()}
    assert len(recorded) == 4
    exporter = running.runtime.services["otel"]
    deadline = time.monotonic() + 20
    while True:
        exporter.flush(timeout=2)
        with collector.lock:
            costs = metric(collector.metrics, "interlock.cost")
            spans = [s for r in collector.traces for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
        totals = {
            tuple(sorted((kv.key, kv.value.string_value) for kv in p.attributes)): p.as_double
            for p in (costs[-1].sum.data_points if costs else [])
        }
        called = [s for s in spans if s.name.startswith("chat ")]
        if len(called) >= 4 and sum(totals.values()) == pytest.approx(
            sum(r["cost_usd"] or 0 for r in recorded.values())
        ):
            break
        assert time.monotonic() < deadline, (totals, len(called))
    for span in called:
        attributes = {kv.key: kv.value for kv in span.attributes}
        row = next(
            r for r in recorded.values() if r["trace_id"] == span.trace_id.hex() and r["span_id"] == span.span_id.hex()
        )
        assert attributes["interlock.cost.source"].string_value == row["cost_source"]
        if row["cost_usd"] is None:
            assert row["cost_source"] == "unpriced" and "interlock.cost.usd" not in attributes
        else:
            assert row["cost_usd"] > 0
            assert attributes["interlock.cost.usd"].double_value == pytest.approx(row["cost_usd"], rel=1e-12)
    assert {row["cost_source"] for row in recorded.values()} >= {"prices", "unpriced"}
    assert {row["cost_source"] for row in recorded.values()} - {"prices", "unpriced"}  # the catalogue's
    agent = next(iter(recorded.values()))["agent"]
    expected = {
        (("gen_ai.request.model", model), ("interlock.agent", agent), ("interlock.route", "openai")): pytest.approx(
            sum(r["cost_usd"] for r in recorded.values() if r["model"] == model)
        )
        for model in ("gpt-4o-mini", "house-llama")  # mystery-model is unpriced: no series
    }
    assert totals == expected
    (sum_metric,) = metric(collector.metrics[-1:], "interlock.cost")
    assert sum_metric.unit == "USD" and sum_metric.sum.is_monotonic
