"""The `mcp` SDK 1.x on both sides, run by tests/mcp in `.venv-mcp1` (1.x and 2.x cannot share a venv).

    python mcp1_script.py serve PORT                       FastMCP over Streamable HTTP on 127.0.0.1:PORT
    python mcp1_script.py client URL STEPS_JSON HEADERS    streamablehttp_client + ClientSession

STEPS_JSON is a list of steps: ["list"], ["call", name, arguments], ["ping"]. The client prints one
JSON line: {"session_id": ..., "protocol_version": ..., "results": [{"ok": ...} | {"error": {...}}]}.
"""

import asyncio
import json
import sys
from typing import Any


def serve(port: int) -> None:
    import uvicorn
    from mcp.server.fastmcp import Context, FastMCP

    server = FastMCP("tools-1x", host="127.0.0.1", port=port)

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def lookup(name: str) -> str:
        """A person's contact line."""
        return f"{name} can be reached at alice@example.com"

    @server.tool()
    def echo(text: str) -> str:
        """The text, unchanged."""
        return text

    @server.tool()
    def delete_file(path: str) -> str:
        """Delete a file."""
        return f"deleted {path}"

    @server.tool()
    async def count(n: int, ctx: Context) -> str:  # type: ignore[type-arg]  # noqa: F821
        """Count to n, reporting progress."""
        for i in range(n):
            await ctx.report_progress(i + 1, n)
        return f"counted to {n}"

    uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=port, log_level="error")


async def client(url: str, steps: list[Any], headers: dict[str, str]) -> dict[str, Any]:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client
    from mcp.shared.exceptions import McpError

    results: list[dict[str, Any]] = []
    async with streamablehttp_client(url, headers=headers, timeout=20) as (read, write, get_session_id):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            for step in steps:
                try:
                    if step[0] == "list":
                        listed = await session.list_tools()
                        results.append({"ok": [tool.name for tool in listed.tools]})
                    elif step[0] == "call":
                        progress: list[float] = []
                        result = await session.call_tool(step[1], step[2], progress_callback=_collect(progress))
                        results.append({"ok": result.model_dump(mode="json", exclude_none=True), "progress": progress})
                    elif step[0] == "ping":
                        await session.send_ping()
                        results.append({"ok": "pong"})
                except McpError as exc:
                    results.append({"error": {"code": exc.error.code, "message": exc.error.message}})
            session_id = get_session_id()
    return {"session_id": session_id, "protocol_version": init.protocolVersion, "results": results}


def _collect(into: list[float]) -> Any:
    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        into.append(value)

    return on_progress


def main() -> None:
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        report = asyncio.run(client(sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])))
        print(json.dumps(report))


if __name__ == "__main__":
    main()
