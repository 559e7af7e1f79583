"""examples/litellm: the litellm SDK as a client, a tool loop, streamed and not."""

from __future__ import annotations

import pytest

from interlock.scripted import Script, ScriptedUpstream, ToolUse
from interlock.testing import Running
from tests.frameworks.conftest import Example, assert_session, request_json

FRAMEWORK = "litellm"
pytestmark = [pytest.mark.frameworks, pytest.mark.slow]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_litellm_tool_loop_through_interlock(
    example: Example, interlock: Running, upstream: ScriptedUpstream, stream: bool
) -> None:
    upstream.script(
        Script(tool_calls=[ToolUse("lookup_order", {"order_id": "42"}, id="call_42")]),
        Script(text="Order 42 shipped on 2026-11-20."),
    )
    session = f"litellm-{stream}"
    got = example.run(
        "Where is order 42?",
        *(["--stream"] if stream else []),
        OPENAI_BASE_URL=interlock.url + "/openai",
        OPENAI_API_KEY="sk-placeholder",
        INTERLOCK_AGENT="litellm-orders",
        INTERLOCK_SESSION=session,
    )
    assert got == {"answer": "Order 42 shipped on 2026-11-20.", "tools": ["lookup_order"]}
    assert [r.path for r in upstream.requests] == ["/v1/chat/completions"] * 2
    rows = assert_session(interlock, session, agent="litellm-orders", calls=2, tools=["lookup_order"], stream=stream)
    second = request_json(interlock, rows[1]["id"])
    assert second["messages"][-1]["role"] == "tool"
    assert second["messages"][-1]["content"] == "shipped on 2026-11-20 by DHL, tracking DH123"
