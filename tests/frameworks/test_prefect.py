"""examples/prefect: a flow whose tasks call the model and a tool; Prefect's temporary server, offline."""

from __future__ import annotations

import pytest

from interlock.scripted import Script, ScriptedUpstream, ToolUse
from interlock.testing import Running
from tests.frameworks.conftest import Example, assert_session, request_json

FRAMEWORK = "prefect"
pytestmark = [pytest.mark.frameworks, pytest.mark.slow]


def test_flow_tasks_call_the_model_through_interlock(
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
        PREFECT_HOME=str(example.home / ".prefect"),
        # The temporary server's first start migrates its database: give a busy machine time (default 20 s).
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
    )
    run_id = got.pop("flow_run_id")
    assert got == {"answer": "Order 42 shipped on 2026-11-20.", "tools": ["lookup_order"]}
    # The flow's name is the agent and its run id the session.
    rows = assert_session(interlock, run_id, agent="order-desk", calls=2, tools=["lookup_order"], stream=False)
    second = request_json(interlock, rows[1]["id"])
    assert second["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_42",
        "content": "shipped on 2026-11-20 by DHL, tracking DH123",
    }
