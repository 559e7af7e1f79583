"""examples/pydantic_ai: streamed structured output over the Responses API, with a tool, straight to
the scripted provider and through interlock."""

from __future__ import annotations

import pytest

from interlock.scripted import Script, ScriptedUpstream, ToolUse
from interlock.testing import Running
from tests.frameworks.conftest import Example, assert_session, request_json

FRAMEWORK = "pydantic_ai"
pytestmark = [pytest.mark.frameworks, pytest.mark.slow]

ANSWER = {"order_id": "42", "status": "shipped on 2026-11-20", "carrier": "DHL"}


def script(upstream: ScriptedUpstream, native: bool) -> None:
    lookup = Script(tool_calls=[ToolUse("lookup_order", {"order_id": "42"}, id="call_42")], chunk_size=3)
    if native:  # the answer as JSON text under the request's text.format
        final = Script(text='{"order_id": "42", "status": "shipped on 2026-11-20", "carrier": "DHL"}', chunk_size=5)
    else:  # the answer as pydantic-ai's output tool
        final = Script(tool_calls=[ToolUse("final_result", ANSWER, id="call_final")])
    upstream.script(lookup, final)


@pytest.mark.parametrize("native", [False, True], ids=["tool-output", "native-output"])
def test_streamed_structured_output_straight_to_the_provider(
    example: Example, upstream: ScriptedUpstream, native: bool
) -> None:
    script(upstream, native)
    got = example.run(
        "Where is order 42?",
        *(["--native"] if native else []),
        OPENAI_BASE_URL=upstream.url + "/v1",
        OPENAI_API_KEY="sk-placeholder",
    )
    assert got["answer"] == ANSWER and got["tools"] == ["lookup_order"]
    assert got["partials"] >= 1
    assert [r.path for r in upstream.requests] == ["/v1/responses"] * 2
    assert all(r.json()["stream"] is True for r in upstream.requests)


@pytest.mark.parametrize("native", [False, True], ids=["tool-output", "native-output"])
def test_streamed_structured_output_through_interlock(
    example: Example, interlock: Running, upstream: ScriptedUpstream, native: bool
) -> None:
    script(upstream, native)
    session = f"pydantic-ai-{native}"
    got = example.run(
        "Where is order 42?",
        *(["--native"] if native else []),
        OPENAI_BASE_URL=interlock.url + "/openai",
        OPENAI_API_KEY="sk-placeholder",
        INTERLOCK_AGENT="pydantic-orders",
        INTERLOCK_SESSION=session,
    )
    assert got["answer"] == ANSWER and got["tools"] == ["lookup_order"]
    tools = ["lookup_order"] if native else ["lookup_order", "final_result"]
    rows = assert_session(interlock, session, agent="pydantic-orders", calls=2, tools=tools, stream=True)
    assert {r["path"] for r in rows} == {"/responses"}
    first, second = (request_json(interlock, r["id"]) for r in rows)
    if native:
        assert first["text"]["format"]["type"] == "json_schema"
    else:
        assert [t["name"] for t in first["tools"]] == ["lookup_order", "final_result"]
    assert second["input"][-1]["type"] == "function_call_output"
    assert second["input"][-1]["output"] == "shipped on 2026-11-20 by DHL, tracking DH123"
