"""examples/openai_sdk: the openai SDK's chat completions and Responses API, streamed and not, a tool loop."""

from __future__ import annotations

import pytest

from interlock.scripted import Script, ScriptedUpstream, ToolUse
from interlock.testing import Running
from tests.frameworks.conftest import Example, assert_session, request_json

FRAMEWORK = "openai_sdk"
pytestmark = [pytest.mark.frameworks, pytest.mark.slow]


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_order_agent_runs_its_tool_loop_through_interlock(
    example: Example, interlock: Running, upstream: ScriptedUpstream, api: str, stream: bool
) -> None:
    upstream.script(
        Script(tool_calls=[ToolUse("lookup_order", {"order_id": "42"}, id="call_42")]),
        Script(text="Order 42 shipped on 2026-11-20 (DHL, tracking DH123)."),
    )
    session = f"orders-{api}-{stream}"
    args = ["Where is order 42?", "--api", api] + (["--stream"] if stream else [])
    got = example.run(
        *args,
        OPENAI_BASE_URL=interlock.url + "/openai",
        OPENAI_API_KEY="sk-placeholder",
        INTERLOCK_AGENT="order-bot",
        INTERLOCK_SESSION=session,
    )
    assert got == {"answer": "Order 42 shipped on 2026-11-20 (DHL, tracking DH123).", "tools": ["lookup_order"]}
    path = "/chat/completions" if api == "chat" else "/responses"
    assert [r.path for r in upstream.requests] == ["/v1" + path] * 2
    assert all(r.headers["authorization"] == "Bearer sk-real-openai" for r in upstream.requests)
    assert not any(k.startswith("x-interlock") for r in upstream.requests for k in r.headers)
    rows = assert_session(interlock, session, agent="order-bot", calls=2, tools=["lookup_order"], stream=stream)
    assert {r["path"] for r in rows} == {path}
    second = request_json(interlock, rows[1]["id"])
    if api == "chat":
        assert second["messages"][-1] == {
            "role": "tool",
            "tool_call_id": "call_42",
            "content": "shipped on 2026-11-20 by DHL, tracking DH123",
        }
    else:
        assert second["input"][-1]["type"] == "function_call_output"
        assert second["input"][-1]["output"] == "shipped on 2026-11-20 by DHL, tracking DH123"
