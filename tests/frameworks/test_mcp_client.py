"""examples/mcp_client: tools from an MCP server and the model, both through interlock, one session."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from interlock.scripted import Script, ScriptedUpstream, ToolUse
from interlock.testing import Running, free_port
from tests.frameworks.conftest import EXAMPLES, Example, cli_traces, recorded, request_json, tool_calls, ui_shows
from tests.mcp.servers import port_open, wait_for

FRAMEWORK = "mcp_client"
pytestmark = [pytest.mark.frameworks, pytest.mark.slow]


@pytest.fixture
def order_server(tmp_path: Path) -> Iterator[str]:
    """examples/mcp_client/server.py on a free port; yields its base URL."""
    port = free_port()
    with open(tmp_path / "server.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "mcp_client" / "server.py"), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: port_open(port) or process.poll() is not None, 30, "the MCP server to listen")
        assert process.poll() is None, (tmp_path / "server.log").read_text()
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def test_agent_runs_mcp_tools_and_the_model_in_one_session(
    example: Example, make_interlock: Any, upstream: ScriptedUpstream, order_server: str
) -> None:
    running: Running = make_interlock(
        routes={
            "openai": {"protocol": "openai", "upstream": upstream.url + "/v1", "api_key": "sk-real-openai"},
            "tools": {"protocol": "mcp", "upstream": order_server},
        }
    )
    upstream.script(
        Script(tool_calls=[ToolUse("lookup_order", {"order_id": "42"}, id="call_42")]),
        Script(text="Order 42 shipped on 2026-11-20."),
    )
    got = example.run(
        "Where is order 42?",
        OPENAI_BASE_URL=running.url + "/openai",
        OPENAI_API_KEY="sk-placeholder",
        MCP_URL=running.url + "/tools/mcp",
        INTERLOCK_AGENT="mcp-orders",
        INTERLOCK_SESSION="mcp-session-1",
    )
    assert got == {
        "answer": "Order 42 shipped on 2026-11-20.",
        "tools": ["lookup_order"],
        "results": ["shipped on 2026-11-20 by DHL, tracking DH123"],
    }
    # The model saw the MCP server's tool, offered under its own name and schema.
    offered = upstream.requests[0].json()["tools"]
    assert [t["function"]["name"] for t in offered] == ["lookup_order"]
    assert offered[0]["function"]["parameters"]["required"] == ["order_id"]
    # discover, tools/list, two model calls, tools/call: one session, one agent.
    rows = recorded(running, "mcp-session-1", 5)
    assert len(rows) == 5, [(r["route"], r["path"]) for r in rows]
    assert {r["agent"] for r in rows} == {"mcp-orders"}
    assert all(r["outcome"] == "ok" and r["status"] == 200 for r in rows), rows
    model_rows = [r for r in rows if r["route"] == "openai"]
    tool_rows = [r for r in rows if r["route"] == "tools"]
    assert len(model_rows) == 2
    assert [(r["input_tokens"], r["output_tokens"]) for r in model_rows] == [(11, 7), (11, 7)]
    assert [name for r in model_rows for name in tool_calls(running, r["id"])] == ["lookup_order"]
    methods = [request_json(running, r["id"]).get("method") for r in tool_rows]
    assert methods == ["server/discover", "tools/list", "tools/call"]
    call = request_json(running, tool_rows[-1]["id"])
    assert call["params"]["name"] == "lookup_order" and call["params"]["arguments"] == {"order_id": "42"}
    # The tools/call came after the model asked for it, and before the model's answer.
    order = [(r["route"], r["id"]) for r in rows]
    assert order.index(("tools", tool_rows[-1]["id"])) == order.index(("openai", model_rows[1]["id"])) - 1
    assert sorted(r["id"] for r in cli_traces(running, "mcp-session-1")) == sorted(r["id"] for r in rows)
    ui_shows(running, "mcp-session-1", "mcp-orders")
