"""Loop detection on MCP tool calls, with the real `mcp` SDK 2.x on both sides in both protocol
revisions: the same tools/call repeated is refused at the Nth, and the same tool error N times in a
row refuses that tool's later calls in the session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from tests.mcp.servers import Collector, ThreadServer, mcp2_client

POLICY = """\
rules:
  - name: tool-loops
    loop: {tool_calls: 3, tool_errors: 2, requests: null}
"""


def _loop_decisions(call: Any) -> list[tuple[str, str]]:
    return [(d.action, d.detail.get("kind")) for d in call.decisions if d.stage == "loop"]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_mcp_tool_call_and_tool_error_loops(
    mcp_interlock: Any, mcp2_server: ThreadServer, collector: Collector, tmp_path: Path, mode: str
) -> None:
    (tmp_path / "loops.yaml").write_text(POLICY)
    running = mcp_interlock({"tools": mcp2_server.url}, policies=[str(tmp_path / "loops.yaml")])
    headers = {"X-Interlock-Session": f"mcp-loop-{mode}"}
    async with mcp2_client(running.url + "/tools/mcp", mode=mode, headers=headers) as client:
        # The same call (same name, same arguments in another key order) twice, then refused.
        assert (await client.call_tool("add", {"a": 1, "b": 2})).structured_content == {"result": 3}
        assert (await client.call_tool("add", {"b": 2, "a": 1})).structured_content == {"result": 3}
        with pytest.raises(MCPError) as repeated:
            await client.call_tool("add", {"a": 1, "b": 2})
        assert repeated.value.error.data == {"code": "loop_detected"}
        assert (await client.call_tool("add", {"a": 5, "b": 5})).structured_content == {"result": 10}
        # The same error twice in a row: seen on the second reply, which the agent already has;
        # the tool's next call is refused.
        assert (await client.call_tool("fail", {})).is_error
        assert (await client.call_tool("fail", {})).is_error
        with pytest.raises(MCPError) as failing:
            await client.call_tool("fail", {})
        assert failing.value.error.data == {"code": "loop_detected"}
    adds = collector.matching(lambda c: c.meta.get("mcp", {}).get("tool") == "add", 4)
    assert [_loop_decisions(c) for c in adds] == [[], [], [("deny", "tool_calls")], []]
    assert adds[2].outcome == "denied" and adds[2].error_code == "loop_detected"
    fails = collector.matching(lambda c: c.meta.get("mcp", {}).get("tool") == "fail", 3)
    assert [_loop_decisions(c) for c in fails] == [[], [("deny", "tool_errors")], [("deny", "tool_errors")]]
    assert fails[1].outcome == "ok" and fails[2].outcome == "denied"
