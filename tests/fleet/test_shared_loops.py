"""Loop detection shared by every interlock that counts a session (docs/policies.md, "Loops"): a loop
whose repeats land on different replicas (one Redis) or worker processes (one store file) is caught
at its Nth repeat, as on one process; and while Redis is down each interlock follows
`state.on_failure.loops`. The agents are the real openai SDK; the provider is the scripted one."""

from __future__ import annotations

import sqlite3
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import openai
import pytest

from interlock.scripted import Script, ScriptedUpstream, ToolUse
from interlock.testing import Running, run_interlock, settings_for_test
from tests.conftest import routes_for
from tests.fleet import test_redis_state
from tests.fleet.test_redis_state import Start, client, recorded
from tests.sdk_errors import protocol_error

# The Redis fleet's fixtures: interlocks on one Redis, and that Redis stopped for a test.
fleet = test_redis_state.fleet
redis_down = test_redis_state.redis_down

#: Starts a real redis-server or several interlocks (tests/servers.py).
pytestmark = pytest.mark.slow

POLICY = """
    rules:
      - name: fleet-loops
        match: {agent: "loop-*"}
        loop: {tool_calls: 3, requests: 3, tool_errors: null}
      - name: answer-loops
        match: {agent: "answer-*"}
        loop: {tool_calls: 3, requests: null, tool_errors: null}
    """
WEATHER: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
CALL = ToolUse("get_weather", {"city": "Paris"}, id="call_1")
HI: Any = [{"role": "user", "content": "hi"}]


def _session_client(running: Running, session: str) -> openai.OpenAI:
    return client(running, "loop-bot", **{"X-Interlock-Session": session})


def _loop_actions(call: Any) -> list[tuple[str, str | None]]:
    return [(d.action, d.rule) for d in call.decisions if d.stage == "loop"]


def _caught_across(replicas: list[Running], upstream: ScriptedUpstream) -> None:
    """A tool-call loop and a request loop, each repeated on alternating replicas: the third repeat
    is refused, whichever replica it lands on."""
    session = uuid.uuid4().hex
    upstream.script(*(Script(tool_calls=[CALL]) for _ in range(3)))
    for turn in range(2):  # each request differs: only the model's tool call repeats
        reply = _session_client(replicas[turn % 2], session).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": f"turn {turn}"}], tools=WEATHER
        )
        assert reply.choices[0].message.tool_calls
    with pytest.raises(openai.PermissionDeniedError) as caught:
        _session_client(replicas[0], session).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "turn 2"}], tools=WEATHER
        )
    assert protocol_error(caught.value)["code"] == "loop_detected"

    session = uuid.uuid4().hex
    for index in range(2):
        assert _session_client(replicas[index % 2], session).chat.completions.create(model="gpt-4o", messages=HI)
    sent = len(upstream.requests)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        _session_client(replicas[0], session).chat.completions.create(model="gpt-4o", messages=HI)
    assert protocol_error(caught.value)["code"] == "loop_detected"
    assert len(upstream.requests) == sent  # refused before it was sent


def test_a_loop_spread_over_two_replicas_on_one_redis_is_caught(fleet: Start, upstream: ScriptedUpstream) -> None:
    replicas = [fleet(POLICY), fleet(POLICY)]
    _caught_across(replicas, upstream)
    refused = [c for c in recorded(replicas[0], 4) if c.error_code == "loop_detected"]
    assert [_loop_actions(c) for c in refused] == [[("deny", "fleet-loops")]] * 2


def test_a_loop_spread_over_two_workers_on_one_store_file_is_caught(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    """Two interlocks as the workers of `serve --workers 2` are (`workers: 2`, one store file, no
    Redis): the histories are the file's (tests/fleet/test_workers.py runs the real CLI)."""
    (tmp_path / "policy.yaml").write_text(textwrap.dedent(POLICY))
    data = {
        "routes": routes_for(upstream),
        "shutdown_grace": 2,
        "policies": [str(tmp_path / "policy.yaml")],
        "store": {"path": str(tmp_path / "interlock.db")},
    }
    with ExitStack() as stack:
        replicas = [
            stack.enter_context(run_interlock(settings_for_test(data, tmp_path).model_copy(update={"workers": 2})))
            for _ in range(2)
        ]
        _caught_across(replicas, upstream)
    with sqlite3.connect(tmp_path / "interlock.db") as db:
        kinds = dict(db.execute("SELECT kind, COUNT(*) FROM loop_entries GROUP BY kind").fetchall())
    assert kinds == {"tool_calls": 3, "requests": 6}  # every model call is a request too


@pytest.fixture
def two_policies(fleet: Start) -> Iterator[tuple[Running, Running]]:
    """An interlock with the default failure mode for loops and one that fails closed."""
    yield (
        fleet(POLICY, state={"timeout": 0.3}),
        fleet(POLICY, state={"timeout": 0.3, "on_failure": {"loops": "fail_closed"}}),
    )


def test_while_redis_is_down_loops_follow_their_failure_mode(
    two_policies: tuple[Running, Running], upstream: ScriptedUpstream, request: pytest.FixtureRequest
) -> None:
    defaults, strict = two_policies
    request.getfixturevalue("redis_down")
    # fail_open (the default): each interlock counts alone meanwhile, so a loop within it is caught,
    # and every call it counted that way says so on its record
    session = uuid.uuid4().hex
    for _ in range(2):
        assert _session_client(defaults, session).chat.completions.create(model="gpt-4o", messages=HI)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        _session_client(defaults, session).chat.completions.create(model="gpt-4o", messages=HI)
    assert protocol_error(caught.value)["code"] == "loop_detected"
    calls = sorted(recorded(defaults, 3), key=lambda c: c.id)  # ids sort by creation time
    assert [_loop_actions(c) for c in calls] == [
        [("error", "fleet-loops")],
        [("error", "fleet-loops")],
        [("error", "fleet-loops"), ("deny", "fleet-loops")],
    ]
    # fail_closed: a call under a loop rule is refused, retryable
    with pytest.raises(openai.InternalServerError) as refused:
        _session_client(strict, uuid.uuid4().hex).chat.completions.create(model="gpt-4o", messages=HI)
    assert refused.value.status_code == 503 and protocol_error(refused.value)["code"] == "state_unavailable"
    # a streamed answer whose tool call cannot be counted ends with the protocol's error event, the
    # tool call held back
    upstream.script(Script(tool_calls=[CALL]))
    stream = client(strict, "answer-bot").chat.completions.create(
        model="gpt-4o", messages=HI, tools=WEATHER, stream=True
    )
    with pytest.raises(openai.APIError) as streamed:
        assert not any(c.choices and c.choices[0].delta.tool_calls for c in stream)
    assert protocol_error(streamed.value)["code"] == "state_unavailable"
    # a call no loop rule applies to is not affected
    assert client(strict, "other").chat.completions.create(model="gpt-4o", messages=HI).choices
