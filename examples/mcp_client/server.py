"""The order-desk MCP server that examples/mcp_client/agent.py uses (the `mcp` SDK, Streamable HTTP).

python server.py --port 8000          # serves http://127.0.0.1:8000/mcp
"""

from __future__ import annotations

import argparse

import uvicorn
from mcp.server.mcpserver import MCPServer

ORDERS = {"42": "shipped on 2026-11-20 by DHL, tracking DH123", "7": "waiting for payment"}

server = MCPServer("order-desk", version="1.0")


@server.tool()
def lookup_order(order_id: str) -> str:
    """An order's status, by order number."""
    return ORDERS.get(order_id, "no such order")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=args.port, log_level="warning")
