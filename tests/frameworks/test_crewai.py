"""examples/crewai: a one-agent crew with a tool, named by a virtual key, offline."""

from __future__ import annotations

import pytest

from interlock.scripted import Script, ScriptedUpstream, ToolUse
from interlock.testing import Running
from tests.frameworks.conftest import Example, assert_session, request_json

FRAMEWORK = "crewai"
pytestmark = [pytest.mark.frameworks, pytest.mark.slow]


def test_crew_calls_its_tool_through_interlock(
    example: Example, make_interlock: object, upstream: ScriptedUpstream
) -> None:
    running: Running = make_interlock(virtual_keys={"vk-crew": {"agent": "crew-order-desk"}})  # type: ignore[operator]
    upstream.script(
        Script(tool_calls=[ToolUse("lookup_order", {"order_id": "42"}, id="call_42")]),
        Script(text="Order 42 shipped on 2026-11-20."),
    )
    got = example.run(
        "Where is order 42?",
        OPENAI_BASE_URL=running.url + "/openai",
        OPENAI_API_KEY="vk-crew",
        INTERLOCK_SESSION="crew-run-1",
    )
    assert got == {"answer": "Order 42 shipped on 2026-11-20.", "tools": ["lookup_order"]}
    assert [r.path for r in upstream.requests] == ["/v1/chat/completions"] * 2
    # The virtual key never reaches the provider: the route's own key replaces it.
    assert {r.headers["authorization"] for r in upstream.requests} == {"Bearer sk-real-openai"}
    rows = assert_session(running, "crew-run-1", agent="crew-order-desk", calls=2, tools=["lookup_order"])
    assert {r["model"] for r in rows} == {"gpt-4o-mini"}
    second = request_json(running, rows[1]["id"])
    assert second["messages"][-1]["role"] == "tool"
    assert "shipped on 2026-11-20 by DHL" in second["messages"][-1]["content"]
