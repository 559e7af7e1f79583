"""The one stage list (`interlock.proxy.pipeline.built_in_stages`): its order contracts, a stage added
through the public API, the two phases of a call's end, and a response a stage supplies."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from interlock.core.call import Call, SuppliedResponse
from interlock.core.views import Event
from interlock.policies.loader import PolicyRuntime
from interlock.proxy.hooks import Pipeline
from interlock.proxy.pipeline import Services, built_in_stages
from interlock.scripted import ScriptedUpstream
from interlock.testing import Running, settings_for_test
from tests.guardrails.test_guardrails_stream import jwt_like


def _names(stages: list[object]) -> list[str]:
    return [getattr(stage, "name", type(stage).__name__) for stage in stages]


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


def test_every_built_in_stage_in_its_order(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - name: no-rm\n    deny: {tools: [rm]}\n")
    settings = settings_for_test(
        {
            "routes": {
                "openai": {"upstream": "http://127.0.0.1:9/v1"},
                "tools": {"protocol": "mcp", "upstream": "http://127.0.0.1:9/mcp"},
            },
            "policies": [str(policy)],
        },
        tmp_path,
    )
    services = Services(
        policy=PolicyRuntime([str(policy)]),
        recorder=_Named("recorder"),
        exporter=_Named("exporter"),  # type: ignore[arg-type]
    )
    names = _names(built_in_stages(settings, services, [_Named("mine")]))
    assert names == [
        "identify",
        "parse",
        "mcp",
        "mcp_pins",
        "usage",
        "policy",
        "mcp_tools",
        "loops",
        "guardrails",
        "scrub",
        "mcp_record",
        "recorder",
        "exporter",
        "mine",  # a user's stages come after the built-in ones
    ]
    at = names.index
    assert at("identify") < at("parse") < at("policy")  # rules read the agent and the parsed request
    assert at("mcp") < at("policy")  # the MCP session is the call's before a rule sees it
    assert at("usage") < at("policy")  # usage is read before limits and budgets count it
    assert at("policy") < at("guardrails")  # a rule may ask for a guardrail; a denied call is not scanned
    assert at("mcp_pins") < at("mcp_tools")  # the pins judge the server's own list, before policy filters it
    assert at("policy") < at("loops")  # policy names the loop rules that apply to the call
    # The record is redacted (guardrails, then scrub) before MCP record copies from it, and before
    # the recorder and the exporter consume it.
    assert at("guardrails") < at("scrub") < at("mcp_record") < at("recorder") < at("exporter")


def test_each_stage_is_inert_when_its_configuration_is_off(tmp_path: Path) -> None:
    settings = settings_for_test({"routes": {"openai": {"upstream": "http://127.0.0.1:9/v1"}}}, tmp_path)
    assert _names(built_in_stages(settings, Services())) == ["identify", "parse", "usage"]


async def test_every_seal_runs_before_any_done_wherever_the_stages_sit() -> None:
    events: list[str] = []

    class Consumer:
        async def done(self, call: Call) -> None:
            events.append(f"done:{call.meta.get('sealed')}")

    class Sealer:
        def seal(self, call: Call) -> None:
            call.meta["sealed"] = True
            events.append("seal")

    # The consumer sits before the sealer in the list; it still reads the call sealed.
    await Pipeline([Consumer(), Sealer()]).finish(Call(id="c", route="r", protocol="http", method="GET", path="/"))
    assert events == ["seal", "done:True"]


class Tagger:
    """A user's stage: tags every call in its request hook, marks it in its seal, collects it in its done."""

    name = "tagger"

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def request(self, call: Call) -> None:
        call.request_headers.append(("x-tagged", "yes"))

    def seal(self, call: Call) -> None:
        call.meta["tagged"] = True

    async def done(self, call: Call) -> None:
        self.calls.append(call)


def _wait(condition: Callable[[], Any], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_a_stage_added_through_the_runtime_sees_every_call(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    tagger = Tagger()
    running: Running = make_interlock(stages=[tagger])
    assert running.runtime.pipeline.stages[-1] is tagger
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(running.url + "/openai/chat/completions", json=body, timeout=30)
    assert response.status_code == 200
    assert dict(upstream.requests[-1].headers)["x-tagged"] == "yes"  # its request hook ran before sending
    _wait(lambda: tagger.calls)
    (call,) = tagger.calls
    assert call.meta["tagged"] is True and call.status == 200
    # The recorder's `done` (before the tagger's in the list) read the call after the tagger's seal.
    assert running.runtime.recorder is not None
    running.runtime.recorder.flush()
    stored = running.runtime.store.get_call(call.id)
    assert stored is not None and stored.meta["tagged"] is True


# -- a response a stage supplies -------------------------------------------------------------------


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    event = {
        "id": "chatcmpl-supplied",
        "object": "chat.completion.chunk",
        "created": 1733450000,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(event).encode() + b"\n\n"


_USAGE = (
    b'data: {"id": "chatcmpl-supplied", "object": "chat.completion.chunk", "created": 1733450000, "model": '
    b'"gpt-4o-2024-08-06", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 5, '
    b'"total_tokens": 17}}\n\n'
)
TEXT_STREAM = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "Hello from "}),
    _chunk({"content": "the cache"}),
    _chunk({}, "stop"),
    _USAGE,
    b"data: [DONE]\n\n",
]
TOOL_STREAM = [
    _chunk({"role": "assistant", "content": None}),
    _chunk(
        {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "rm", "arguments": ""}}]}
    ),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"path": "/etc"}'}}]}),
    _chunk({}, "tool_calls"),
    _USAGE,
    b"data: [DONE]\n\n",
]


