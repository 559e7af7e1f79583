"""examples/langgraph: a LangGraph ReAct graph on langchain-openai, streamed, with a tool."""

from __future__ import annotations

import pytest

from interlock.scripted import Script, ScriptedUpstream, ToolUse
from interlock.testing import Running
from tests.frameworks.conftest import Example, assert_session, request_json

FRAMEWORK = "langgraph"
pytestmark = [pytest.mark.frameworks, pytest.mark.slow]


def test_react_graph_calls_its_tool_through_interlock(
    example: Example, interlock: Running, upstream: ScriptedUpstream
) -> None:
    upstream.script(
        Script(status=429, retry_after="0"),  # interlock retries it; the agent (max_retries=0) never sees it
        Script(tool_calls=[ToolUse("lookup_order", {"order_id": "42"}, id="call_42")]),
        Script(text="Order 42 shipped on 2026-11-20."),
    )
    got = example.run(
        "Where is order 42?",
        OPENAI_BASE_URL=interlock.url + "/openai",
        OPENAI_API_KEY="sk-placeholder",
        INTERLOCK_AGENT="langgraph-orders",
        INTERLOCK_SESSION="thread-42",
    )
    assert got == {"answer": "Order 42 shipped on 2026-11-20.", "tools": ["lookup_order"]}
    assert [r.path for r in upstream.requests] == ["/v1/chat/completions"] * 3
    rows = assert_session(
        interlock, "thread-42", agent="langgraph-orders", calls=2, tools=["lookup_order"], stream=True
    )
    assert [r["attempt_count"] for r in rows] == [2, 1]
    first, second = (request_json(interlock, r["id"]) for r in rows)
    assert first["stream"] is True and first["stream_options"] == {"include_usage": True}
    assert [t["function"]["name"] for t in first["tools"]] == ["lookup_order"]
    assert second["messages"][-1]["role"] == "tool"
    assert second["messages"][-1]["content"] == "shipped on 2026-11-20 by DHL, tracking DH123"
