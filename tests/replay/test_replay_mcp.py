"""MCP sessions recorded through interlock replay with the MCP server stopped (the `mcp` SDK 2.x,
both protocol revisions: the 2025-11-25 session handshake with SSE replies, and stateless 2026-07-28)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from mcp.shared.exceptions import MCPError

from interlock.replay import open_bundle
from interlock.testing import replay_server, run_interlock, settings_for_test
from interlock.tracing.store import Store
from tests.mcp.servers import ThreadServer, build_server, mcp2_client


async def session(url: str, mode: str, name: str = "Alice") -> tuple[list[str], str, int]:
    async with mcp2_client(url, mode=mode) as client:
        listed = await client.list_tools()
        looked_up = await client.call_tool("lookup", {"name": name})
        added = await client.call_tool("add", {"a": 2, "b": 40})
    return (
        sorted(t.name for t in listed.tools),
        looked_up.content[0].text,  # type: ignore[union-attr]
        added.structured_content["result"],  # type: ignore[index]
    )


def record(tmp_path: Path, mode: str) -> tuple[Path, tuple[list[str], str, int]]:
    store = tmp_path / "interlock.db"
    with ThreadServer(build_server().streamable_http_app()) as server:
        settings = settings_for_test(
            {
                "routes": {"tools": {"protocol": "mcp", "upstream": server.url}},
                "shutdown_grace": 1,
                "store": {"path": str(store)},
            }
        )
        with run_interlock(settings) as running:
            result = running.run(session(running.url + "/tools/mcp", mode))
    bundle = tmp_path / "mcp.db"
    with Store(store) as opened:
        opened.export(bundle)
    return bundle, result


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_an_mcp_session_replays_with_the_server_gone(tmp_path: Path, mode: str) -> None:
    bundle, recorded = await asyncio.to_thread(record, tmp_path, mode)
    assert recorded[1:] == ("Alice can be reached at alice@example.com", 42)
    with replay_server(bundle) as replay:
        replayed = await session(replay.url + "/tools/mcp", mode)
        summary = replay.summary()
    assert replayed == recorded
    assert summary.misses == [], summary.text()
    if mode == "legacy":
        assert any(c.method == "GET" for c in open_bundle(bundle).calls)  # the event stream replayed too


async def test_a_changed_tool_argument_is_a_jsonrpc_error_naming_it(tmp_path: Path) -> None:
    bundle, _ = await asyncio.to_thread(record, tmp_path, "auto")
    with replay_server(bundle) as replay:
        with pytest.raises(BaseExceptionGroup) as raised:  # the SDK's task group wraps the MCPError
            await session(replay.url + "/tools/mcp", "auto", name="Bob")
        [miss] = replay.summary().misses
    errors = raised.value.subgroup(MCPError)
    assert errors is not None
    [error] = (
        errors.exceptions[0].exceptions if isinstance(errors.exceptions[0], BaseExceptionGroup) else errors.exceptions
    )
    assert isinstance(error, MCPError) and error.error.data == {"code": "replay_divergence"}
    assert "argument name of tool lookup" in error.error.message
    assert [d.line() for d in miss.differences] == [
        "argument name of tool lookup [params.arguments.name]: recorded 'Alice' → now 'Bob'"
    ]
