"""interlock's OTLP span encoder must decode to exactly what the SDK's own encoder builds."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from interlock.config import Otel
from interlock.otel import encode as otel_encode
from interlock.otel.config import _span_exporter
from interlock.otel.encode import FastHttpSpanExporter, SpanEncoder

TRACE = 0x0AF7651916CD43DD8448EB211C80319C
RESOURCE = Resource.create({"service.name": "interlock", "service.version": "1.2"})
OTHER_RESOURCE = Resource({"host.name": "ü-host", "cores": 2}, "https://opentelemetry.io/schemas/1.30.0")
SCOPE = InstrumentationScope("interlock", "0.1", "https://schema", {"scope.attr": "x"})


def context(span_id: int, remote: bool = False, state: TraceState | None = None) -> SpanContext:
    return SpanContext(TRACE, span_id, remote, TraceFlags(TraceFlags.SAMPLED), state)


def span(name: str, span_id: int, **fields: Any) -> ReadableSpan:
    return ReadableSpan(
        name,
        fields.get("context") or context(span_id),
        fields.get("parent"),
        fields.get("resource", RESOURCE),
        fields.get("attributes"),
        fields.get("events", ()),
        fields.get("links", ()),
        fields.get("kind", SpanKind.INTERNAL),
        None,
        fields.get("status", Status(StatusCode.UNSET)),
        fields.get("start", 1_700_000_000_000_000_000),
        fields.get("end", 1_700_000_000_040_000_000),
        fields.get("scope", SCOPE),
    )


VALUES: dict[str, Any] = {
    "text": "chat gpt-4o-mini",
    "unicode": "naïve ☃ 日本",
    "empty": "",
    "yes": True,
    "no": False,
    "zero": 0,
    "small": 7,
    "big": 2**40 + 3,
    "negative": -5,
    "most_negative": -(2**63),
    "float": 0.2,
    "float_zero": 0.0,
    "bytes": b"\x00\xff",
    "strings": ("stop", "length"),
    "list": ["END", ""],
    "ints": [1, 2, 300],
    "mixed_nested": {"a": 1, "b": ["x"], "c": {"d": True}},
    "none": None,
}

SPANS = [
    span(
        "chat gpt-4o-mini",
        0x00F067AA0BA902B7,
        context=context(0x00F067AA0BA902B7, state=TraceState([("vendor", "v1"), ("other", "x")])),
        parent=context(0xB7AD6B7169203331, remote=True),
        kind=SpanKind.CLIENT,
        attributes=VALUES,
        events=(Event("interlock.finding", {"entity": "EMAIL_ADDRESS", "score": 0.9}, 1_700_000_000_030_000_000),),
        links=(Link(context(0x1111, remote=True), {"link.attr": "y"}), Link(context(0x2222))),
        status=Status(StatusCode.ERROR, "upstream_error"),
    ),
    span("attempt 1", 0x3333, parent=context(0x00F067AA0BA902B7), kind=SpanKind.CLIENT, attributes={"n": 1}),
    span("", 0x4444, parent=None, resource=OTHER_RESOURCE, scope=None, status=Status(StatusCode.OK), attributes={}),
    span("no times", 0x5555, kind=SpanKind.SERVER, start=None, end=None, events=(Event("bare", None, 0),)),
    span("consumer", 0x6666, kind=SpanKind.CONSUMER, scope=InstrumentationScope("other")),
    span("producer", 0x7777, kind=SpanKind.PRODUCER, resource=OTHER_RESOURCE),
]


def test_every_field_and_value_type_decodes_to_the_sdk_encoding() -> None:
    expected = encode_spans(SPANS)
    got = ExportTraceServiceRequest.FromString(SpanEncoder().encode(SPANS))
    assert got == expected
    # the groups: two resources, each with two scopes (interlock + other; interlock + none)
    assert len(got.resource_spans) == 2
    assert [len(r.scope_spans) for r in got.resource_spans] == [2, 2]


@pytest.mark.parametrize("index", range(len(SPANS)))
def test_each_span_alone(index: int) -> None:
    assert ExportTraceServiceRequest.FromString(SpanEncoder().encode([SPANS[index]])) == encode_spans([SPANS[index]])


def test_cached_attributes_stay_right_when_values_change_and_the_cache_is_cleared(monkeypatch: Any) -> None:
    monkeypatch.setattr(otel_encode, "_CACHE_LIMIT", 3)
    encoder = SpanEncoder()
    for round_ in range(5):
        # True and 1 hash alike: the cache must still tell them apart (bool vs int)
        attributes = {"flag": True, "one": 1, "round": f"r{round_}", "model": "m", "same": round_ % 2 == 0}
        batch = [span("s", 0x10 + round_, attributes=attributes)]
        assert ExportTraceServiceRequest.FromString(encoder.encode(batch)) == encode_spans(batch)


def test_an_unencodable_value_fails_the_batch_like_the_sdk() -> None:
    bad = [span("s", 0x99, attributes={"obj": object()})]
    with pytest.raises(TypeError):
        SpanEncoder().encode(bad)
    exporter = FastHttpSpanExporter(endpoint="http://127.0.0.1:9/v1/traces")
    try:
        assert exporter.export(bad).name == "FAILURE"  # refused before any network
    finally:
        exporter.shutdown()


def test_the_configured_exporters_use_the_encoder() -> None:
    http = _span_exporter(Otel(endpoint="http://127.0.0.1:9", protocol="http/protobuf"), "http://127.0.0.1:9")
    grpc = _span_exporter(Otel(endpoint="http://127.0.0.1:9", protocol="grpc"), "http://127.0.0.1:9")
    try:
        assert isinstance(http, FastHttpSpanExporter)
        assert http._endpoint == "http://127.0.0.1:9/v1/traces"
        request = grpc._translate_data(SPANS)  # type: ignore[attr-defined]
        assert request == encode_spans(SPANS)
    finally:
        http.shutdown()
        grpc.shutdown()
