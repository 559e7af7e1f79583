"""examples/google_adk: a Google ADK LlmAgent on Gemini (google-genai underneath), streamed, with a tool."""

from __future__ import annotations

from typing import Any

import pytest

from interlock.scripted import Script, ScriptedUpstream, ToolUse
from tests.frameworks.conftest import Example, assert_session, request_json

FRAMEWORK = "google_adk"
pytestmark = [pytest.mark.frameworks, pytest.mark.slow]


def test_adk_agent_calls_its_tool_through_interlock(
    example: Example, make_interlock: Any, upstream: ScriptedUpstream
) -> None:
    running = make_interlock(
        routes={"gemini": {"protocol": "gemini", "upstream": upstream.url, "api_key": "google-real-key"}}
    )
    upstream.script(
        Script(status=429, retry_after="0"),  # interlock retries it; ADK never sees it
        Script(tool_calls=[ToolUse("lookup_order", {"order_id": "42"})]),
        Script(text="Order 42 shipped on 2026-11-20."),
    )
    got = example.run(
        "Where is order 42?",
        GOOGLE_GEMINI_BASE_URL=running.url + "/gemini",
        GOOGLE_API_KEY="placeholder",
        INTERLOCK_AGENT="adk-orders",
        INTERLOCK_SESSION="adk-42",
    )
    assert got == {"answer": "Order 42 shipped on 2026-11-20.", "tools": ["lookup_order"]}
    assert all(r.path.endswith(":streamGenerateContent") and r.query == "alt=sse" for r in upstream.requests)
    assert all(r.headers["x-goog-api-key"] == "google-real-key" for r in upstream.requests)
    rows = assert_session(
        running, "adk-42", agent="adk-orders", calls=2, tools=["lookup_order"], route="gemini", stream=True
    )
    assert [r["attempt_count"] for r in rows] == [2, 1]
    first, second = (request_json(running, r["id"]) for r in rows)
    declared = [d["name"] for tool in first["tools"] for d in tool["functionDeclarations"]]
    assert declared == ["lookup_order"]
    result = second["contents"][-1]["parts"][0]["functionResponse"]
    assert result["name"] == "lookup_order"
    assert result["response"] == {"result": "shipped on 2026-11-20 by DHL, tracking DH123"}
