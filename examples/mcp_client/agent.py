"""An agent whose tools come from an MCP server, with the model and the tools both behind interlock.

    export OPENAI_BASE_URL=http://127.0.0.1:4141/openai    # the model, through interlock's openai route
    export OPENAI_API_KEY=sk-placeholder
    export MCP_URL=http://127.0.0.1:4141/tools/mcp         # the MCP server, through an `mcp` route
    python agent.py "Where is order 42?"

interlock.yaml gives the MCP server a route: `routes: {tools: {protocol: mcp, upstream:
http://127.0.0.1:8000}}`. The agent lists the server's tools, offers them to the model, and runs the
ones the model asks for with `tools/call`. The same X-Interlock-Agent / X-Interlock-Session headers
go on both clients (`default_headers` for openai, `create_mcp_http_client(headers=...)` for mcp),
so interlock shows the model calls and the tool calls as one session.
Prints one JSON line: {"answer": ..., "tools": [tools the agent ran], "results": [their texts]}.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from typing import Any

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from openai import AsyncOpenAI


async def main() -> None:
    question = sys.argv[1] if len(sys.argv) > 1 else "Where is order 42?"
    identity = {
        "X-Interlock-Agent": os.environ.get("INTERLOCK_AGENT", "mcp-orders"),
        "X-Interlock-Session": os.environ.get("INTERLOCK_SESSION") or f"mcp-{uuid.uuid4().hex[:8]}",
    }
    model = AsyncOpenAI(default_headers=identity, max_retries=0)
    ran: list[str] = []
    results: list[str] = []
    async with create_mcp_http_client(headers=identity) as http:
        async with Client(streamable_http_client(os.environ["MCP_URL"], http_client=http)) as mcp:  # type: ignore[arg-type]
            listed = await mcp.list_tools()
            tools: Any = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description or "", "parameters": t.input_schema},
                }
                for t in listed.tools
            ]
            messages: list[Any] = [
                {"role": "system", "content": "You answer questions about orders."},
                {"role": "user", "content": question},
            ]
            for _ in range(5):
                completion = await model.chat.completions.create(
                    model=os.environ.get("MODEL", "gpt-4o-mini"), messages=messages, tools=tools
                )
                message = completion.choices[0].message
                messages.append(message.model_dump(exclude_none=True))
                if not message.tool_calls:
                    print(json.dumps({"answer": message.content, "tools": ran, "results": results}))
                    return
                for call in message.tool_calls:
                    ran.append(call.function.name)
                    result = await mcp.call_tool(call.function.name, json.loads(call.function.arguments))
                    text = "".join(getattr(part, "text", "") for part in result.content)
                    results.append(text)
                    messages.append({"role": "tool", "tool_call_id": call.id, "content": text})
    raise RuntimeError("the model kept calling tools")


if __name__ == "__main__":
    asyncio.run(main())
