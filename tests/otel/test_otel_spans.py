"""The export stage alone: a made-up finished Call → the span tree and metric points it becomes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from interlock.core.call import Attempt, Call, Chunk, Decision, Finding
from interlock.protocols import ADAPTERS
from interlock.scripted.anthropic_replies import anthropic_reply
from interlock.scripted.openai_replies import chat_reply
from interlock.scripted.replies import Script, ToolUse, sse
from tests.otel.otel_helpers import (
    AGENT_SPAN,
    CALL_SPAN,
    TRACE_ID,
    by_name,
    chat_call,
    children,
    memory_exporter,
    metric_points,
)


def export(call: Call, **config: Any) -> tuple[list[Any], dict[str, list[Any]]]:
    exporter, spans, reader = memory_exporter(**config)
    exporter.done(call)
    assert exporter.flush()
    exporter.close()
    return list(spans.get_finished_spans()), metric_points(reader)


def test_call_span_takes_the_ids_interlock_sent_upstream_under_the_agents_span() -> None:
    spans, _ = export(chat_call())
    span = by_name(spans, "chat gpt-4o-mini")
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.context.span_id, "016x") == CALL_SPAN
    assert span.parent is not None and format(span.parent.span_id, "016x") == AGENT_SPAN
    assert span.parent.is_remote
    assert span.kind == SpanKind.CLIENT
    # explicit timestamps: the call's own start and duration
    assert span.start_time == 1_700_000_000 * 10**9
    assert span.end_time - span.start_time == 42 * 10**6


def test_call_span_carries_the_genai_attributes() -> None:
    spans, _ = export(chat_call())
    attrs = dict(by_name(spans, "chat gpt-4o-mini").attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.request.temperature"] == 0.2
    assert attrs["gen_ai.request.max_tokens"] == 50
    assert attrs["gen_ai.request.stop_sequences"] == ["END"]
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert attrs["gen_ai.response.id"] == "chatcmpl-9"
    assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert attrs["gen_ai.usage.input_tokens"] == 11
    assert attrs["gen_ai.usage.output_tokens"] == 7
    assert attrs["gen_ai.conversation.id"] == "sess-42"
    assert attrs["gen_ai.agent.name"] == "planner"
    assert attrs["server.address"] == "api.openai.com"
    assert attrs["server.port"] == 443
    assert "error.type" not in attrs
    assert "gen_ai.system" not in attrs  # replaced by gen_ai.provider.name in the installed conventions


def test_streamed_response_is_summarised_from_its_first_and_last_events() -> None:
    spans, points = export(chat_call(stream=True))
    attrs = dict(by_name(spans, "chat gpt-4o-mini").attributes or {})
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["gen_ai.response.id"] == "chatcmpl-9"
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert attrs["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.010)
    (first_chunk,) = points["gen_ai.client.operation.time_to_first_chunk"]
    assert first_chunk.sum == pytest.approx(0.010)


def test_no_message_content_unless_enabled() -> None:
    spans, _ = export(chat_call())
    (span,) = [s for s in spans if s.name.startswith("chat")]
    text = json.dumps(dict(span.attributes or {}))
    assert "hi there" not in text and "be brief" not in text and "hello" not in text
    assert not any(
        k.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.system_instructions")) for k in span.attributes or {}
    )


def test_content_when_enabled_comes_from_the_redacted_body() -> None:
    call = chat_call()
    # The guardrails stage scrubbed the call in its done hook: the bodies now hold the redacted text.
    call.request_body = call.request_body.replace(b"hi there", b"hi <PERSON>")
    spans, _ = export(call, capture_content=True)
    attrs = dict(by_name(spans, "chat gpt-4o-mini").attributes or {})
    messages = json.loads(attrs["gen_ai.input.messages"])
    assert messages == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": "hi <PERSON>"}]},
    ]
    assert "hi there" not in json.dumps(attrs)
    output = json.loads(attrs["gen_ai.output.messages"])
    assert output == [{"role": "assistant", "parts": [{"type": "text", "content": "hello"}]}]


def test_streamed_content_is_reassembled_and_cut_to_the_limit() -> None:
    spans, _ = export(chat_call(stream=True), capture_content=True, content_max_chars=30)
    attrs = dict(by_name(spans, "chat gpt-4o-mini").attributes or {})
    assert attrs["gen_ai.output.messages"].startswith('[{"role": "assistant"')
    assert len(attrs["gen_ai.output.messages"]) == 31  # 30 and the ellipsis
    spans, _ = export(chat_call(stream=True), capture_content=True)
    attrs = dict(by_name(spans, "chat gpt-4o-mini").attributes or {})
    assert json.loads(attrs["gen_ai.output.messages"])[0]["parts"] == [{"type": "text", "content": "hello"}]


def anthropic_call(*, stream: bool) -> Call:
    """A finished Anthropic messages call whose model answered with text and a tool call."""
    script = Script(text=None, tool_calls=[ToolUse("get_weather", {"city": "Paris", "units": {"temp": "C"}})])
    events, whole = anthropic_reply("", script, "claude-sonnet-4")
    whole["content"].insert(0, {"type": "text", "text": "let me look"})
    text_events = [
        sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "let me "}}),
        sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "look"}}),
        sse({"type": "content_block_stop", "index": 0}),
    ]
    # the tool_use block moves to index 1, after the text
    events = [events[0], *text_events, *(e.replace(b'"index": 0', b'"index": 1') for e in events[1:])]
    request = {"model": "claude-sonnet-4", "max_tokens": 100, "messages": [{"role": "user", "content": "weather?"}]}
    call = Call(id="a1", route="anthropic", protocol="anthropic", method="POST", path="/v1/messages")
    call.request_headers = [("content-type", "application/json")]
    call.request_body = json.dumps({**request, "stream": stream}).encode()
    call.view = ADAPTERS["anthropic"].parse(call)
    call.model, call.stream = call.view.model, call.view.stream
    call.trace_id, call.span_id, call.started_at = TRACE_ID, CALL_SPAN, 1_700_000_000.0
    call.status, call.duration_ms = 200, 42.0
    call.attempts = [Attempt("anthropic", "https://api.anthropic.com/v1/messages", None, 1.0, 40.0, 9.0, 200)]
    if stream:
        call.response_headers = [("content-type", "text/event-stream")]
        call.chunks = [Chunk(10.0 + i, e) for i, e in enumerate(events)]
    else:
        call.response_headers = [("content-type", "application/json")]
        call.response_body = json.dumps(whole).encode()
    return call


def test_a_streamed_anthropic_tool_call_is_exported_like_the_same_call_not_streamed() -> None:
    streamed, _ = export(anthropic_call(stream=True), capture_content=True)
    answered, _ = export(anthropic_call(stream=False), capture_content=True)
    output = json.loads(by_name(streamed, "chat claude-sonnet-4").attributes["gen_ai.output.messages"])
    # One message: its text, then the tool call with its id, name and arguments as an object (the
    # GenAI conventions' tool_call part), not the raw JSON text the stream carried it in.
    assert output == [
        {
            "role": "assistant",
            "parts": [
                {"type": "text", "content": "let me look"},
                {
                    "type": "tool_call",
                    "name": "get_weather",
                    "arguments": {"city": "Paris", "units": {"temp": "C"}},
                    "id": "toolu_call_1",
                },
            ],
        }
    ]
    assert output == json.loads(by_name(answered, "chat claude-sonnet-4").attributes["gen_ai.output.messages"])


@pytest.mark.parametrize("stream", [False, True])
def test_openai_tool_calls_are_tool_call_parts_with_their_arguments(stream: bool) -> None:
    script = Script(text=None, tool_calls=[ToolUse("get_weather", {"city": "Oslo"}), ToolUse("rm", {"path": "/"})])
    events, whole = chat_reply("", script, "gpt-4o-mini", {"stream": stream})
    call = chat_call(stream=stream)
    if stream:
        call.response_headers = [("content-type", "text/event-stream")]
        call.chunks = [Chunk(10.0 + i, e) for i, e in enumerate(events)]
    else:
        call.response_body = json.dumps(whole).encode()
    spans, _ = export(call, capture_content=True)
    output = json.loads(by_name(spans, "chat gpt-4o-mini").attributes["gen_ai.output.messages"])
    (message,) = output
    assert message["role"] == "assistant"
    assert [(p["type"], p["name"], p["arguments"]) for p in message["parts"]] == [
        ("tool_call", "get_weather", {"city": "Oslo"}),
        ("tool_call", "rm", {"path": "/"}),
    ]
    assert all(p["id"] for p in message["parts"])


def test_each_attempt_is_a_child_http_span_with_its_own_timing() -> None:
    call = chat_call(outcome="ok")
    call.attempts = [
        Attempt("primary", "https://api.openai.com/v1/chat/completions?key=secret", "gpt-4o-mini", 1.0, 5.0, None, 503),
        Attempt(
            "backup", "http://10.0.0.7:8000/v1/chat/completions", "llama", 106.0, 30.0, 12.0, 200, backoff_ms=100.0
        ),
    ]
    spans, points = export(call)
    span = by_name(spans, "chat gpt-4o-mini")
    first, second = sorted(children(spans, span), key=lambda s: s.start_time)
    assert first.name == second.name == "POST" and first.kind == SpanKind.CLIENT
    assert first.attributes["url.full"] == "https://api.openai.com/v1/chat/completions"  # no query: keys live there
    assert first.attributes["http.response.status_code"] == 503
    assert first.attributes["error.type"] == "503"
    assert first.status.status_code == StatusCode.ERROR
    assert first.start_time == span.start_time + 1_000_000
    assert first.end_time - first.start_time == 5_000_000
    assert second.attributes["server.address"] == "10.0.0.7"
    assert second.attributes["server.port"] == 8000
    assert second.attributes["http.request.resend_count"] == 1
    assert second.attributes["gen_ai.request.model"] == "llama"
    assert second.attributes["interlock.backoff_ms"] == 100.0
    assert span.attributes["server.address"] == "10.0.0.7"  # the upstream that answered
    assert span.attributes["interlock.attempts"] == 2
    (retries,) = points["interlock.retries"]
    assert retries.value == 1


def test_decisions_become_child_spans_and_findings_events_without_values() -> None:
    call = chat_call()
    call.decide(Decision("policy", "allow", "small-models", "matched"))
    call.decisions.append(Decision("guardrails", "modify", "pii", "redacted 1 PERSON", t_ms=30.0))
    call.findings.append(Finding("PERSON", "request.messages[1].content", 3, 8, 0.85, "redact", value="Alice"))
    spans, points = export(call)
    span = by_name(spans, "chat gpt-4o-mini")
    policy = by_name(spans, "policy allow")
    guard = by_name(spans, "guardrails modify")
    assert policy.parent.span_id == guard.parent.span_id == span.context.span_id
    assert policy.attributes["interlock.decision.rule"] == "small-models"
    assert guard.start_time == span.start_time + 30_000_000
    (event,) = span.events
    assert event.name == "interlock.finding"
    assert event.attributes["interlock.finding.entity"] == "PERSON"
    assert "Alice" not in json.dumps([dict(s.attributes or {}) for s in spans] + [dict(event.attributes or {})])
    assert sum(p.value for p in points["interlock.policy.decisions"]) == 2
    (finding,) = points["interlock.guardrail.findings"]
    assert dict(finding.attributes) == {"interlock.finding.entity": "PERSON", "interlock.finding.action": "redact"}


def test_a_failed_call_is_an_error_span_with_error_type() -> None:
    call = chat_call(outcome="upstream_error", error_code="http_500", error="upstream said 500", status=500)
    call.attempts[0].status = 500
    call.input_tokens = call.output_tokens = None
    spans, points = export(call)
    span = by_name(spans, "chat gpt-4o-mini")
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "http_500"
    assert "gen_ai.response.id" not in span.attributes
    (duration,) = points["gen_ai.client.operation.duration"]
    assert duration.attributes["error.type"] == "http_500"
    (calls,) = points["interlock.calls"]
    assert dict(calls.attributes) == {
        "interlock.route": "openai",
        "interlock.agent": "planner",
        "interlock.outcome": "upstream_error",
    }


def test_without_an_incoming_traceparent_interlock_starts_the_trace() -> None:
    spans, _ = export(chat_call(parent_span_id=None))
    span = by_name(spans, "chat gpt-4o-mini")
    assert span.parent is None
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.context.span_id, "016x") == CALL_SPAN
    (attempt,) = children(spans, span)
    assert attempt.context.trace_id == span.context.trace_id
    assert attempt.context.span_id != span.context.span_id


def test_token_usage_and_duration_metrics_follow_the_genai_conventions() -> None:
    _, points = export(chat_call())
    usage = {p.attributes["gen_ai.token.type"]: p for p in points["gen_ai.client.token.usage"]}
    assert usage["input"].sum == 11 and usage["output"].sum == 7
    assert usage["input"].attributes["gen_ai.operation.name"] == "chat"
    assert usage["input"].attributes["gen_ai.provider.name"] == "openai"
    assert usage["input"].attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert usage["input"].attributes["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    (duration,) = points["gen_ai.client.operation.duration"]
    assert duration.sum == pytest.approx(0.042)
    assert "gen_ai.client.operation.time_to_first_chunk" not in points  # not a stream


def mcp_call(body: dict[str, Any]) -> Call:
    call = Call(id="m1", route="tools", protocol="mcp", method="POST", path="/mcp")
    call.request_headers = [("mcp-session-id", "s-77"), ("mcp-protocol-version", "2025-06-18")]
    call.request_body = json.dumps(body).encode()
    call.view = ADAPTERS["mcp"].parse(call)
    call.status, call.duration_ms, call.started_at = 200, 5.0, 1_700_000_000.0
    call.trace_id, call.span_id = TRACE_ID, CALL_SPAN
    call.attempts = [Attempt("mcp", "http://127.0.0.1:9000/mcp", None, 0.5, 4.0, 2.0, 200)]
    return call


def test_mcp_tool_call_follows_the_mcp_conventions() -> None:
    call = mcp_call(
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "get_weather", "arguments": {"city": "Oslo"}},
        }
    )
    spans, points = export(call)
    span = by_name(spans, "tools/call get_weather")
    assert span.attributes["mcp.method.name"] == "tools/call"
    assert span.attributes["gen_ai.tool.name"] == "get_weather"
    assert span.attributes["gen_ai.operation.name"] == "execute_tool"
    assert span.attributes["mcp.session.id"] == "s-77"
    assert span.attributes["mcp.protocol.version"] == "2025-06-18"
    assert span.attributes["jsonrpc.request.id"] == "3"
    assert "Oslo" not in json.dumps(dict(span.attributes))
    (duration,) = points["mcp.client.operation.duration"]
    assert duration.attributes["mcp.method.name"] == "tools/call"


def test_other_mcp_methods_are_named_by_method() -> None:
    spans, _ = export(mcp_call({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
    span = by_name(spans, "tools/list")
    assert span.attributes["mcp.method.name"] == "tools/list"
    assert "gen_ai.operation.name" not in span.attributes


def test_plain_http_calls_are_http_spans() -> None:
    call = Call(id="h1", route="tools", protocol="http", method="GET", path="/status")
    call.view = ADAPTERS["http"].parse(call)
    call.status, call.duration_ms = 200, 1.0
    spans, points = export(call)
    span = by_name(spans, "GET")
    assert span.attributes["http.request.method"] == "GET"
    assert "gen_ai.client.operation.duration" not in points
    assert points["interlock.calls"][0].value == 1


def test_a_full_queue_drops_calls_and_counts_them_without_blocking() -> None:
    exporter, spans, _ = memory_exporter(queue_size=1)
    gate = __import__("threading").Event()
    original = exporter.export

    def slow(call: Call) -> None:
        gate.wait(5)
        original(call)

    exporter.export = slow  # type: ignore[method-assign]
    for _ in range(5):
        exporter.done(chat_call())
    gate.set()
    assert exporter.flush()
    assert exporter.dropped >= 3
    assert exporter.exported + exporter.dropped == 5
    exporter.close()


@pytest.mark.parametrize(
    ("sampler", "argument", "kept"),
    [
        (None, None, True),  # the SDK default, parentbased_always_on
        ("always_off", None, False),
        ("parentbased_always_off", None, True),  # the agent's (sampled) span decides
        ("traceidratio", "0", False),
        ("traceidratio", "1", True),
    ],
)
def test_the_standard_sampler_variables_decide_which_calls_become_spans(
    monkeypatch: pytest.MonkeyPatch, sampler: str | None, argument: str | None, kept: bool
) -> None:
    for name, value in (("OTEL_TRACES_SAMPLER", sampler), ("OTEL_TRACES_SAMPLER_ARG", argument)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    spans, points = export(chat_call())
    assert bool(spans) is kept
    if kept:
        call = by_name(spans, "chat gpt-4o-mini")
        assert len(children(spans, call)) == 1  # and its attempt
    assert points["interlock.calls"][0].value == 1  # metrics count every call, sampled or not
