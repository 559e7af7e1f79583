"""Malformed but valid JSON is a 400 in the protocol's own shape, never a crash; bodies interlock
re-serialises stay valid JSON whatever text the agent sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from interlock.scripted import ScriptedUpstream
from interlock.testing import Running
from tests.proxy.routing_support import collect_calls, wait_for

CHAT = "/openai/chat/completions"
RESPONSES = "/openai/responses"
MESSAGES = "/anthropic/v1/messages"


def _chat(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}


def _assistant(**message: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", **message}]}


def _responses(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "input": "hi", **extra}


def _messages(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **extra}


MALFORMED: list[tuple[str, Any]] = [
    (CHAT, _chat(tools=5)),
    (CHAT, _chat(tools={"type": "function"})),
    (CHAT, _chat(tools=[5])),
    (CHAT, _chat(tools=[{"type": "function", "function": 5}])),
    (CHAT, _chat(tools=[{"type": "function", "function": {"name": ["x"]}}])),
    (CHAT, _chat(tool_choice=5)),
    (CHAT, _chat(tool_choice={"type": "function", "function": "rm"})),
    (CHAT, _chat(tool_choice={"type": "function", "function": {"name": ["rm"]}})),
    (CHAT, _assistant(tool_calls=5)),
    (CHAT, _assistant(tool_calls={"id": "1"})),
    (CHAT, _assistant(tool_calls=[5])),
    (CHAT, _assistant(tool_calls=[{"id": "1", "type": "function", "function": "rm"}])),
    (RESPONSES, _responses(tools=5)),
    (RESPONSES, _responses(tools=["rm"])),
    (RESPONSES, _responses(tools=[{"type": "function", "name": {"x": 1}}])),
    (RESPONSES, _responses(tool_choice={"type": "function", "name": ["rm"]})),
    (RESPONSES, _responses(input=5)),
    (MESSAGES, _messages(tools=5)),
    (MESSAGES, _messages(tools="rm")),
    (MESSAGES, _messages(tools=[5])),
    (MESSAGES, _messages(tools=[{"name": ["x"], "input_schema": {"type": "object"}}])),
    (MESSAGES, _messages(tool_choice="auto")),
    (MESSAGES, _messages(tool_choice={"type": "tool", "name": ["rm"]})),
    (CHAT, "[" * 100_000 + "]" * 100_000),  # deeper than the JSON parser's recursion limit
    (MESSAGES, "[" * 100_000 + "]" * 100_000),
]


def _policy(tmp_path: Path, text: str) -> str:
    folder = tmp_path / "policies"
    folder.mkdir(exist_ok=True)
    (folder / "policy.yaml").write_text(text)
    return str(folder)


@pytest.fixture(scope="module")
def module_upstream() -> Any:
    with ScriptedUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def guarded(module_upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One interlock for every malformed body, with a rule that denies a tool: offered-tool names
    reach the policy engine (a name that is not a string once crashed it)."""
    from interlock.testing import run_interlock, settings_for_test
    from tests.conftest import routes_for

    tmp_path = tmp_path_factory.mktemp("bad_input")
    policies = _policy(tmp_path, "rules:\n  - name: no-rm\n    deny: {tools: [rm]}\n")
    settings = settings_for_test(
        {"routes": routes_for(module_upstream), "shutdown_grace": 2, "policies": [policies]}, tmp_path
    )
    with run_interlock(settings) as running:
        yield running


def _post(running: Running, path: str, body: Any) -> httpx.Response:
    content = body if isinstance(body, str) else json.dumps(body)
    return httpx.post(running.url + path, content=content, headers={"content-type": "application/json"})


@pytest.mark.parametrize(("path", "body"), MALFORMED, ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None)
def test_malformed_json_is_a_400_in_the_protocols_shape(
    guarded: Running, module_upstream: ScriptedUpstream, path: str, body: Any
) -> None:
    module_upstream.reset()
    calls = collect_calls(guarded)
    try:
        response = _post(guarded, path, body)
        assert response.status_code == 400, response.text
        data = response.json()
        if path.startswith("/anthropic"):
            assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error"
            error = data["error"]
        else:
            error = data["error"]
            assert error["type"] == "invalid_request_error" and set(error) == {"message", "type", "param", "code"}
        assert error["code"] in ("invalid_request", "invalid_json") and error["message"]
        assert module_upstream.requests == []
        wait_for(lambda: calls)
        assert calls[0].outcome == "bad_request" and calls[0].status == 400
    finally:
        guarded.runtime.pipeline.hooks["done"].pop()


def test_a_tool_named_by_a_string_still_reaches_the_policy(guarded: Running, module_upstream: ScriptedUpstream) -> None:
    """The checks refuse only malformed tools: a well-formed denied tool is still denied."""
    module_upstream.reset()
    tools = [{"name": "rm", "input_schema": {"type": "object"}}, {"name": "ls", "input_schema": {"type": "object"}}]
    response = _post(guarded, MESSAGES, _messages(tools=tools))
    assert response.status_code == 200, response.text
    assert [t["name"] for t in module_upstream.requests[-1].json()["tools"]] == ["ls"]


def test_deeply_nested_tool_input_is_read_without_recursion(
    guarded: Running, module_upstream: ScriptedUpstream
) -> None:
    module_upstream.reset()
    depth = 900  # within the JSON parser's limit, beyond a recursive walk's
    tool_input = json.loads('{"a":' * depth + '"deep"' + "}" * depth)
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "ls", "input": tool_input}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
    ]
    response = _post(guarded, MESSAGES, {"model": "m", "max_tokens": 10, "messages": messages})
    assert response.status_code == 200, response.text
    assert len(module_upstream.requests) == 1


SURROGATE = '{"model":"m","messages":[{"role":"user","content":"\\ud800"}]}'


def test_a_lone_surrogate_survives_a_rewritten_body(
    make_interlock: Any, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    running = make_interlock(policies=[_policy(tmp_path, "rules:\n  - name: clamp\n    set: {max_tokens: 100}\n")])
    response = _post(running, CHAT, SURROGATE)
    assert response.status_code == 200, response.text
    sent = upstream.requests[-1].body
    assert b"\\ud800" in sent  # escaped, as the agent sent it
    data = json.loads(sent)
    assert data["max_tokens"] == 100 and data["messages"][0]["content"] == "\ud800"


def test_a_lone_surrogate_survives_a_model_rewrite(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    models = {"smart": [{"model": "big-model"}]}
    route = {"protocol": "openai", "upstreams": [{"name": "a", "url": upstream.url + "/v1"}], "models": models}
    running = make_interlock(routes={"openai": route})
    response = _post(running, CHAT, SURROGATE.replace('"m"', '"smart"'))
    assert response.status_code == 200, response.text
    data = json.loads(upstream.requests[-1].body)
    assert data["model"] == "big-model" and data["messages"][0]["content"] == "\ud800"
