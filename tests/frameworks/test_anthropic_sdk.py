"""examples/anthropic_sdk: messages with tool use, streamed and not; the agent named by a virtual key
that the SDK sends as `Authorization: Bearer`."""

from __future__ import annotations

import pytest

from interlock.scripted import Script, ScriptedUpstream, ToolUse
from interlock.testing import Running
from tests.frameworks.conftest import Example, assert_session, request_json

FRAMEWORK = "anthropic_sdk"
pytestmark = [pytest.mark.frameworks, pytest.mark.slow]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_support_agent_uses_its_tool_through_interlock(
    example: Example, make_interlock: object, upstream: ScriptedUpstream, stream: bool
) -> None:
    running: Running = make_interlock(virtual_keys={"vk-support": {"agent": "support-bot"}})  # type: ignore[operator]
    upstream.script(
        Script(tool_calls=[ToolUse("lookup_order", {"order_id": "42"}, id="42")]),
        Script(text="Order 42 shipped on 2026-11-20."),
    )
    session = f"support-{stream}"
    got = example.run(
        "Where is order 42?",
        *(["--stream"] if stream else []),
        ANTHROPIC_BASE_URL=running.url + "/anthropic",
        ANTHROPIC_AUTH_TOKEN="vk-support",
        INTERLOCK_SESSION=session,
    )
    assert got == {"answer": "Order 42 shipped on 2026-11-20.", "tools": ["lookup_order"]}
    assert [r.path for r in upstream.requests] == ["/v1/messages"] * 2
    for sent in upstream.requests:  # the virtual key stays with interlock; the real key goes as x-api-key
        assert sent.headers["x-api-key"] == "sk-ant-real"
        assert "authorization" not in sent.headers
        assert "anthropic-version" in sent.headers
    rows = assert_session(
        running, session, agent="support-bot", calls=2, tools=["lookup_order"], route="anthropic", stream=stream
    )
    assert {r["model"] for r in rows} == {"claude-sonnet-4-5"}
    second = request_json(running, rows[1]["id"])
    assert second["messages"][-1] == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_42",
                "content": "shipped on 2026-11-20 by DHL, tracking DH123",
            }
        ],
    }
