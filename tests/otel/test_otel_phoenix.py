"""Against a real OTLP backend: Arize Phoenix receives the agent's spans and interlock's in one trace."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagators.textmap import DefaultSetter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from interlock.scripted import Script, ScriptedUpstream
from interlock.testing import Running
from tests.otel.phoenix import Phoenix, run_phoenix

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    with run_phoenix(Path(tmp_path_factory.mktemp("phoenix"))) as server:
        yield server


def agent_call(phoenix: Phoenix, running: Running, text: str, **create: Any) -> tuple[str, str, Any]:
    """An openai-SDK agent with its own OTel tracing to Phoenix: one span, one call through interlock."""
    provider = TracerProvider(resource=Resource.create({"service.name": "test-agent"}), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=phoenix.url + "/v1/traces")))
    tracer = provider.get_tracer("agent")
    client = openai.OpenAI(base_url=running.url + "/openai", api_key="sk-agent", max_retries=0)
    with tracer.start_as_current_span("agent step") as step:
        headers: dict[str, str] = {"x-interlock-session": "conv-7", "x-interlock-agent": "researcher"}
        TraceContextTextMapPropagator().inject(headers, setter=DefaultSetter())
        result = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": text}], extra_headers=headers, **create
        )
        if create.get("stream"):
            result = "".join(c.choices[0].delta.content or "" for c in result if c.choices)
    provider.shutdown()
    context = step.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}", result


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_phoenix_shows_one_trace_agent_then_interlock_then_attempts(
    phoenix: Phoenix, make_interlock: Any, upstream: ScriptedUpstream, protocol: str
) -> None:
    endpoint = phoenix.url if protocol == "http/protobuf" else f"http://127.0.0.1:{phoenix.grpc_port}"
    running: Running = make_interlock(otel={"endpoint": endpoint, "protocol": protocol})
    upstream.script(Script(status=503), Script(text="the answer"))  # one retry: two attempt spans
    trace_id, agent_span_id, completion = agent_call(phoenix, running, "Alice's private question")
    assert completion.choices[0].message.content == "the answer"
    running.runtime.services["otel"].flush()
    spans = phoenix.wait_for_spans(trace_id, {"agent step", "chat gpt-4o-mini", "POST"})
    by_id = {s["context"]["span_id"]: s for s in spans}
    (agent,) = [s for s in spans if s["name"] == "agent step"]
    (call,) = [s for s in spans if s["name"] == "chat gpt-4o-mini"]
    assert agent["parent_id"] is None
    assert call["parent_id"] == agent_span_id == agent["context"]["span_id"]
    attrs = call["attributes"]
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.response.id"] == completion.id
    assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert attrs["gen_ai.usage.input_tokens"] == 11
    assert attrs["gen_ai.usage.output_tokens"] == 7
    assert attrs["gen_ai.conversation.id"] == "conv-7"
    assert attrs["gen_ai.agent.name"] == "researcher"
    assert attrs["server.address"] == "127.0.0.1"
    attempts = sorted((s for s in spans if s["parent_id"] == call["context"]["span_id"]), key=lambda s: s["start_time"])
    assert [a["attributes"]["http.response.status_code"] for a in attempts] == [503, 200]
    assert attempts[1]["attributes"]["http.request.resend_count"] == 1
    assert all(a["name"] == "POST" for a in attempts)
    assert set(by_id) >= {agent_span_id, call["context"]["span_id"]}
    # no message content unless enabled
    assert "Alice" not in json.dumps(spans)
    assert not any(k.startswith(("gen_ai.input", "gen_ai.output")) for k in attrs)


def test_phoenix_gets_content_only_when_enabled(
    phoenix: Phoenix, make_interlock: Any, upstream: ScriptedUpstream
) -> None:
    running: Running = make_interlock(otel={"endpoint": phoenix.url, "capture_content": True})
    upstream.script(Script(text="streamed reply", chunk_size=4))
    trace_id, _, text = agent_call(
        phoenix, running, "what is the weather", stream=True, stream_options={"include_usage": True}
    )
    assert text == "streamed reply"
    running.runtime.services["otel"].flush()
    spans = phoenix.wait_for_spans(trace_id, {"agent step", "chat gpt-4o-mini"})
    (call,) = [s for s in spans if s["name"] == "chat gpt-4o-mini"]
    attrs = call["attributes"]
    assert json.loads(attrs["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "what is the weather"}]}
    ]
    assert json.loads(attrs["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "streamed reply"}]}
    ]
    assert attrs["gen_ai.request.stream"] is True
