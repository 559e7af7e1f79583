"""examples/autogen: an AgentChat AssistantAgent with a tool, a model AutoGen does not know (model_info), streamed."""

from __future__ import annotations

import pytest

from interlock.scripted import Script, ScriptedUpstream, ToolUse
from interlock.testing import Running
from tests.frameworks.conftest import Example, assert_session, request_json

FRAMEWORK = "autogen"
pytestmark = [pytest.mark.frameworks, pytest.mark.slow]


def test_assistant_agent_calls_its_tool_through_interlock(
    example: Example, interlock: Running, upstream: ScriptedUpstream
) -> None:
    upstream.script(
        Script(tool_calls=[ToolUse("lookup_order", {"order_id": "42"}, id="call_42")]),
        Script(text="Order 42 shipped on 2026-11-20."),
    )
    got = example.run(
        "Where is order 42?",
        OPENAI_BASE_URL=interlock.url + "/openai",
        OPENAI_API_KEY="sk-placeholder",
        INTERLOCK_AGENT="autogen-orders",
        MODEL="acme-orders-1",
        INTERLOCK_SESSION="autogen-run-1",
    )
    assert got == {"answer": "Order 42 shipped on 2026-11-20.", "tools": ["lookup_order"]}
    assert [r.path for r in upstream.requests] == ["/v1/chat/completions"] * 2
    rows = assert_session(
        interlock, "autogen-run-1", agent="autogen-orders", calls=2, tools=["lookup_order"], stream=True
    )
    assert {r["model"] for r in rows} == {"acme-orders-1"}
    first, second = (request_json(interlock, r["id"]) for r in rows)
    assert first["stream"] is True and first["stream_options"] == {"include_usage": True}
    assert [t["function"]["name"] for t in first["tools"]] == ["lookup_order"]
    assert second["messages"][-1]["role"] == "tool"
    assert second["messages"][-1]["content"] == "shipped on 2026-11-20 by DHL, tracking DH123"
