"""Shared bits of the OpenTelemetry tests: made-up calls, span lookups, an agent with its own tracing."""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from interlock.config import Otel
from interlock.core.call import Attempt, Call, Chunk
from interlock.otel.exporter import Exporter
from interlock.otel.metrics import CallMetrics
from interlock.protocols import ADAPTERS

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
AGENT_SPAN = "b7ad6b7169203331"
CALL_SPAN = "00f067aa0ba902b7"


def memory_exporter(**config: Any) -> tuple[Exporter, InMemorySpanExporter, CallMetrics]:
    """An export stage that keeps its spans in memory and only aggregates its metrics."""
    spans = InMemorySpanExporter()
    exporter = Exporter(Otel(**config), SimpleSpanProcessor(spans), True)
    assert exporter.metrics is not None
    return exporter, spans, exporter.metrics


def chat_call(*, stream: bool = False, body: dict[str, Any] | None = None, **fields: Any) -> Call:
    """A finished chat completion call as the proxy would leave it (parsed, answered, timed)."""
    request = body or {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}],
        "temperature": 0.2,
        "max_tokens": 50,
        "stop": ["END"],
        "stream": stream,
    }
    call = Call(id="c1", route="openai", protocol="openai", method="POST", path="/chat/completions")
    call.request_headers = [("content-type", "application/json")]
    call.request_body = json.dumps(request).encode()
    call.view = ADAPTERS["openai"].parse(call)
    call.model, call.stream = call.view.model, call.view.stream
    call.trace_id, call.parent_span_id, call.span_id = TRACE_ID, AGENT_SPAN, CALL_SPAN
    call.agent, call.session = "planner", "sess-42"
    call.started_at = 1_700_000_000.0
    call.status = 200
    call.attempts = [
        Attempt(
            "https://api.openai.com/v1",
            "https://api.openai.com/v1/chat/completions",
            "gpt-4o-mini",
            1.0,
            40.0,
            9.0,
            200,
        )
    ]
    if stream:
        call.response_headers = [("content-type", "text/event-stream")]
        events = [
            {
                "id": "chatcmpl-9",
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [{"index": 0, "delta": {"content": "hel"}}],
            },
            {
                "id": "chatcmpl-9",
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [{"index": 0, "delta": {"content": "lo"}}],
            },
            {"id": "chatcmpl-9", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {"id": "chatcmpl-9", "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7}},
        ]
        call.chunks = [Chunk(10.0 + i, b"data: " + json.dumps(e).encode() + b"\n\n") for i, e in enumerate(events)]
        call.chunks.append(Chunk(15.0, b"data: [DONE]\n\n"))
        call.ttfb_ms = 10.0
    else:
        call.response_headers = [("content-type", "application/json")]
        call.response_body = json.dumps(
            {
                "id": "chatcmpl-9",
                "object": "chat.completion",
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 11, "completion_tokens": 7},
            }
        ).encode()
        call.ttfb_ms = 41.0
    call.input_tokens, call.output_tokens = 11, 7
    call.duration_ms = 42.0
    for name, value in fields.items():
        setattr(call, name, value)
    return call


def by_name(spans: Any, name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def children(spans: Any, parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def metric_points(metrics: CallMetrics) -> dict[str, list[Any]]:
    data = metrics.collect()
    points: dict[str, list[Any]] = {}
    for resource_metrics in data.resource_metrics if data else []:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points
