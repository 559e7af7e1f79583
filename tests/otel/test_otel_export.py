"""Export through the running proxy: an openai-SDK agent with its own tracing, and a dead collector."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from opentelemetry.propagators.textmap import DefaultSetter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from interlock.config import Otel
from interlock.otel import exporter as otel
from interlock.scripted import Script, ScriptedUpstream
from interlock.testing import Running, free_port
from tests.otel.otel_helpers import by_name, children, memory_exporter


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """interlock's exporter writes to memory (the rest of the stage is the real one)."""
    made: dict[str, Any] = {}

    def build(config: Otel) -> otel.Exporter:
        exporter, spans, reader = memory_exporter(**config.model_dump())
        made.update(exporter=exporter, spans=spans, reader=reader)
        return exporter

    monkeypatch.setattr(otel, "build_exporter", build)
    # An endpoint must be configured for interlock to add an export stage at all (nothing listens).
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    yield made


def flushed(exporter: otel.Exporter, calls: int = 1) -> None:
    """Wait until `calls` calls reached the exporter (its done hook runs after the agent has its answer)."""
    deadline = time.monotonic() + 10
    while exporter.exported + exporter.dropped < calls:
        assert time.monotonic() < deadline, "the call never reached the exporter"
        exporter.flush(timeout=1)
    assert exporter.flush()


def agent_tracer() -> tuple[Any, InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return provider.get_tracer("agent"), spans


def traced_headers() -> dict[str, str]:
    headers: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(headers, setter=DefaultSetter())
    return headers


def test_agent_span_interlock_span_and_upstream_share_one_trace(
    make_interlock: Any, upstream: ScriptedUpstream, exported: dict[str, Any]
) -> None:
    running: Running = make_interlock()
    tracer, agent_spans = agent_tracer()
    client = openai.OpenAI(base_url=running.url + "/openai", api_key="sk-agent", max_retries=0)
    with tracer.start_as_current_span("agent step"):
        completion = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "my secret plan"}],
            temperature=0.5,
            extra_headers={**traced_headers(), "x-interlock-session": "s-1", "x-interlock-agent": "planner"},
        )
    assert completion.choices[0].message.content == "echo: my secret plan"
    flushed(exported["exporter"])
    (step,) = agent_spans.get_finished_spans()
    spans = exported["spans"].get_finished_spans()
    call = by_name(spans, "chat gpt-4o-mini")
    assert call.context.trace_id == step.context.trace_id
    assert call.parent is not None and call.parent.span_id == step.context.span_id
    # the upstream got interlock's own span as its parent
    sent = upstream.requests[-1].headers["traceparent"]
    assert sent == f"00-{call.context.trace_id:032x}-{call.context.span_id:016x}-01"
    attrs = dict(call.attributes or {})
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.temperature"] == 0.5
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.response.id"] == completion.id
    assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert attrs["gen_ai.usage.input_tokens"] == 11 and attrs["gen_ai.usage.output_tokens"] == 7
    assert attrs["gen_ai.conversation.id"] == "s-1"
    assert attrs["gen_ai.agent.name"] == "planner"
    assert attrs["server.address"] == "127.0.0.1"
    assert "my secret plan" not in str(attrs)
    (attempt,) = children(spans, call)
    assert attempt.attributes["http.response.status_code"] == 200
    assert call.start_time <= attempt.start_time <= attempt.end_time <= call.end_time


def test_a_stream_without_traceparent_starts_its_own_trace(
    make_interlock: Any, upstream: ScriptedUpstream, exported: dict[str, Any]
) -> None:
    running: Running = make_interlock()
    upstream.script(Script(text="streamed words", chunk_size=3))
    client = openai.OpenAI(base_url=running.url + "/openai", api_key="sk-agent", max_retries=0)
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "x"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "streamed words"
    flushed(exported["exporter"])
    call = by_name(exported["spans"].get_finished_spans(), "chat gpt-4o-mini")
    assert call.parent is None
    sent = upstream.requests[-1].headers["traceparent"]
    assert sent == f"00-{call.context.trace_id:032x}-{call.context.span_id:016x}-01"
    assert call.attributes["gen_ai.request.stream"] is True
    assert call.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert call.attributes["gen_ai.usage.output_tokens"] == 7
    assert call.attributes["gen_ai.response.time_to_first_chunk"] > 0


