"""MCP through interlock with the `mcp` SDK 1.x (FastMCP, streamablehttp_client), in its own venv,
and mixed with 2.x on the other side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from interlock.testing import Running
from tests.mcp.servers import Collector, ThreadServer, mcp2_client, run_mcp1_client


def test_1x_client_and_server_through_interlock(
    mcp_interlock: Any, mcp1_server: str, mcp1_python: Path, collector: Collector
) -> None:
    running: Running = mcp_interlock({"tools": mcp1_server})
    steps = [["list"], ["call", "add", {"a": 20, "b": 22}], ["call", "count", {"n": 2}], ["ping"]]
    report = run_mcp1_client(mcp1_python, running.url + "/tools/mcp", steps, {"X-Interlock-Agent": "agent-1x"})
    listed, added, counted, pong = report["results"]
    assert {"add", "lookup", "echo", "delete_file", "count"} <= set(listed["ok"])
    assert added["ok"]["structuredContent"] == {"result": 42}
    assert counted["ok"]["content"][0]["text"] == "counted to 2" and counted["progress"] == [1, 2]
    assert pong == {"ok": "pong"}
    session_id = report["session_id"]
    assert session_id
    calls = collector.wait(6)
    posts = [c for c in calls if c.method == "POST"]
    assert [c.meta["mcp"].get("method") for c in posts][:3] == ["initialize", "notifications/initialized", "tools/list"]
    assert {c.session for c in calls} == {session_id} and {c.agent for c in calls} == {"agent-1x"}
    count = collector.tool_call("count")
    assert count.stream and count.meta["mcp"]["server_messages"] == ["notifications/progress"] * 2
    assert count.meta["mcp"]["result"]["content"][0]["text"] == "counted to 2"
    assert posts[0].meta["mcp"]["protocol_version"] == report["protocol_version"]


async def test_2x_client_falls_back_to_the_handshake_with_a_1x_server(
    mcp_interlock: Any, mcp1_server: str, collector: Collector
) -> None:
    running: Running = mcp_interlock({"tools": mcp1_server})
    async with mcp2_client(running.url + "/tools/mcp") as client:
        result = await client.call_tool("add", {"a": 1, "b": 2})
    assert result.structured_content == {"result": 3}
    calls = collector.wait(3)
    probe = calls[0]
    # The 1.x server does not know server/discover: its answer is relayed as it is, never a 500.
    assert probe.meta["mcp"]["method"] == "server/discover"
    assert probe.status is not None and 400 <= probe.status < 500
    assert (probe.outcome, probe.error_code) == ("unsupported", None)  # a probe declined, not a failure
    assert [c.meta["mcp"].get("method") for c in calls[1:3]] == ["initialize", "notifications/initialized"]


def test_1x_client_with_a_2x_server(
    mcp_interlock: Any, mcp2_server: ThreadServer, mcp1_python: Path, collector: Collector
) -> None:
    running: Running = mcp_interlock({"tools": mcp2_server.url})
    report = run_mcp1_client(mcp1_python, running.url + "/tools/mcp", [["call", "lookup", {"name": "Bo"}]])
    assert report["results"][0]["ok"]["content"][0]["text"] == "Bo can be reached at alice@example.com"
    call = collector.tool_call("lookup")
    assert call.session == report["session_id"] and call.meta["mcp"]["arguments"] == {"name": "Bo"}


def test_a_stream_cut_short_fails_one_call_not_the_1x_session(
    mcp_interlock: Any, mcp2_server: ThreadServer, mcp1_python: Path, collector: Collector
) -> None:
    # The 1.x client tears its whole session down on an HTTP error status or a request left
    # unanswered; interlock answers the request id with a JSON-RPC error inside the stream instead.
    running: Running = mcp_interlock({"tools": mcp2_server.url})
    steps = [
        ["call", "hang_up", {}],
        ["call", "reset", {}],
        ["call", "empty_reply", {}],
        ["call", "add", {"a": 1, "b": 1}],
    ]
    report = run_mcp1_client(mcp1_python, running.url + "/tools/mcp", steps)
    hung_up, reset, empty, added = report["results"]
    assert "no JSON-RPC response" in empty["error"]["message"]
    assert "without answering request id" in hung_up["error"]["message"]
    assert "stream broke" in reset["error"]["message"]
    assert added["ok"]["structuredContent"] == {"result": 2}
    assert collector.tool_call("hang_up").error_code == "stream_closed_early"
    assert collector.tool_call("reset").error_code == "stream_broken"
