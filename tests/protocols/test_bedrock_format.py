"""The Bedrock adapter without a network: the event-stream framing split at any chunk boundary, events
re-framed with valid CRCs, a damaged message never read as an event, a stream reassembled into the
Converse response, the model rewritten in the path, tools stripped, params set, OTel's aws.bedrock."""

from __future__ import annotations

import json
from typing import Any

from botocore.eventstream import EventStreamBuffer

from interlock.protocols import ADAPTERS
from interlock.scripted import Script, ToolUse
from interlock.scripted.bedrock import converse_reply

BEDROCK = ADAPTERS["bedrock"]


def stream(**script: Any) -> tuple[bytes, dict[str, Any]]:
    events, whole = converse_reply('hello {wor]ld" \\ done', Script(chunk_size=2, **script))
    return b"".join(events), whole


def test_every_chunking_gives_the_same_events_and_the_stream_reassembles() -> None:
    body, whole = stream()
    expected = [(e.event, e.data) for e in BEDROCK.iter_events(body)]
    assert [name for name, _ in expected].count("contentBlockDelta") == 11  # 21 characters, 2 a delta
    held = BEDROCK.event_splitter()  # an unfinished message is held back, never an event
    assert b"".join(e.raw for e in held.feed(body[:-1])) + held.pending() == body[:-1] and held.pending()
    for size in (1, 2, 3, 7, 64):
        splitter = BEDROCK.event_splitter()
        events = []
        for start in range(0, len(body), size):
            events += [(e.event, e.data) for e in splitter.feed(body[start : start + size])]
        assert events == expected and splitter.pending() == b""
    assert BEDROCK.reassemble_stream(body) == whole
    tools, tool_whole = stream(tool_calls=[ToolUse("get_weather", {"city": "Paris"})])
    assert BEDROCK.reassemble_stream(tools) == tool_whole


def test_a_rewritten_event_is_framed_with_valid_crcs_and_a_damaged_one_is_not_read() -> None:
    raw = BEDROCK.stream_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "jane@x.io"}})
    buffer = EventStreamBuffer()
    buffer.add_data(raw)
    (message,) = list(buffer)  # botocore checks both CRCs
    assert message.headers[":event-type"] == "contentBlockDelta"
    assert json.loads(message.payload)["delta"]["text"] == "jane@x.io"
    damaged = raw[:-6] + b"X" + raw[-5:]
    splitter = BEDROCK.event_splitter()
    assert list(splitter.feed(raw + damaged + raw)) == [next(iter(BEDROCK.iter_events(raw)))]
    assert splitter.pending() == damaged + raw  # relayed as it came, never read as events


def test_model_in_the_path_tools_stripped_params_clamped() -> None:
    assert BEDROCK.rewrite_model({}, "/model/a.b-v1%3A0/converse-stream", "c.d") == ({}, "/model/c.d/converse-stream")
    assert BEDROCK.rewrite_model({}, "/model/a.b-v1%3A0/converse", "a.b-v1:0") is None
    spec = [{"toolSpec": {"name": n, "inputSchema": {"json": {}}}} for n in ("rm", "ls")]
    data: dict[str, Any] = {"toolConfig": {"tools": spec, "toolChoice": {"tool": {"name": "rm"}}}}
    assert BEDROCK.strip_tools(data, {"rm"}) == ["rm"]
    assert data["toolConfig"] == {"tools": [spec[1]]}
    assert BEDROCK.strip_tools(data, {"ls"}) == ["ls"] and "toolConfig" not in data  # none left: no toolConfig
    data = {"inferenceConfig": {"maxTokens": 4000}}
    assert BEDROCK.set_param(data, "max_tokens", 1000, "chat") == [("inferenceConfig.maxTokens", 4000, 1000)]
    assert BEDROCK.set_param(data, "max_tokens", 2000, "chat") == []  # a clamp only lowers


def test_otel_names_the_provider_aws_bedrock() -> None:
    from interlock.otel.attributes import provider_name
    from interlock.policies.cases import CaseRequest, build_call

    call = build_call(
        CaseRequest.model_validate({"route": "b", "protocol": "bedrock", "model": "amazon.nova-lite-v1:0"})
    )
    assert call.model == "amazon.nova-lite-v1:0" and call.path == "/model/amazon.nova-lite-v1%3A0/converse"
    assert provider_name(call, "127.0.0.1") == "aws.bedrock"