class Playback:
    """A test cache: supplies a recorded OpenAI chat stream instead of asking the upstream, and
    notes which response hooks it then sees."""

    name = "playback"

    def __init__(self, streams: list[list[bytes]]) -> None:
        self.streams = streams
        self.events: list[str] = []
        self.calls: list[Call] = []

    async def request(self, call: Call) -> None:
        events = self.streams.pop(0)

        async def chunks() -> AsyncIterator[bytes]:
            for event in events:
                yield event

        call.supplied = SuppliedResponse(200, [("content-type", "text/event-stream")], chunks(), self.name)

    def response_head(self, call: Call) -> None:
        self.events.append("response_head")

    def chunk(self, call: Call, events: list[Event], last: bool) -> list[Event]:
        self.events.append("chunk")
        return events

    def response(self, call: Call) -> None:
        self.events.append("response")

    async def done(self, call: Call) -> None:
        self.calls.append(call)


@pytest.fixture
def playback(make_interlock: Any, tmp_path: Path) -> tuple[Running, Playback]:
    policy = tmp_path / "policies" / "tools.yaml"
    policy.parent.mkdir()
    policy.write_text("rules:\n  - name: no-rm\n    deny: {tools: [rm]}\n")
    stage = Playback([TEXT_STREAM, TOOL_STREAM])
    return make_interlock(policies=[str(policy.parent)], stages=[stage]), stage


def _events(text: str) -> list[Any]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


def test_a_supplied_stream_runs_the_response_hooks(
    playback: tuple[Running, Playback], upstream: ScriptedUpstream
) -> None:
    running, stage = playback
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", running.url + "/openai/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    pieces = [c["choices"][0]["delta"].get("content") for c in _events(text) if c["choices"]]
    assert "".join(p for p in pieces if p) == "Hello from the cache" and text.endswith("data: [DONE]\n\n")
    _wait(lambda: stage.calls)
    call = stage.calls[0]
    assert stage.events[0] == "response_head" and stage.events[-1] == "response" and "chunk" in stage.events
    assert (call.outcome, call.status, call.stream) == ("ok", 200, True)
    assert (call.input_tokens, call.output_tokens) == (12, 5)  # the usage stage read the supplied stream
    assert call.meta["supplied_by"] == "playback" and call.attempts == [] and call.upstream is None
    assert upstream.requests == []  # no upstream was asked

    # A supplied stream that calls a denied tool is cut like an upstream's: the policy's chunk hook.
    with httpx.stream("POST", running.url + "/openai/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        text = response.read().decode()
    assert '"rm"' not in text and "/etc" not in text
    errors = [event["error"] for event in _events(text) if "error" in event]
    assert [error["code"] for error in errors] == ["policy_denied"]
    _wait(lambda: len(stage.calls) == 2)
    call = stage.calls[1]
    assert (call.outcome, call.error_code, call.truncated) == ("blocked", "policy_denied", True)
    assert any(d.stage == "policy" and d.action == "deny" and d.rule == "no-rm" for d in call.decisions)
    assert upstream.requests == []


class SuppliedBody:
    """A test cache that answers with a recorded (non-streamed) OpenAI chat completion."""

    name = "cache"

    def __init__(self, completion: dict[str, Any]) -> None:
        self.body = json.dumps(completion).encode()
        self.calls: list[Call] = []

    def request(self, call: Call) -> None:
        call.supplied = SuppliedResponse(200, [("content-type", "application/json")], self.body, self.name)

    def done(self, call: Call) -> None:
        self.calls.append(call)


def test_a_supplied_body_that_calls_a_denied_tool_is_refused_by_the_response_hooks(
    make_interlock: Any, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    policy = tmp_path / "tools.yaml"
    policy.write_text("rules:\n  - name: no-rm\n    deny: {tools: [rm]}\n")
    tool_call = {"id": "call_1", "type": "function", "function": {"name": "rm", "arguments": '{"path": "/etc"}'}}
    stage = SuppliedBody(
        {
            "id": "chatcmpl-supplied",
            "object": "chat.completion",
            "created": 1733450000,
            "model": "gpt-4o-2024-08-06",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": None, "tool_calls": [tool_call]},
                    "logprobs": None,
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
        }
    )
    running: Running = make_interlock(policies=[str(policy)], stages=[stage])
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "clean up"}]}
    response = httpx.post(running.url + "/openai/chat/completions", json=body, timeout=30)
    assert response.status_code == 403 and response.json()["error"]["code"] == "policy_denied"
    _wait(lambda: stage.calls)
    (call,) = stage.calls
    assert (call.outcome, call.error_code) == ("blocked", "policy_denied")
    assert (call.input_tokens, call.output_tokens) == (9, 4)  # usage read from the supplied body
    assert call.meta["supplied_by"] == "cache" and call.attempts == [] and upstream.requests == []


def test_the_guardrails_redact_a_secret_in_a_supplied_stream(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    token = jwt_like()
    text = f"Here is the token you asked for: {token} and keep it safe."
    events = [_chunk({"role": "assistant", "content": ""})]
    events += [_chunk({"content": text[i : i + 40]}) for i in range(0, len(text), 40)]
    events += [_chunk({}, "stop"), _USAGE, b"data: [DONE]\n\n"]
    stage = Playback([events])
    running: Running = make_interlock(guardrails={"response": {"SECRET": "redact"}}, stages=[stage])
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "token?"}], "stream": True}
    with httpx.stream("POST", running.url + "/openai/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        received = response.read().decode()
    pieces = [c["choices"][0]["delta"].get("content") or "" for c in _events(received) if c["choices"]]
    assert "".join(pieces) == "Here is the token you asked for: <SECRET> and keep it safe."
    assert token not in received
    _wait(lambda: stage.calls)
    assert any(f.action == "redact" for f in stage.calls[0].findings) and upstream.requests == []