def test_content_is_exported_only_when_enabled(
    make_interlock: Any, upstream: ScriptedUpstream, exported: dict[str, Any]
) -> None:
    running: Running = make_interlock(otel={"capture_content": True})
    client = openai.OpenAI(base_url=running.url + "/openai", api_key="sk-agent", max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello world"}])
    flushed(exported["exporter"])
    call = by_name(exported["spans"].get_finished_spans(), "chat gpt-4o-mini")
    assert "hello world" in call.attributes["gen_ai.input.messages"]
    assert "echo: hello world" in call.attributes["gen_ai.output.messages"]


def test_no_endpoint_means_no_export_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    assert otel.build_exporter(Otel()) is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    assert otel.build_exporter(Otel(enabled=False)) is None
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert otel.build_exporter(Otel()) is None


def test_endpoints_follow_the_otlp_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    assert otel.resolve_endpoint(Otel(), "TRACES") == "http://collector:4318/v1/traces"
    assert otel.resolve_endpoint(Otel(), "METRICS") == "http://collector:4318/v1/metrics"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://other:9999/custom")
    assert otel.resolve_endpoint(Otel(), "TRACES") == "http://other:9999/custom"
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert otel.resolve_endpoint(Otel(), "TRACES") == "http://collector:4318"
    assert otel.resolve_protocol(Otel(protocol="http/protobuf"), "TRACES") == "http/protobuf"  # the file wins
    assert otel.resolve_endpoint(Otel(endpoint="http://cfg:4318"), "TRACES") == "http://cfg:4318"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match="'http/json' is not supported; use one of http/protobuf, grpc"):
        otel.resolve_protocol(Otel(), "TRACES")


def test_service_name_comes_from_the_config_then_otel_service_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert otel.resource(Otel()).attributes["service.name"] == "interlock"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway")
    assert otel.resource(Otel()).attributes["service.name"] == "gateway"
    assert otel.resource(Otel(service_name="mine")).attributes["service.name"] == "mine"


def test_traces_off_keeps_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    exporter = otel.build_exporter(Otel(worker="thread"))
    assert exporter is not None
    try:
        assert exporter.spans is None and exporter.metrics is not None
    finally:
        exporter.close(0.5)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_an_unreachable_collector_costs_the_agent_nothing_and_is_logged_once(
    make_interlock: Any,
    upstream: ScriptedUpstream,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    protocol: str,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "0.5")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "16")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4")
    closed = free_port()  # nothing listens here
    caplog.set_level(logging.DEBUG)
    running: Running = make_interlock(
        otel={"endpoint": f"http://127.0.0.1:{closed}", "protocol": protocol, "metrics_interval": 0.05}
    )
    exporter = running.runtime.services["otel"]
    client = openai.OpenAI(base_url=running.url + "/openai", api_key="sk-agent", max_retries=0)
    for i in range(40):
        completion = client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"n{i}"}])
        assert completion.choices[0].message.content == f"echo: n{i}"
    flushed(exporter, 40)
    deadline = time.monotonic() + 20
    while not (len(exporter.health) == 2 and all(h.failures >= 2 for h in exporter.health)):
        assert time.monotonic() < deadline, [(h.what, h.failures) for h in exporter.health]
        exporter.flush(timeout=2)  # the export process reports its failure counts with each flush
    assert exporter.dropped == 0  # interlock's own queue never filled: the SDK's bounded queue drops instead
    otel_records = [r for r in caplog.records if r.name.startswith("opentelemetry")]
    assert otel_records == []
    ours = [r.getMessage() for r in caplog.records if r.name == "interlock.otel"]
    assert len(ours) == 2, ours  # once for spans, once for metrics
    assert all("not logged again" in m for m in ours)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Transient error" not in err


def test_anthropic_stream_is_described_from_its_events(
    make_interlock: Any, upstream: ScriptedUpstream, exported: dict[str, Any]
) -> None:
    import anthropic

    running: Running = make_interlock()
    upstream.script(Script(text="bonjour", chunk_size=2))
    client = anthropic.Anthropic(base_url=running.url + "/anthropic", api_key="sk-agent", max_retries=0)
    with client.messages.stream(
        model="claude-scripted", max_tokens=64, messages=[{"role": "user", "content": "salut"}]
    ) as stream:
        assert stream.get_final_text() == "bonjour"
        message_id = stream.get_final_message().id
    flushed(exported["exporter"])
    call = by_name(exported["spans"].get_finished_spans(), "chat claude-scripted")
    assert call.attributes["gen_ai.provider.name"] == "anthropic"
    assert call.attributes["gen_ai.request.max_tokens"] == 64
    assert call.attributes["gen_ai.response.id"] == message_id
    assert call.attributes["gen_ai.response.model"] == "claude-scripted"
    assert call.attributes["gen_ai.response.finish_reasons"] == ["end_turn"]
    assert call.attributes["gen_ai.usage.input_tokens"] == 11
