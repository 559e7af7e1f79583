"""Divergence reports name differences the way a person reads the request."""

from __future__ import annotations

import json
from typing import Any

from replay_helpers import recorded_call

from interlock.replay.diff import Divergence, diverge
from interlock.replay.match import Matcher, Request

TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def miss(
    recorded: list[Any],
    body: dict[str, Any],
    *,
    route: str = "openai",
    protocol: str = "openai",
    path: str = "/chat/completions",
) -> Divergence:
    matcher = Matcher(recorded)
    request = Request(route, protocol, "POST", path, "", json.dumps(body).encode())
    key, data = matcher.key_of(request)
    assert matcher.match(request, key, data) is None
    return diverge(1, request, key, data, matcher)


def lines(divergence: Divergence) -> list[str]:
    return [d.line() for d in divergence.differences]


def conversation(*extra: dict[str, Any], temperature: float = 0.2, tools: list[Any] | None = None) -> dict[str, Any]:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        *extra,
    ]
    return {
        "model": "gpt-4o",
        "messages": messages,
        "temperature": temperature,
        "tools": tools if tools is not None else [TOOL],
    }


def test_parameters_model_and_tool_results_are_named() -> None:
    recorded = [recorded_call(conversation())]
    body = conversation(temperature=0.9)
    body["model"] = "gpt-4o-mini"
    body["messages"][3]["content"] = "rainy"
    assert lines(miss(recorded, body)) == [
        "messages[3] (tool result for call_1) [messages[3].content]: recorded 'sunny' → now 'rainy'",
        "model: recorded 'gpt-4o' → now 'gpt-4o-mini'",
        "parameter temperature: recorded 0.2 → now 0.9",
    ]


def test_tool_call_arguments_and_offered_tools() -> None:
    recorded = [recorded_call(conversation())]
    body = conversation(tools=[TOOL, {"type": "function", "function": {"name": "search", "parameters": {}}}])
    body["messages"][2]["tool_calls"][0]["function"]["arguments"] = '{"city":"Lyon"}'
    assert lines(miss(recorded, body)) == [
        "tools offered: added search",
        "messages[2] (tool call by assistant) [messages[2].tool_calls[0].function.arguments]: "
        'recorded \'{"city":"Paris"}\' → now \'{"city":"Lyon"}\'',
    ]


def test_an_inserted_message_is_one_difference_not_a_cascade() -> None:
    recorded = [recorded_call(conversation())]
    body = conversation()
    body["messages"].insert(1, {"role": "user", "content": "Hello first."})
    assert lines(miss(recorded, body)) == ['messages[1] (user): added {"role": "user", "content": "Hello first."}']


def test_long_texts_show_where_they_part() -> None:
    base = "You are a support agent for ACME. " * 5
    recorded = [
        recorded_call({"model": "m", "messages": [{"role": "system", "content": base + "Refund at most once."}]})
    ]
    divergence = miss(recorded, {"model": "m", "messages": [{"role": "system", "content": base + "Refund twice."}]})
    [line] = lines(divergence)
    assert line.startswith("messages[0] (system) [messages[0].content]: differs at character 177: recorded '…")
    assert "Refund [at most once]." in line and "Refund [twice]." in line


def test_anthropic_tool_results_in_content_blocks() -> None:
    def request(result: str) -> dict[str, Any]:
        return {
            "model": "claude",
            "max_tokens": 100,
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
                    ],
                },
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": result}]},
            ],
        }

    recorded = [recorded_call(request("sunny"), route="anthropic", protocol="anthropic", path="/v1/messages")]
    divergence = miss(recorded, request("rainy"), route="anthropic", protocol="anthropic", path="/v1/messages")
    assert lines(divergence) == [
        "messages[2] (tool result for toolu_1) [messages[2].content[0].content]: recorded 'sunny' → now 'rainy'"
    ]


def test_the_closest_call_is_found_among_the_upcoming_ones() -> None:
    recorded = [
        recorded_call(conversation()),
        recorded_call({"model": "gpt-4o", "messages": [{"role": "user", "content": "other"}]}),
    ]
    divergence = miss(recorded, {"model": "gpt-4o", "messages": [{"role": "user", "content": "other!"}]})
    assert (divergence.closest_step, divergence.expected_step) == (2, 1)
    assert "the next expected was step 1" in divergence.headline()


def test_repeating_a_request_more_often_than_recorded_says_so() -> None:
    matcher = Matcher([recorded_call(conversation())])
    request = Request("openai", "openai", "POST", "/chat/completions", "", json.dumps(conversation()).encode())
    key, data = matcher.key_of(request)
    assert matcher.match(request, key, data) is not None
    assert matcher.match(request, key, data) is None
    divergence = diverge(2, request, key, data, matcher)
    assert divergence.already_served and divergence.closest_step == 1
    assert "repeats recorded step 1, which was already served" in divergence.summary()


def test_a_different_endpoint_is_named() -> None:
    recorded = [recorded_call({"model": "m", "input": "hi"}, path="/responses")]
    divergence = miss(recorded, {"model": "m", "input": "hi"}, path="/chat/completions")
    assert lines(divergence)[0] == "endpoint: recorded POST /responses → now POST /chat/completions"
