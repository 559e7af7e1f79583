"""examples/openai_agents: the OpenAI Agents SDK's streamed runner over the Responses API, with a
function tool, plain and structured output, straight to the scripted provider and through interlock."""

from __future__ import annotations

import json

import pytest

from interlock.scripted import Script, ScriptedUpstream, ToolUse
from interlock.testing import Running
from tests.frameworks.conftest import Example, assert_session, request_json

FRAMEWORK = "openai_agents"
pytestmark = [pytest.mark.frameworks, pytest.mark.slow]

TEXT = "Order 42 shipped on 2026-11-20 (DHL, tracking DH123)."
STRUCTURED = {"order_id": "42", "status": "shipped on 2026-11-20"}


def script(upstream: ScriptedUpstream, structured: bool) -> None:
    upstream.script(
        Script(tool_calls=[ToolUse("lookup_order", {"order_id": "42"}, id="call_42")]),
        Script(text=json.dumps(STRUCTURED) if structured else TEXT, thinking="The tool says it shipped."),
    )


@pytest.mark.parametrize("structured", [False, True], ids=["text", "structured"])
def test_the_runner_streams_its_tool_loop_straight_to_the_provider(
    example: Example, upstream: ScriptedUpstream, structured: bool
) -> None:
    script(upstream, structured)
    got = example.run(
        "Where is order 42?",
        *(["--structured"] if structured else []),
        OPENAI_BASE_URL=upstream.url + "/v1",
        OPENAI_API_KEY="sk-placeholder",
    )
    assert got == {"answer": STRUCTURED if structured else TEXT, "tools": ["lookup_order"]}
    assert [r.path for r in upstream.requests] == ["/v1/responses"] * 2


@pytest.mark.parametrize("structured", [False, True], ids=["text", "structured"])
def test_the_runner_streams_its_tool_loop_through_interlock(
    example: Example, interlock: Running, upstream: ScriptedUpstream, structured: bool
) -> None:
    script(upstream, structured)
    session = f"agents-{structured}"
    got = example.run(
        "Where is order 42?",
        *(["--structured"] if structured else []),
        OPENAI_BASE_URL=interlock.url + "/openai",
        OPENAI_API_KEY="sk-placeholder",
        INTERLOCK_AGENT="agents-orders",
        INTERLOCK_SESSION=session,
    )
    assert got == {"answer": STRUCTURED if structured else TEXT, "tools": ["lookup_order"]}
    rows = assert_session(interlock, session, agent="agents-orders", calls=2, tools=["lookup_order"], stream=True)
    assert {r["path"] for r in rows} == {"/responses"}
    first, second = (request_json(interlock, r["id"]) for r in rows)
    assert [t["name"] for t in first["tools"]] == ["lookup_order"]
    if structured:
        assert first["text"]["format"]["type"] == "json_schema"
    assert second["input"][-1] == {
        "call_id": "call_42",
        "output": "shipped on 2026-11-20 by DHL, tracking DH123",
        "type": "function_call_output",
    }
