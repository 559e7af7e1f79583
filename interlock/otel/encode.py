"""OTLP protobuf encoding of the SDK's finished spans, written straight to bytes.

The OTLP exporters encode a batch by building a protobuf object per span, attribute and value
(`opentelemetry.exporter.otlp.proto.common`'s `encode_spans`): measured, about half of the export
process's CPU, ~110 µs per call for a call span and its attempt span. Most of a call's attributes
repeat from call to call (provider, model, route, agent, server address), so this encoder writes the
protobuf wire format directly and keeps the encoded bytes of repeated string and boolean attributes.
The result decodes to the same `ExportTraceServiceRequest` the SDK's encoder builds, for any span
(events, links, trace state, every attribute type); tests/otel/test_otel_encode.py compares the
two on spans covering each case.

The exporters below are the SDK's OTLP exporters with only that step swapped: HTTP sends these
bytes; gRPC parses them back into the request message its stub serializes (parsing is native code).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind

_DOUBLE = struct.Struct("<d")
_FIXED64 = struct.Struct("<Q")
_FIXED32 = struct.Struct("<I")
_SMALL = [bytes([n]) for n in range(128)]
#: SpanKind → the OTLP enum (SPAN_KIND_INTERNAL = 1, ...).
_KINDS = {kind: _SMALL[kind.value + 1] for kind in SpanKind}
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200
#: Encoded KeyValues of repeated attributes, per key; cleared when full, so it stays small.
_CACHE_LIMIT = 1024
#: Attributes whose value is new on every call: encoded, never cached (they would only churn it).
UNIQUE_KEYS = frozenset({"interlock.call.id", "gen_ai.response.id", "interlock.ttfb_ms", "jsonrpc.request.id"})


def _varint(value: int) -> bytes:
    if 0 <= value < 128:
        return _SMALL[value]
    value &= 0xFFFFFFFFFFFFFFFF  # negative int64: ten bytes of two's complement
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


def _any_value(value: Any) -> bytes:
    """An AnyValue message; the SDK encoder's type order (bool before int, str before sequence)."""
    if value.__class__ is str:
        data = value.encode()
        return b"\x0a" + _varint(len(data)) + data
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _delimited(b"\x0a", value.encode())
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    if isinstance(value, bytes):
        return _delimited(b"\x3a", value)
    if isinstance(value, Sequence):
        return _delimited(b"\x2a", b"".join(_delimited(b"\x0a", _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        return _delimited(b"\x32", b"".join(_delimited(b"\x0a", _key_value(str(k), v)) for k, v in value.items()))
    raise TypeError(f"Invalid type {type(value)} of value {value}")


def _key_value(key: str, value: Any) -> bytes:
    return _delimited(b"\x0a", key.encode()) + _delimited(b"\x12", _any_value(value))


class SpanEncoder:
    """Encodes batches of finished spans to an OTLP `ExportTraceServiceRequest` (bytes)."""

    def __init__(self) -> None:
        self._attributes: dict[bytes, dict[type, dict[str, dict[Any, bytes]]]] = {}
        self._resources: dict[Resource, bytes] = {}
        self._scopes: dict[InstrumentationScope | None, bytes] = {}

    def attributes(self, tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
        if not attributes:
            return b""
        # tag → kind → key → value → the encoded field: nested dicts, so a lookup hashes no tuple
        # (the kind keeps True apart from 1)
        by_kind = self._attributes.get(tag)
        if by_kind is None:
            by_kind = self._attributes[tag] = {str: {}, bool: {}, int: {}, tuple: {}}
        parts: list[bytes] = []
        append = parts.append
        for key, value in attributes.items():
            kind = value.__class__
            if kind is list and len(value) < 8:  # e.g. finish reasons: cached as a tuple of its items
                kind, lookup = tuple, tuple(value)
            else:
                lookup = value
            by_key = by_kind.get(kind)
            if by_key is None or key in UNIQUE_KEYS:
                append(_delimited(tag, _key_value(key, value)))
                continue
            by_value = by_key.get(key)
            if by_value is None:
                by_value = by_key[key] = {}
            try:
                encoded = by_value.get(lookup)
            except TypeError:  # an unhashable item in a list
                append(_delimited(tag, _key_value(key, value)))
                continue
            if encoded is None:
                if len(by_value) >= _CACHE_LIMIT:
                    by_value.clear()
                encoded = by_value[lookup] = _delimited(tag, _key_value(key, value))
            append(encoded)
        return b"".join(parts)

    def span(self, span: ReadableSpan) -> bytes:
        context = span.get_span_context()
        assert context is not None
        parts = [b"\x0a\x10" + context.trace_id.to_bytes(16, "big"), b"\x12\x08" + context.span_id.to_bytes(8, "big")]
        if context.trace_state:
            parts.append(_delimited(b"\x1a", ",".join(f"{k}={v}" for k, v in context.trace_state.items()).encode()))
        parent = span.parent
        if parent is not None:
            parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
        if span.name:
            parts.append(_delimited(b"\x2a", span.name.encode()))
        parts.append(b"\x30" + _KINDS[span.kind])
        if span.start_time:
            parts.append(b"\x39" + _FIXED64.pack(span.start_time))
        if span.end_time:
            parts.append(b"\x41" + _FIXED64.pack(span.end_time))
        parts.append(self.attributes(b"\x4a", span.attributes))
        if span.dropped_attributes:
            parts.append(b"\x50" + _varint(span.dropped_attributes))
        for event in span.events:
            event_parts = [b"\x09" + _FIXED64.pack(event.timestamp)] if event.timestamp else []
            if event.name:
                event_parts.append(_delimited(b"\x12", event.name.encode()))
            event_parts.append(self.attributes(b"\x1a", event.attributes))
            if event.dropped_attributes:
                event_parts.append(b"\x20" + _varint(event.dropped_attributes))
            parts.append(_delimited(b"\x5a", b"".join(event_parts)))
        if span.dropped_events:
            parts.append(b"\x60" + _varint(span.dropped_events))
        for link in span.links:
            link_parts = [
                b"\x0a\x10" + link.context.trace_id.to_bytes(16, "big"),
                b"\x12\x08" + link.context.span_id.to_bytes(8, "big"),
                self.attributes(b"\x22", link.attributes),
            ]
            if link.dropped_attributes:
                link_parts.append(b"\x28" + _varint(link.dropped_attributes))
            link_parts.append(b"\x35" + _FIXED32.pack(_flags(link.context.is_remote)))
            parts.append(_delimited(b"\x6a", b"".join(link_parts)))
        if span.dropped_links:
            parts.append(b"\x70" + _varint(span.dropped_links))
        status = span.status
        if status is not None:
            status_parts = _delimited(b"\x12", status.description.encode()) if status.description else b""
            if status.status_code.value:
                status_parts += b"\x18" + _varint(status.status_code.value)
            parts.append(_delimited(b"\x7a", status_parts))
        parts.append(b"\x85\x01" + _FIXED32.pack(_flags(parent is not None and parent.is_remote)))
        return b"".join(parts)

    def resource(self, resource: Resource) -> bytes:
        encoded = self._resources.get(resource)
        if encoded is None:
            if len(self._resources) >= 64:
                self._resources.clear()
            encoded = self._resources[resource] = _delimited(b"\x0a", self.attributes(b"\x0a", resource.attributes))
        return encoded

    def scope(self, scope: InstrumentationScope | None) -> bytes:
        encoded = self._scopes.get(scope)
        if encoded is None:
            if scope is None:
                payload = b""
            else:
                payload = _delimited(b"\x0a", scope.name.encode()) if scope.name else b""
                if scope.version:
                    payload += _delimited(b"\x12", scope.version.encode())
                payload += self.attributes(b"\x1a", scope.attributes)
            if len(self._scopes) >= 64:
                self._scopes.clear()
            encoded = self._scopes[scope] = _delimited(b"\x0a", payload)
        return encoded

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """The batch as a serialized ExportTraceServiceRequest, grouped by resource, then scope."""
        grouped: dict[Resource, dict[InstrumentationScope | None, list[bytes]]] = {}
        for span in spans:
            scopes = grouped.setdefault(span.resource, {})
            scopes.setdefault(span.instrumentation_scope or None, []).append(self.span(span))
        out = []
        for resource, scopes in grouped.items():
            scope_spans = []
            for scope, encoded in scopes.items():
                body = self.scope(scope) + b"".join(_delimited(b"\x12", span) for span in encoded)
                if scope is not None and scope.schema_url:
                    body += _delimited(b"\x1a", scope.schema_url.encode())
                scope_spans.append(_delimited(b"\x12", body))
            body = self.resource(resource) + b"".join(scope_spans)
            if resource.schema_url:
                body += _delimited(b"\x1a", resource.schema_url.encode())
            out.append(_delimited(b"\x0a", body))
        return b"".join(out)


def _flags(remote: bool) -> int:
    return _HAS_IS_REMOTE | _IS_REMOTE if remote else _HAS_IS_REMOTE


class FastHttpSpanExporter(HttpSpanExporter):
    """The SDK's OTLP/HTTP span exporter, encoding with `SpanEncoder` (its `export`, otherwise
    unchanged: the size limit, the exporter's own metrics, the HTTP client and its retries)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._encoder = SpanEncoder()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(len(spans)) as result:
            try:
                data = self._encoder.encode(spans)
            except Exception as error:  # noqa: BLE001 - as the SDK: a bad batch fails, nothing else
                result.error = error
                return SpanExportResult.FAILURE
            if 0 < self._max_request_size < len(data):
                result.error = ValueError(f"span batch of {len(data)} bytes exceeds {self._max_request_size}")
                return SpanExportResult.FAILURE
            exported = self._client.export(data)
            if not exported.success:
                result.error = exported.error
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


def grpc_span_exporter(**kwargs: Any) -> SpanExporter:
    """The SDK's OTLP/gRPC span exporter, encoding with `SpanEncoder` (grpcio is imported only here:
    it is a large import)."""
    # grpcio only for the gRPC protocol: a large import (see the docstring).
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

    encoder = SpanEncoder()

    class FastGrpcSpanExporter(GrpcSpanExporter):
        def _translate_data(self, data: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
            request: ExportTraceServiceRequest = ExportTraceServiceRequest.FromString(encoder.encode(data))
            return request

    return FastGrpcSpanExporter(**kwargs)
