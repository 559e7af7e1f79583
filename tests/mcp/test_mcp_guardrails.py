"""PII guardrails on MCP tool calls: arguments redacted before the tool sees them and restored in the
result, results scanned, blocked values refused with a JSON-RPC error; JSON and SSE replies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from interlock.testing import Running
from tests.mcp.servers import Collector, ThreadServer, mcp2_client, run_mcp1_client

GUARDRAILS = {
    "request": {"EMAIL_ADDRESS": "redact", "CREDIT_CARD": "block"},
    "response": {"EMAIL_ADDRESS": "redact"},
    "secrets": False,
}


@pytest.fixture
def running(mcp_interlock: Any, mcp2_server: ThreadServer) -> Running:
    return mcp_interlock({"tools": mcp2_server.url}, guardrails=GUARDRAILS)  # type: ignore[no-any-return]


@pytest.mark.parametrize("mode", ["legacy", "auto"])  # SSE replies, JSON replies
async def test_an_email_in_the_arguments_is_redacted_for_the_tool_and_restored_in_its_result(
    running: Running, collector: Collector, mode: str
) -> None:
    text = "please write to bob@acme-corp.com today"
    async with mcp2_client(running.url + "/tools/mcp", mode=mode) as client:
        result = await client.call_tool("echo", {"text": text})
    assert result.content[0].text == text  # type: ignore[union-attr]
    call = collector.tool_call("echo")
    # The tool saw (and echoed) a placeholder, never the address.
    assert call.upstream_body is not None and b"bob@acme-corp.com" not in call.upstream_body
    assert call.meta["mcp"]["arguments"] == {"text": "please write to <EMAIL_ADDRESS_1> today"}
    assert call.meta["mcp"]["result"]["content"][0]["text"] == "please write to <EMAIL_ADDRESS_1> today"
    upstream_reply = b"".join(c.data for c in call.chunks) if call.stream else call.response_body
    assert upstream_reply is not None and b"<EMAIL_ADDRESS_1>" in upstream_reply
    assert call.stream is (mode == "legacy")
    assert [(f.entity, f.where, f.action) for f in call.findings] == [
        ("EMAIL_ADDRESS", "request.params.arguments.text", "redact")
    ]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_an_email_in_a_tool_result_is_redacted_for_the_agent(
    running: Running, collector: Collector, mode: str
) -> None:
    async with mcp2_client(running.url + "/tools/mcp", mode=mode) as client:
        result = await client.call_tool("lookup", {"name": "Alice"})
    text = result.content[0].text  # type: ignore[union-attr]
    assert "alice@example.com" not in text and text.startswith("Alice can be reached at <EMAIL_ADDRESS")
    assert "alice@example.com" not in str(result.structured_content)
    call = collector.tool_call("lookup")
    assert {(f.entity, f.action) for f in call.findings} == {("EMAIL_ADDRESS", "redact")}
    assert any(f.where.startswith("response.") for f in call.findings)
    assert "alice@example.com" not in str(call.meta)  # meta copies the stored, redacted result


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_card_number_in_the_arguments_blocks_the_call_with_a_json_rpc_error(
    running: Running, collector: Collector, mode: str
) -> None:
    async with mcp2_client(running.url + "/tools/mcp", mode=mode) as client:
        with pytest.raises(MCPError) as raised:
            await client.call_tool("echo", {"text": "card 4111 1111 1111 1111"})
        assert (await client.call_tool("add", {"a": 1, "b": 1})).structured_content == {"result": 2}
    assert raised.value.error.data == {"code": "pii_blocked"}
    assert "CREDIT_CARD" in raised.value.error.message and "4111" not in raised.value.error.message
    call = collector.tool_call("echo")
    assert (call.outcome, call.error_code, call.attempts) == ("blocked", "pii_blocked", [])
    assert "4111" not in str(call.meta) and b"4111" not in call.request_body  # masked at rest


def test_redaction_and_restoration_with_the_1x_sdk(
    mcp_interlock: Any, mcp1_server: str, mcp1_python: Path, collector: Collector
) -> None:
    running: Running = mcp_interlock({"tools": mcp1_server}, guardrails=GUARDRAILS)
    steps = [["call", "echo", {"text": "reach me at carol@acme-corp.com"}]]
    [echoed] = run_mcp1_client(mcp1_python, running.url + "/tools/mcp", steps)["results"]
    assert echoed["ok"]["content"][0]["text"] == "reach me at carol@acme-corp.com"
    call = collector.tool_call("echo")
    assert call.stream and b"carol@acme-corp.com" not in b"".join(c.data for c in call.chunks)
