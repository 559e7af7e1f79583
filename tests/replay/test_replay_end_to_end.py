"""An incident recorded through interlock, exported, and replayed offline with the real openai SDK."""

from __future__ import annotations

import os
import queue
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from replay_helpers import SESSION, TOOLS, Incident, routes_for, weather_agent

from interlock.replay import open_bundle
from interlock.testing import replay_server
from tests.sdk_errors import protocol_error


def test_the_replayed_agent_gives_the_recorded_answer_offline(incident: Incident) -> None:
    assert incident.answer == "Paris: sunny. Lyon: rainy. Take an umbrella to Lyon."
    with replay_server(incident.bundle) as replay:
        answer = weather_agent(
            "Weather in Paris and Lyon?", base_url=replay.base_url("openai"), tools_url=replay.base_url("tools")
        )
    assert answer == incident.answer
    summary = replay.summary()
    assert (summary.served, summary.misses, summary.unused) == (5, [], [])
    replay.assert_no_divergence(all_used=True)


def test_a_users_stage_sees_each_replayed_call(incident: Incident) -> None:
    # The public helper takes stages of one's own (`stages=`), after the playback: each replayed call
    # goes by them as a live call would, its answer supplied by the recording. The stage runs on the
    # replay's own thread and loop: its sealed calls are handed over through a thread-safe queue.
    class Collect:
        name = "collect"

        def __init__(self) -> None:
            self.calls: queue.Queue[tuple[str, int | None, Any]] = queue.Queue()

        async def done(self, call: Any) -> None:
            self.calls.put((call.route, call.status, call.meta.get("supplied_by")))

    collect = Collect()
    with replay_server(incident.bundle, stages=[collect]) as replay:
        answer = weather_agent(
            "Weather in Paris and Lyon?", base_url=replay.base_url("openai"), tools_url=replay.base_url("tools")
        )
        seen = [collect.calls.get(timeout=30) for _ in range(5)]  # `done` runs once the answer is sent
    assert answer == incident.answer
    assert seen == [(route, 200, "replay") for route in ("openai", "tools", "openai", "tools", "openai")]
    replay.assert_no_divergence(all_used=True)


