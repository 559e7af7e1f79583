"""Loop detection (`loop:` rules), through the real openai and anthropic SDKs against the scripted provider.

One interlock for the module: each rule is scoped to an agent name, each test uses its own session,
and loop state is per session, so tests do not see each other's history."""

from __future__ import annotations

import json
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from interlock.core.call import Call
from interlock.policies.loop_history import LoopMemory, Repeat
from interlock.policies.loops import canonical_arguments
from interlock.protocols import ADAPTERS
from interlock.protocols.sse import iter_events
from interlock.scripted import Script, ScriptedUpstream, ToolUse
from interlock.testing import Running, run_interlock, settings_for_test
from tests.conftest import routes_for
from tests.proxy.routing_support import collect_calls, wait_for
from tests.sdk_errors import protocol_error

POLICY = """
rules:
  - name: tool-loops
    match: {agent: "tool-*"}
    loop: {tool_calls: 3, requests: null, tool_errors: null}
  - name: request-loops
    match: {agent: "ask-*"}
    loop: {requests: 3, tool_calls: null, tool_errors: null}
  - name: error-loops
    match: {agent: "err-*"}
    loop: {tool_errors: 3, tool_calls: null, requests: null}
  - name: stop-loops
    match: {agent: "stop-*"}
    loop: {tool_calls: 2, requests: null, tool_errors: null, action: stop_session}
  - name: watch-loops
    match: {agent: "watch-*"}
    mode: monitor
    loop: {tool_calls: 2, requests: null, tool_errors: null}
"""

WEATHER: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
ANTHROPIC_WEATHER: Any = [{"name": "get_weather", "input_schema": {"type": "object"}}]
RESPONSES_WEATHER: Any = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]


@pytest.fixture(scope="module")
def hook() -> Iterator[ScriptedUpstream]:
    """Receives the escalation webhook's events (any POST is answered 200)."""
    with ScriptedUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def running(
    upstream_server: ScriptedUpstream, hook: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    tmp_path: Path = tmp_path_factory.mktemp("loops")
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "loops.yaml").write_text(textwrap.dedent(POLICY))
    data = {
        "routes": routes_for(upstream_server),
        "shutdown_grace": 2,
        "policies": [str(tmp_path / "policies")],
        "escalation": {"webhook": hook.url + "/hook"},
    }
    with run_interlock(settings_for_test(data, tmp_path)) as running:
        yield running


@pytest.fixture(scope="module")
def calls(running: Running) -> list[Call]:
    return collect_calls(running)


def _headers(agent: str, session: str) -> dict[str, str]:
    return {"X-Interlock-Agent": agent, "X-Interlock-Session": session}


@pytest.fixture
def clients() -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for client in made:
        client.close()


def _openai(running: Running, clients: list[Any], agent: str, session: str) -> openai.OpenAI:
    client = openai.OpenAI(
        base_url=running.url + "/openai", api_key="sk-agent", max_retries=0, default_headers=_headers(agent, session)
    )
    clients.append(client)
    return client


def _anthropic(running: Running, clients: list[Any], agent: str, session: str) -> anthropic.Anthropic:
    client = anthropic.Anthropic(
        base_url=running.url + "/anthropic", api_key="sk-agent", max_retries=0, default_headers=_headers(agent, session)
    )
    clients.append(client)
    return client


def _session() -> str:
    return "s-" + uuid.uuid4().hex[:12]


def _of(calls: list[Call], session: str, count: int) -> list[Call]:
    wait_for(lambda: len([c for c in calls if c.session == session]) >= count)
    return [c for c in calls if c.session == session]


def _loop_decisions(call: Call) -> list[tuple[str, str | None, str]]:
    return [(d.action, d.rule, str(d.detail.get("kind"))) for d in call.decisions if d.stage == "loop"]


# The same call three times; the arguments' key order differs (canonical JSON makes them one call).
SAME_CALL = [
    ToolUse("get_weather", {"city": "Paris", "unit": "C"}, id="call_a"),
    ToolUse("get_weather", {"unit": "C", "city": "Paris"}, id="call_b"),
    ToolUse("get_weather", {"city": "Paris", "unit": "C"}, id="call_c"),
]


