"""Policy on MCP tools: denied tools vanish from tools/list, denied calls get a JSON-RPC error naming
the rule, and CEL conditions see `tool.name` and `tool.arguments`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from interlock.testing import Running
from tests.mcp.servers import Collector, ThreadServer, mcp2_client, run_mcp1_client

POLICY = """\
version: 1
rules:
  - name: no-deleting
    match: {route: tools}
    deny: {tools: ["delete_*"]}
    message: agents do not delete files
  - name: email-stays-inside
    match: {tool: send_email}
    when: '!tool.arguments.to.endsWith("@corp.example")'
    deny: {}
    message: email goes to company addresses only
  - name: support-should-not-add
    match: {agent: "support-*"}
    deny: {tools: [add]}
    mode: monitor
"""


@pytest.fixture
def policy_interlock(mcp_interlock: Any, tmp_path: Path) -> Any:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)

    def start(upstream: str) -> Running:
        return mcp_interlock({"tools": upstream}, policies=[str(path)])  # type: ignore[no-any-return]

    return start


@pytest.mark.parametrize("mode", ["legacy", "auto"])  # SSE replies, JSON replies
async def test_tools_list_leaves_out_the_tools_policy_denies(
    policy_interlock: Any, mcp2_server: ThreadServer, collector: Collector, mode: str
) -> None:
    running = policy_interlock(mcp2_server.url)
    async with mcp2_client(running.url + "/tools/mcp", mode=mode) as client:
        listed = {tool.name for tool in (await client.list_tools()).tools}
    assert "delete_file" not in listed
    # Denied only for some arguments: listed, and judged when called.
    assert {"add", "lookup", "send_email"} <= listed
    call = collector.method("tools/list")
    assert call.meta["mcp"]["removed_tools"] == ["delete_file"]
    if mode == "legacy":  # the SSE event carrying the list was rewritten on its way
        assert call.stream and call.agent_chunks is not None
    else:
        assert not call.stream and call.agent_response_body is not None
    assert "delete_file" in call.meta["mcp"]["tools"]  # what the server listed stays on record
    modify = [d for d in call.decisions if d.action == "modify"]
    assert [(d.rule, d.detail) for d in modify] == [("no-deleting", {"removed": ["delete_file"]})]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_denied_tool_call_is_a_json_rpc_error_naming_the_rule(
    policy_interlock: Any, mcp2_server: ThreadServer, collector: Collector, mode: str
) -> None:
    running = policy_interlock(mcp2_server.url)
    async with mcp2_client(running.url + "/tools/mcp", mode=mode) as client:
        assert (await client.call_tool("add", {"a": 2, "b": 2})).structured_content == {"result": 4}
        with pytest.raises(MCPError) as raised:
            await client.call_tool("delete_file", {"path": "/etc/passwd"})
        assert (await client.call_tool("add", {"a": 1, "b": 2})).structured_content == {"result": 3}
    error = raised.value.error
    assert "no-deleting" in error.message and "agents do not delete files" in error.message
    assert error.data == {"code": "policy_denied"}
    denied = collector.tool_call("delete_file")
    assert (denied.outcome, denied.error_code, denied.attempts) == ("denied", "policy_denied", [])
    assert denied.meta["mcp"]["arguments"] == {"path": "/etc/passwd"}
    assert denied.meta["policy"]["rule"] == "no-deleting"


async def test_cel_conditions_see_the_tool_name_and_arguments(
    policy_interlock: Any, mcp2_server: ThreadServer, collector: Collector
) -> None:
    running = policy_interlock(mcp2_server.url)
    async with mcp2_client(running.url + "/tools/mcp") as client:
        sent = await client.call_tool("send_email", {"to": "bob@corp.example", "body": "hi"})
        with pytest.raises(MCPError) as denied:
            await client.call_tool("send_email", {"to": "mallory@elsewhere.example", "body": "the plans"})
    assert denied.value.error.data == {"code": "policy_denied"}
    assert re.search("email-stays-inside.*company addresses only", denied.value.error.message)
    assert sent.content[0].text == "sent to bob@corp.example"  # type: ignore[union-attr]
    calls = collector.matching(lambda c: c.meta["mcp"].get("tool") == "send_email", 2)
    assert [c.outcome for c in calls] == ["ok", "denied"]


async def test_a_monitor_rule_only_records_what_it_would_remove(
    policy_interlock: Any, mcp2_server: ThreadServer, collector: Collector
) -> None:
    running = policy_interlock(mcp2_server.url)
    async with mcp2_client(running.url + "/tools/mcp", headers={"X-Interlock-Agent": "support-7"}) as client:
        listed = {tool.name for tool in (await client.list_tools()).tools}
    assert "add" in listed and "delete_file" not in listed
    call = collector.method("tools/list")
    monitor = [(d.rule, d.reason) for d in call.decisions if d.action == "monitor"]
    assert ("support-should-not-add", "would remove listed tools: add") in monitor


def test_policy_with_the_1x_sdk(policy_interlock: Any, mcp1_server: str, mcp1_python: Path) -> None:
    running = policy_interlock(mcp1_server)
    steps = [["list"], ["call", "delete_file", {"path": "x"}], ["call", "add", {"a": 1, "b": 2}]]
    listed, denied, added = run_mcp1_client(mcp1_python, running.url + "/tools/mcp", steps)["results"]
    assert "delete_file" not in listed["ok"] and "add" in listed["ok"]
    assert "no-deleting" in denied["error"]["message"]
    assert added["ok"]["structuredContent"] == {"result": 3}


async def test_a_tool_call_rate_limit_is_a_json_rpc_error(
    mcp_interlock: Any, mcp2_server: ThreadServer, tmp_path: Path, collector: Collector
) -> None:
    policy = tmp_path / "limits.yaml"
    policy.write_text(
        "version: 1\nrules:\n  - name: one-tool-call-a-minute\n    match: {tool: '*'}\n"
        "    limits: {requests_per_minute: 1}\n"
    )
    running: Running = mcp_interlock({"tools": mcp2_server.url}, policies=[str(policy)])
    async with mcp2_client(running.url + "/tools/mcp", mode="legacy") as client:
        await client.list_tools()  # not a tool call: not counted
        assert (await client.call_tool("add", {"a": 1, "b": 1})).structured_content == {"result": 2}
        with pytest.raises(MCPError) as raised:
            await client.call_tool("add", {"a": 2, "b": 2})
    assert raised.value.error.data == {"code": "rate_limited"}
    assert "one-tool-call-a-minute" in raised.value.error.message
    [_, limited] = collector.matching(lambda c: c.meta["mcp"].get("tool") == "add", 2)
    assert limited.status == 200 and ("retry-after" in dict(limited.response_headers))