def test_the_sdk_finds_the_replay_through_the_environment(incident: Incident, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://unreachable.invalid/v1")
    with replay_server(incident.bundle) as replay:
        assert os.environ["OPENAI_BASE_URL"] == replay.url + "/openai"
        client = openai.OpenAI(api_key="x", max_retries=0, default_headers={"X-Interlock-Session": SESSION})
        reply = client.chat.completions.create(
            model="gpt-4o",
            messages=[
                {"role": "system", "content": "You are a weather assistant."},
                {"role": "user", "content": "Weather in Paris and Lyon?"},
            ],
            tools=TOOLS,  # type: ignore[arg-type]
        )
    assert reply.choices[0].message.tool_calls[0].function.arguments == '{"city": "Paris"}'  # type: ignore[index, union-attr]
    assert os.environ["OPENAI_BASE_URL"] == "http://unreachable.invalid/v1"  # restored


def test_a_changed_prompt_is_reported_at_the_right_step(incident: Incident) -> None:
    with replay_server(incident.bundle) as replay:
        with pytest.raises(openai.ConflictError) as raised:
            weather_agent(
                "Weather in Paris and Nice?", base_url=replay.base_url("openai"), tools_url=replay.base_url("tools")
            )
    error = protocol_error(raised.value)
    assert error["code"] == "replay_divergence"
    assert "diverges from the recording" in error["message"]
    assert "messages[1] (user)" in error["message"]
    miss = replay.summary().misses[0]
    assert (miss.index, miss.closest_step, miss.expected_step) == (1, 1, 1)
    [difference] = miss.differences
    assert (difference.label, difference.where) == ("messages[1] (user)", "messages[1].content")
    assert (difference.recorded, difference.actual) == ("Weather in Paris and Lyon?", "Weather in Paris and Nice?")
    assert difference.detail == "recorded 'Weather in Paris and Lyon?' → now 'Weather in Paris and Nice?'"


def test_a_changed_tool_result_is_reported_at_the_model_call_that_carries_it(incident: Incident) -> None:
    with replay_server(incident.bundle) as replay:
        with pytest.raises(openai.ConflictError):
            weather_agent(
                "Weather in Paris and Lyon?",
                base_url=replay.base_url("openai"),
                tools_url=replay.base_url("tools"),
                forecast=lambda city: f"{city}: sunny" if city == "Paris" else f"{city}: snow",
            )
    # A local forecast replaces the tools route: Paris gives the recorded result, so the second model
    # call replays; the third carries a different result for Lyon. Recorded steps: model, tool
    # (Paris), model, tool (Lyon), model: the third model call is step 5.
    summary = replay.summary()
    [miss] = summary.misses
    assert (miss.index, miss.closest_step, miss.expected_step) == (3, 5, 5)
    [difference] = miss.differences
    assert difference.label == "messages[5] (tool result for call_lyon)"
    assert difference.detail == "recorded 'Lyon: rainy' → now 'Lyon: snow'"
    assert [(u["step"], u["route"]) for u in summary.unused] == [(2, "tools"), (4, "tools"), (5, "openai")]


def test_a_changed_system_prompt_diverges_at_the_first_call(incident: Incident) -> None:
    with replay_server(incident.bundle) as replay:
        with pytest.raises(openai.ConflictError):
            weather_agent(
                "Weather in Paris and Lyon?",
                base_url=replay.base_url("openai"),
                tools_url=replay.base_url("tools"),
                system="You are a terse weather assistant.",
            )
    miss = replay.summary().misses[0]
    assert (miss.index, miss.closest_step) == (1, 1)
    [difference] = miss.differences
    assert difference.label == "messages[0] (system)"
    assert difference.recorded == "You are a weather assistant."
    assert difference.actual == "You are a terse weather assistant."
    assert difference.detail == "recorded 'You are a weather assistant.' → now 'You are a terse weather assistant.'"


def test_on_miss_live_continues_against_the_upstream(incident: Incident, upstream: object, tmp_path: Path) -> None:
    from interlock.scripted import Script, ScriptedUpstream, ToolUse
    from interlock.testing import settings_for_test

    live: ScriptedUpstream = upstream  # type: ignore[assignment]
    # From the divergence on, a live model: it asks for one more city, then answers.
    live.script(
        Script(tool_calls=[ToolUse("get_weather", {"city": "Nice"}, id="call_nice")]),
        Script(text="Live: Lyon has snow, Nice is warm."),
    )
    settings = settings_for_test({"routes": routes_for(live), "store": {"path": str(tmp_path / "live.db")}})
    with replay_server(incident.bundle, on_miss="live", live_settings=settings) as replay:
        answer = weather_agent(
            "Weather in Paris and Lyon?",
            base_url=replay.base_url("openai"),
            tools_url=replay.base_url("tools"),
            forecast=lambda city: {"Paris": "Paris: sunny", "Lyon": "Lyon: snow"}.get(city, f"{city}: warm"),
        )
    assert answer == "Live: Lyon has snow, Nice is warm."
    summary = replay.summary()
    assert summary.served == 2 and summary.live == 2 and len(summary.misses) == 1
    # The live upstream saw only the calls after the divergence, with the route's real key.
    assert [r.path for r in live.requests] == ["/v1/chat/completions", "/v1/chat/completions"]
    assert live.requests[0].headers["authorization"] == "Bearer sk-real-openai"
    assert live.requests[1].json()["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_nice",
        "content": "Nice: warm",
    }


def test_on_miss_next_serves_the_recording_in_order(incident: Incident) -> None:
    with replay_server(incident.bundle, on_miss="next") as replay:
        answer = weather_agent(
            "Weather in Paris and Lyon?",
            base_url=replay.base_url("openai"),
            tools_url=replay.base_url("tools"),
            forecast=lambda city: f"{city}: different",
        )
    assert answer == "Paris: sunny. Lyon: rainy. Take an umbrella to Lyon."
    summary = replay.summary()
    assert summary.served_next == 2 and len(summary.misses) == 2
    assert [u["route"] for u in summary.unused] == ["tools", "tools"]


def test_the_bundle_holds_the_session_and_is_never_written(incident: Incident) -> None:
    before = incident.bundle.read_bytes()
    stat = incident.bundle.stat()
    bundle = open_bundle(incident.bundle)
    assert bundle.sessions == [SESSION]
    assert bundle.routes == {"openai": "openai", "tools": "http"}
    with replay_server(bundle) as replay:
        httpx.post(replay.url + "/openai/chat/completions", json={"model": "x", "messages": []})
    assert incident.bundle.read_bytes() == before
    assert incident.bundle.stat().st_mtime_ns == stat.st_mtime_ns
    leftovers = sorted(p.name for p in incident.bundle.parent.iterdir() if p.name.startswith("incident.db"))
    assert leftovers == ["incident.db"]


def test_a_streamed_responses_api_session_replays(tmp_path: Path) -> None:
    from interlock.scripted import Script, ScriptedUpstream
    from interlock.testing import run_interlock, settings_for_test
    from interlock.tracing.store import Store

    store = tmp_path / "interlock.db"

    def ask(base_url: str) -> tuple[str, str]:
        client = openai.OpenAI(
            base_url=base_url, api_key="x", max_retries=0, default_headers={"X-Interlock-Session": "r"}
        )
        with client.responses.stream(model="gpt-4.1", input="stream me") as stream:
            streamed = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        plain = client.responses.create(model="gpt-4.1", input="tell me", previous_response_id="resp_scripted")
        return streamed, plain.output_text

    with ScriptedUpstream() as provider:
        provider.script(Script(text="streamed words", chunk_size=3), Script(text="plain words"))
        settings = settings_for_test(
            {"routes": routes_for(provider), "store": {"path": str(store)}, "shutdown_grace": 1}
        )
        with run_interlock(settings) as running:
            recorded = ask(running.url + "/openai")
    bundle = tmp_path / "responses.db"
    with Store(store) as opened:
        assert opened.export(bundle, session="r") == 2
    with replay_server(bundle) as replay:
        assert ask(replay.base_url("openai")) == recorded == ("streamed words", "plain words")
    replay.assert_no_divergence(all_used=True)