def _ask(running: Running, clients: list[Any], api: str, stream: bool, session: str, turn: int) -> Any:
    """One agent turn that makes the model call get_weather; returns the tool call the agent got."""
    question = f"weather, turn {turn}"  # each request differs: only the tool call repeats
    if api == "anthropic":
        client = _anthropic(running, clients, "tool-bot", session)
        messages: Any = [{"role": "user", "content": question}]
        if stream:
            with client.messages.stream(
                model="claude-sonnet-4-5", max_tokens=100, messages=messages, tools=ANTHROPIC_WEATHER
            ) as events:
                message = events.get_final_message()
        else:
            message = client.messages.create(
                model="claude-sonnet-4-5", max_tokens=100, messages=messages, tools=ANTHROPIC_WEATHER
            )
        return [(b.name, b.input) for b in message.content if b.type == "tool_use"]
    client_ = _openai(running, clients, "tool-bot", session)
    if api == "responses":
        if stream:
            with client_.responses.stream(model="gpt-4o", input=question, tools=RESPONSES_WEATHER) as events:
                response = events.get_final_response()
        else:
            response = client_.responses.create(model="gpt-4o", input=question, tools=RESPONSES_WEATHER)
        return [(i.name, i.arguments) for i in response.output if i.type == "function_call"]
    if stream:
        with client_.chat.completions.stream(
            model="gpt-4o", messages=[{"role": "user", "content": question}], tools=WEATHER
        ) as events:
            completion = events.get_final_completion()
    else:
        completion = client_.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": question}], tools=WEATHER
        )
    return [(t.function.name, t.function.arguments) for t in completion.choices[0].message.tool_calls or []]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("api", ["chat", "responses", "anthropic"])
def test_a_tool_call_loop_is_denied_at_the_nth_repeat(
    running: Running,
    calls: list[Call],
    upstream: ScriptedUpstream,
    hook: ScriptedUpstream,
    clients: list[Any],
    api: str,
    stream: bool,
) -> None:
    session = _session()
    upstream.script(*(Script(tool_calls=[call]) for call in SAME_CALL))
    assert _ask(running, clients, api, stream, session, 1)
    assert _ask(running, clients, api, stream, session, 2)
    errors = (openai.APIError, anthropic.APIError)
    with pytest.raises(errors) as caught:
        _ask(running, clients, api, stream, session, 3)
    if not stream:  # a stream's error event has no HTTP status: the SDK raises APIError from the event
        assert getattr(caught.value, "status_code", None) == 403
        response = caught.value.response  # type: ignore[union-attr]
        assert response.headers["x-should-retry"] == "false"
    assert protocol_error(caught.value)["code"] == "loop_detected"
    recorded = _of(calls, session, 3)
    assert [_loop_decisions(c) for c in recorded] == [[], [], [("deny", "tool-loops", "tool_calls")]]
    third = recorded[2]
    assert third.outcome == "blocked" and third.error_code == "loop_detected"
    assert third.meta["loop"] == [{"rule": "tool-loops", "kind": "tool_calls", "count": 3, "action": "deny"}]
    if stream:  # the repeated call never reached the agent: the held tool-call events were dropped
        events = list(iter_events(b"".join(c.data for c in third.agent_chunks or [])))
        assert [e for e in events if "loop_detected" in e.data]
        assert not [e for e in events if ADAPTERS[third.protocol].stream_tool_names(e)]
    # The webhook hears of the loop once, without bodies or arguments.
    wait_for(lambda: [r for r in hook.requests if r.json().get("session") == session])
    [event] = [r.json() for r in hook.requests if r.json().get("session") == session]
    assert (event["event"], event["rule"], event["kind"], event["action"]) == (
        "loop_detected",
        "tool-loops",
        "tool_calls",
        "deny",
    )
    assert event["call_id"] == third.id and "Paris" not in json.dumps(event)
    # Another session is not affected by this one's history.
    upstream.script(Script(tool_calls=[SAME_CALL[0]]))
    assert _ask(running, clients, api, stream, _session(), 4)


def test_a_different_argument_is_a_different_call(
    running: Running, upstream: ScriptedUpstream, clients: list[Any]
) -> None:
    session = _session()
    cities = ["Paris", "Rome", "Oslo", "Paris"]
    upstream.script(*(Script(tool_calls=[ToolUse("get_weather", {"city": c})]) for c in cities))
    for turn in range(4):
        assert _ask(running, clients, "chat", False, session, turn)  # Paris twice: under the threshold of 3


def test_a_repeated_request_is_refused_before_the_upstream(
    running: Running, calls: list[Call], upstream: ScriptedUpstream, clients: list[Any]
) -> None:
    session = _session()
    client = _openai(running, clients, "ask-bot", session)
    # The conversation grows, but every new turn is the same: the same answer, then the same question
    # (the first request has no answer in it yet: a turn of its own).
    history: Any = [{"role": "user", "content": "is it done?"}]
    for _ in range(3):
        reply = client.chat.completions.create(model="gpt-4o", messages=history)
        history += [{"role": "assistant", "content": reply.choices[0].message.content}]
        history += [{"role": "user", "content": "is it done?"}]
    seen = len(upstream.requests)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=history)
    assert protocol_error(caught.value)["code"] == "loop_detected"
    assert len(upstream.requests) == seen  # refused before anything was sent
    recorded = _of(calls, session, 4)
    assert [_loop_decisions(c) for c in recorded] == [[], [], [], [("deny", "request-loops", "requests")]]
    assert recorded[3].outcome == "denied"


