"""`replay run` reads answers through the adapters: streamed or not, OpenAI or Anthropic."""

from __future__ import annotations

import json

from replay_helpers import recorded_call

from interlock.replay.rerun import Target, output_of, rerun
from interlock.scripted import ScriptedUpstream
from interlock.scripted.anthropic_replies import anthropic_reply
from interlock.scripted.openai_replies import chat_reply
from interlock.scripted.replies import Script, ToolUse


def test_streamed_answers_are_reassembled_on_both_sides() -> None:
    events, _ = chat_reply(
        "",
        Script(tool_calls=[ToolUse("get_weather", {"city": "Paris"})]),
        "gpt-4o",
        {"stream_options": {"include_usage": True}},
    )
    request = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "weather?"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    recorded = recorded_call(request, chunks=[(5.0 + i, e) for i, e in enumerate(events)], duration_ms=40.0)
    assert output_of(recorded).tool_calls == ['get_weather({"city": "Paris"})']
    assert output_of(recorded).finish_reasons == ["tool_calls"]
    with ScriptedUpstream() as other:
        other.script(Script(text="It is sunny in Paris.", output_tokens=5))
        report = __import__("asyncio").run(rerun([recorded], Target(other.url + "/v1", "openai", "sk-x")))
        sent = other.requests[0]
    assert sent.json()["stream"] is True and sent.headers["authorization"] == "Bearer sk-x"
    [comparison] = report.comparisons
    assert comparison.rerun.text == "It is sunny in Paris." and comparison.rerun.tool_calls == []
    assert comparison.rerun.finish_reasons == ["stop"] and comparison.rerun.output_tokens == 5
    assert comparison.rerun.ttfb_ms is not None and not comparison.same_tool_calls
    assert report.totals()["same_tool_calls"] == 0


def test_anthropic_answers_compare_text_and_stop_reason() -> None:
    events, whole = anthropic_reply("bonjour", Script(), "claude-test")
    request = {"model": "claude-test", "max_tokens": 50, "messages": [{"role": "user", "content": "salut"}]}
    plain = recorded_call(
        request, whole, route="anthropic", protocol="anthropic", path="/v1/messages", model="claude-test"
    )
    streamed = recorded_call(
        {**request, "stream": True},
        route="anthropic",
        protocol="anthropic",
        path="/v1/messages",
        chunks=[(1.0, e) for e in events],
    )
    for call in (plain, streamed):
        out = output_of(call)
        assert (out.text, out.finish_reasons, out.input_tokens, out.output_tokens) == ("bonjour", ["end_turn"], 11, 7)
    with ScriptedUpstream() as other:
        other.script(Script(text="bonjour"), Script(text="salut !"))
        report = __import__("asyncio").run(rerun([plain, streamed], Target(other.url, "anthropic"), concurrency=1))
    first, second = report.comparisons
    assert first.same_text and first.same_finish
    assert not second.same_text and second.text_diff()[-2:] == ["-bonjour", "+salut !"]
    data = report.to_json()
    assert data["target"]["api_key"] is None and json.dumps(data)
    assert "## Step 2: POST /v1/messages (claude-test) — differs" in report.markdown("b.db")
