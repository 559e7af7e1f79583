"""Each policy effect, proven through the real openai SDK against the scripted provider."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from interlock.scripted import Script, ScriptedUpstream, ToolUse
from interlock.testing import wait_for
from tests.policies.conftest import openai_client
from tests.proxy.routing_support import collect_calls, finished
from tests.sdk_errors import protocol_error

TOOLS: Any = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "delete_file", "parameters": {"type": "object"}}},
]
HI: Any = [{"role": "user", "content": "hi"}]


def test_a_model_outside_the_allow_list_is_denied_before_the_upstream(
    with_policy: Any, upstream: ScriptedUpstream
) -> None:
    running = with_policy(
        """
        rules:
          - name: support-uses-small-models
            match: {agent: "support-*", route: openai}
            allow: {models: [gpt-4o-mini, gpt-4.1-mini]}
            message: support agents use small models
        """
    )
    client = openai_client(running)
    assert client.chat.completions.create(model="gpt-4o-mini", messages=HI).choices[0].message.content == "echo: hi"
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=HI)
    assert caught.value.status_code == 403
    error = protocol_error(caught.value)
    assert error["code"] == "policy_denied"
    assert "support-uses-small-models" in error["message"] and "support agents use small models" in error["message"]
    assert len(upstream.requests) == 1  # only the allowed call reached the provider
    # Another agent is not matched by the rule.
    other = openai_client(running, agent="research-bot")
    assert other.chat.completions.create(model="gpt-4o", messages=HI).choices[0].message.content == "echo: hi"


def test_a_denied_offered_tool_is_stripped(with_policy: Any, upstream: ScriptedUpstream) -> None:
    running = with_policy(
        """
        rules:
          - name: no-destructive-tools
            deny: {tools: ["delete_*", run_shell]}
        """
    )
    client = openai_client(running)
    client.chat.completions.create(model="gpt-4o-mini", messages=HI, tools=TOOLS, tool_choice="auto")
    sent = upstream.requests[-1].json()
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather"]
    only_denied = [TOOLS[1]]
    client.chat.completions.create(model="gpt-4o-mini", messages=HI, tools=only_denied, tool_choice="auto")
    sent = upstream.requests[-1].json()
    assert "tools" not in sent and "tool_choice" not in sent


def test_a_denied_offered_tool_denies_the_call_when_the_rule_says_so(
    with_policy: Any, upstream: ScriptedUpstream
) -> None:
    running = with_policy(
        """
        rules:
          - name: no-destructive-tools
            deny: {tools: ["delete_*"]}
            offered_tools: deny
        """
    )
    client = openai_client(running)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=HI, tools=TOOLS)
    error = protocol_error(caught.value)
    assert error["code"] == "policy_denied" and "no-destructive-tools" in error["message"]
    assert "delete_file" in protocol_error(caught.value)["message"]
    assert upstream.requests == []


def test_a_response_calling_a_denied_tool_is_blocked(with_policy: Any, upstream: ScriptedUpstream) -> None:
    running = with_policy(
        """
        rules:
          - name: weather-only
            allow: {tools: [get_weather]}
        """
    )
    upstream.script(Script(tool_calls=[ToolUse("delete_file", {"path": "/etc/passwd-SECRET-ARG"})]))
    client = openai_client(running)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    error = protocol_error(caught.value)
    assert error["code"] == "policy_denied" and "weather-only" in error["message"]
    assert "SECRET-ARG" not in caught.value.response.text


def _stream_tool_call(client: openai.OpenAI, api: str) -> tuple[str, openai.APIError | None]:
    """Everything the SDK handed the agent from a streamed response, as text, and the error it raised."""
    received: list[str] = []
    if api == "chat":
        stream: Any = client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)
    else:
        stream = client.responses.create(model="gpt-4o-mini", input="hi", stream=True)
    try:
        for event in stream:
            received.append(event.model_dump_json())
    except openai.APIError as exc:
        return "".join(received), exc
    finally:
        stream.close()
    return "".join(received), None


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize("mode", ["enforce", "monitor"])
def test_a_streamed_tool_call_is_cut_before_its_arguments(
    with_policy: Any, upstream: ScriptedUpstream, api: str, mode: str
) -> None:
    running = with_policy(
        f"""
        rules:
          - name: no-destructive-tools
            deny: {{tools: ["delete_*"]}}
            mode: {mode}
        """
    )
    # The scripted provider streams arguments 8 characters at a time: any piece would show "ZZ".
    upstream.script(Script(tool_calls=[ToolUse("delete_file", {"path": "Z" * 40})]))
    received, error = _stream_tool_call(openai_client(running), api)
    if mode == "monitor":  # the control: not enforced, the arguments do reach the agent
        assert error is None and "ZZZZ" in received
        return
    assert error is not None and "no-destructive-tools" in protocol_error(error)["message"]
    assert "ZZ" not in received
    assert "delete_file" not in received  # cut at the event that names the tool


def test_set_clamps_max_tokens(with_policy: Any, upstream: ScriptedUpstream) -> None:
    running = with_policy(
        """
        rules:
          - name: clamp
            set: {max_tokens: 4096, temperature: 0.5}
        """
    )
    client = openai_client(running)
    client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=100000, temperature=1.5)
    sent = upstream.requests[-1].json()
    assert sent["max_tokens"] == 4096 and sent["temperature"] == 0.5
    client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=10)
    assert upstream.requests[-1].json()["max_tokens"] == 10
    client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert upstream.requests[-1].json()["max_tokens"] == 4096
    client.responses.create(model="gpt-4o-mini", input="hi", max_output_tokens=9000)
    assert upstream.requests[-1].json()["max_output_tokens"] == 4096


def test_monitor_mode_records_but_does_not_enforce(with_policy: Any, upstream: ScriptedUpstream) -> None:
    running = with_policy(
        """
        rules:
          - name: watch-big-models
            allow: {models: [gpt-4o-mini]}
            mode: monitor
        """
    )
    client = openai_client(running)
    assert client.chat.completions.create(model="gpt-4o", messages=HI).choices[0].message.content == "echo: hi"
    assert len(upstream.requests) == 1
    assert running.runtime.policy.fired["watch-big-models"] == 1
    store = running.runtime.store
    wait_for(lambda: list(store.iter_calls()), what="the call recorded")
    (recorded,) = list(store.iter_calls())
    decisions = [(d.action, d.rule, d.reason) for d in recorded.decisions if d.stage == "policy"]
    assert decisions == [
        ("monitor", "watch-big-models", "would deny: model 'gpt-4o' is not in the allowed models (gpt-4o-mini)")
    ]
    assert recorded.meta["policy"]["decision"] == "allow" and recorded.outcome == "ok"


def test_cel_condition_and_runtime_error(with_policy: Any, upstream: ScriptedUpstream) -> None:
    running = with_policy(
        """
        rules:
          - name: long-prompts-only-for-research
            when: 'request.input_chars > 20 && !agent.startsWith("research")'
            deny: {}
            message: prompt too large for this agent
          - name: needs-temperature
            when: 'request.params.temperature > 1.0'
            deny: {}
            on_error: allow
          - name: strict-user
            match: {agent: strict}
            when: 'request.params.seed > 0'
            deny: {}
        """
    )
    client = openai_client(running)
    long = [{"role": "user", "content": "x" * 40}]
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="m", messages=long)  # type: ignore[arg-type]
    assert "prompt too large for this agent" in protocol_error(caught.value)["message"]
    research = openai_client(running, agent="research-1")
    research.chat.completions.create(model="m", messages=long)  # type: ignore[arg-type]
    # No temperature: the condition fails at run time; on_error: allow lets the call through.
    client.chat.completions.create(model="m", messages=HI)
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="m", messages=HI, temperature=1.5)
    # on_error defaults to deny.
    strict = openai_client(running, agent="strict")
    with pytest.raises(openai.PermissionDeniedError) as caught:
        strict.chat.completions.create(model="m", messages=HI)
    error = protocol_error(caught.value)
    assert "strict-user" in error["message"] and "condition failed" in error["message"]
    assert len(upstream.requests) == 2


def test_requests_per_minute_gives_429_with_retry_after(with_policy: Any, upstream: ScriptedUpstream) -> None:
    running = with_policy(
        """
        rules:
          - name: rpm
            match: {agent: "*"}
            limits: {requests_per_minute: 2}
        """
    )
    client = openai_client(running)
    for _ in range(2):
        client.chat.completions.create(model="m", messages=HI)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="m", messages=HI)
    assert protocol_error(caught.value)["code"] == "rate_limited" and "rpm" in protocol_error(caught.value)["message"]
    retry_after = int(caught.value.response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    # Counted per agent: another agent has its own window.
    openai_client(running, agent="other").chat.completions.create(model="m", messages=HI)
    assert len(upstream.requests) == 3


def test_tokens_per_minute(with_policy: Any, upstream: ScriptedUpstream) -> None:
    running = with_policy(
        """
        rules:
          - name: tpm
            limits: {tokens_per_minute: 30}
        """
    )
    client = openai_client(running)
    client.chat.completions.create(model="m", messages=HI)  # 18 tokens
    client.chat.completions.create(model="m", messages=HI)  # 36: over from now on
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="m", messages=HI)
    assert "30 tokens per minute" in protocol_error(caught.value)["message"]


def test_streamed_tool_call_and_plain_text_pass_when_allowed(with_policy: Any, upstream: ScriptedUpstream) -> None:
    running = with_policy(
        """
        rules:
          - name: no-destructive-tools
            deny: {tools: ["delete_*"]}
        """
    )
    upstream.script(Script(tool_calls=[ToolUse("get_weather", {"city": "Paris"})]), Script(text="plain text here"))
    client = openai_client(running)
    stream = client.chat.completions.create(model="m", messages=HI, stream=True)
    arguments = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or ""  # type: ignore[index, union-attr]
        for c in stream
        if c.choices and c.choices[0].delta.tool_calls
    )
    assert json.loads(arguments) == {"city": "Paris"}
    stream = client.chat.completions.create(model="m", messages=HI, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "plain text here"


def test_a_cut_stream_stops_reading_the_upstream(with_policy: Any, upstream: ScriptedUpstream) -> None:
    running = with_policy('rules:\n  - name: no-destructive-tools\n    deny: {tools: ["delete_*"]}\n')
    # After its last event the provider holds the stream open for a long time (a model still
    # generating): an agent reading to the end must not wait for it, nor should interlock.
    upstream.script(Script(tool_calls=[ToolUse("delete_file", {"path": "Z" * 40})], end_delay=3))
    calls = collect_calls(running)
    body = {"model": "gpt-4o-mini", "messages": HI, "stream": True}
    with httpx.stream("POST", running.url + "/openai/chat/completions", json=body, timeout=20) as response:
        received = b"".join(response.iter_raw())
    assert b"policy_denied" in received and b"ZZ" not in received
    wait_for(lambda: upstream.disconnects >= 1, what="interlock closing the upstream stream")
    (call,) = finished(calls)
    assert call.truncated and call.error_code == "policy_denied"


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_only_a_policy_changed_is_recorded_as_sent_and_as_the_agent_sent_it(
    with_policy: Any, upstream: ScriptedUpstream, stream: bool
) -> None:
    # guardrails are on (they scan every request) but find nothing to change in this one
    running = with_policy(
        "rules:\n  - name: clamp\n    set: {max_tokens: 100}\n",
        guardrails={"request": {"EMAIL_ADDRESS": "redact"}},
    )
    calls = collect_calls(running)
    body = {"model": "gpt-4o-mini", "messages": HI, "max_tokens": 5000, "stream": stream}
    with httpx.stream("POST", running.url + "/openai/chat/completions", json=body) as response:
        assert response.status_code == 200
        response.read()
    (call,) = finished(calls)
    assert json.loads(call.upstream_body)["max_tokens"] == 100
    assert json.loads(call.request_body)["max_tokens"] == 5000  # what the agent asked for stays on record
