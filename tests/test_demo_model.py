"""`interlock demo`'s model answers like one that uses the tools it is offered, on OpenAI and Anthropic
routes alike, so an agent of your own pointed at the demo gets to call its tools."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from interlock.demo import DEMO_MODEL, demo_config, write_demo_policy
from interlock.scripted import ScriptedUpstream
from interlock.testing import Running, run_interlock, settings_for_test

WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("demo")
    write_demo_policy(tmp / "policies")
    with ScriptedUpstream() as upstream:
        upstream.set_default(DEMO_MODEL)  # as run_demo does once its sessions are recorded
        with run_interlock(settings_for_test(demo_config(upstream.url, tmp / "policies"), tmp)) as running:
            yield running


def test_an_openai_agent_gets_a_tool_call_then_an_answer(demo: Running) -> None:
    client = openai.OpenAI(base_url=demo.url + "/openai", api_key="sk-x", max_retries=0)
    messages: list[Any] = [{"role": "user", "content": "Paris"}]
    tools: Any = [{"type": "function", "function": WEATHER}]
    first = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=tools)
    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = first.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    messages += [first.choices[0].message.model_dump(exclude_none=True)]
    messages += [{"role": "tool", "tool_call_id": call.id, "content": "14 C, light rain"}]
    second = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=tools, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in second if chunk.choices)
    assert "14 C, light rain" in text
    # Without tools it answers in text, as before.
    plain = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert plain.choices[0].message.content == "echo: hi"
    client.close()


def test_an_anthropic_agent_gets_a_tool_use_then_an_answer(demo: Running) -> None:
    client = anthropic.Anthropic(base_url=demo.url + "/anthropic", api_key="sk-x", max_retries=0)
    tools: Any = [
        {"name": WEATHER["name"], "description": WEATHER["description"], "input_schema": WEATHER["parameters"]}
    ]
    messages: list[Any] = [{"role": "user", "content": "Lisbon"}]
    with client.messages.stream(model="claude-test", max_tokens=100, messages=messages, tools=tools) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    (use,) = [block for block in first.content if block.type == "tool_use"]
    assert use.name == "get_weather" and use.input == {"city": "Lisbon"}
    messages += [
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
    ]
    second = client.messages.create(model="claude-test", max_tokens=100, messages=messages, tools=tools)
    assert second.stop_reason == "end_turn" and "sunny" in second.content[0].text  # type: ignore[union-attr]
    client.close()


def test_the_responses_api_gets_a_function_call(demo: Running) -> None:
    client = openai.OpenAI(base_url=demo.url + "/openai", api_key="sk-x", max_retries=0)
    tools: Any = [{"type": "function", **WEATHER}]
    response = client.responses.create(model="gpt-4o-mini", input="Rome", tools=tools)
    (call,) = [item for item in response.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Rome"}
    client.close()


def test_the_demo_has_both_protocols(tmp_path: Path) -> None:
    routes = demo_config("http://upstream", tmp_path)["routes"]
    assert routes["openai"]["protocol"] == "openai" and routes["anthropic"]["protocol"] == "anthropic"
