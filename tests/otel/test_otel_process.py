"""The export process's wire: a Call crosses as the fields export reads, and nothing else."""

from __future__ import annotations

import json

import pytest

from interlock.config import Otel
from interlock.core.call import Chunk, Decision, Finding
from interlock.otel.process import ProcessExporter, from_wire, to_wire
from tests.otel.otel_helpers import by_name, chat_call, memory_exporter


def exported_attributes(call: object) -> dict[str, object]:
    exporter, spans, _ = memory_exporter()
    exporter.done(call)  # type: ignore[arg-type]
    assert exporter.flush()
    exporter.close()
    return dict(by_name(spans.get_finished_spans(), "chat gpt-4o-mini").attributes or {})


def test_a_call_exports_the_same_after_crossing_the_wire() -> None:
    call = chat_call()
    call.decide(Decision("policy", "allow", "r1", "matched"))
    call.findings.append(Finding("EMAIL_ADDRESS", "request.messages[1].content", 0, 5, 0.9, "redact", value="a@b.c"))
    call.rescued = True
    call.workflow = "onboarding-7"
    crossed = from_wire(to_wire(call, capture_content=False))
    assert exported_attributes(crossed) == exported_attributes(call)
    assert exported_attributes(crossed)["interlock.rescued"] is True
    assert exported_attributes(crossed)["interlock.workflow"] == "onboarding-7"
    assert crossed.decisions[0].t_ms == call.decisions[0].t_ms
    assert crossed.findings[0].value is None  # the raw value never leaves the proxy process
    assert crossed.request_body == b""  # no content crosses unless capture_content is on


def test_a_long_stream_crosses_as_its_head_and_tail() -> None:
    call = chat_call(stream=True)
    filler = [Chunk(12.0, b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n')] * 5000
    call.chunks = call.chunks[:2] + filler + call.chunks[2:]
    wire = to_wire(call, capture_content=False)
    crossed = from_wire(wire)
    assert len(crossed.chunks) < 200
    assert exported_attributes(crossed) == exported_attributes(call)
    assert len(from_wire(to_wire(call, capture_content=True)).chunks) == len(call.chunks)


def test_the_child_process_exports_and_reports_back(monkeypatch: pytest.MonkeyPatch) -> None:
    # No collector: the child starts, takes calls, answers flushes, and exits when closed.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "0.2")  # the child inherits the environment
    exporter = ProcessExporter(Otel(endpoint="http://127.0.0.1:9", metrics=False))
    try:
        for _ in range(3):
            exporter.done(chat_call())
        assert exporter.flush(timeout=30)
        assert exporter.exported == 3
        assert json.dumps([h.what for h in exporter.health]) == '["spans"]'
    finally:
        exporter.close(2.0)
    assert exporter.process.returncode == 0
    exporter.done(chat_call())
    assert exporter.dropped == 1  # closed: counted, never blocking