def test_a_repeated_responses_input_is_refused(
    running: Running, calls: list[Call], upstream: ScriptedUpstream, clients: list[Any]
) -> None:
    session = _session()
    client = _openai(running, clients, "ask-bot", session)
    client.responses.create(model="gpt-4o", input="retry the deploy")
    client.responses.create(model="gpt-4o", input="something else")
    client.responses.create(model="gpt-4o", input="retry the deploy")
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.responses.create(model="gpt-4o", input="retry the deploy")
    assert protocol_error(caught.value)["code"] == "loop_detected"


def _failed_turn(tool_id: str, text: str) -> Any:
    return [
        {"role": "user", "content": "deploy it"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": tool_id, "name": "deploy", "input": {}}]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": tool_id, "is_error": True, "content": text}],
        },
    ]


def test_the_same_tool_error_in_a_row_is_a_loop(
    running: Running, calls: list[Call], upstream: ScriptedUpstream, clients: list[Any]
) -> None:
    session = _session()
    client = _anthropic(running, clients, "err-bot", session)

    def send(tool_id: str, text: str) -> None:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=_failed_turn(tool_id, text))

    send("t1", "permission denied")
    send("t2", "permission denied")
    send("t3", "disk full")  # a different error ends the streak
    send("t4", "permission denied")
    send("t5", "permission denied")
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        send("t6", "permission denied")
    assert protocol_error(caught.value)["code"] == "loop_detected"
    recorded = _of(calls, session, 6)
    assert _loop_decisions(recorded[5]) == [("deny", "error-loops", "tool_errors")]
    assert all(not _loop_decisions(c) for c in recorded[:5])


def test_a_monitor_rule_records_the_loop_and_changes_nothing(
    running: Running, calls: list[Call], upstream: ScriptedUpstream, clients: list[Any]
) -> None:
    session = _session()
    client = _openai(running, clients, "watch-bot", session)
    upstream.script(*(Script(tool_calls=[SAME_CALL[0]]) for _ in range(3)))
    for turn in range(3):
        message = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": f"turn {turn}"}], tools=WEATHER
        )
        assert message.choices[0].message.tool_calls
    recorded = _of(calls, session, 3)
    assert [_loop_decisions(c) for c in recorded] == [
        [],
        [("monitor", "watch-loops", "tool_calls")],
        [("monitor", "watch-loops", "tool_calls")],
    ]
    assert all(c.outcome == "ok" for c in recorded)


def test_canonical_arguments_ignore_key_order_and_spacing() -> None:
    assert canonical_arguments('{"b": 2, "a": 1}') == canonical_arguments({"a": 1, "b": 2}) == '{"a":1,"b":2}'
    assert canonical_arguments("not json ") == "not json"


async def test_loop_memory_is_bounded_by_sessions_and_idle_time() -> None:
    memory = LoopMemory(max_sessions=3, idle_ttl=10.0)
    for index in range(5):
        await memory.observe(f"s{index}", 4, float(index))
    assert len(memory) == 3 and memory.forgotten == 2
    for _ in range(10):
        seen = await memory.observe("s4", 4, 4.0, [Repeat("tool_calls", b"x")])
    assert seen.repeats == [[0, 1, 2, 3]]  # the window bounds each session
    await memory.observe("late", 4, 100.0)  # every other session has been idle past the TTL
    assert len(memory) == 1


def test_stop_session_stops_the_session_through_the_kill_switch(
    running: Running, calls: list[Call], upstream: ScriptedUpstream, clients: list[Any]
) -> None:
    session = _session()
    client = _openai(running, clients, "stop-bot", session)
    upstream.script(*(Script(tool_calls=[SAME_CALL[0]]) for _ in range(2)))

    def ask(turn: int) -> Any:
        return client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": f"turn {turn}"}], tools=WEATHER
        )

    assert ask(1).choices[0].message.tool_calls
    with pytest.raises(openai.PermissionDeniedError) as looped:
        ask(2)
    assert protocol_error(looped.value)["code"] == "loop_detected"
    seen = len(upstream.requests)
    with pytest.raises(openai.PermissionDeniedError) as stopped:
        ask(3)  # the session is stopped: refused before anything is sent
    assert protocol_error(stopped.value)["code"] == "session_stopped"
    assert "stop-loops" in protocol_error(stopped.value)["message"]
    assert len(upstream.requests) == seen
    recorded = _of(calls, session, 3)
    assert _loop_decisions(recorded[1]) == [("stop_session", "stop-loops", "tool_calls")]
    assert recorded[2].error_code == "session_stopped"
    other = _openai(running, clients, "stop-bot", _session())  # another session goes on
    upstream.script(Script(text="fine"))
    assert other.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
