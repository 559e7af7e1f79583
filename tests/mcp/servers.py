"""Helpers for the MCP tests: real MCP servers on loopback, SDK clients, a call collector."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared._httpx_utils import create_mcp_http_client
from pydantic import BaseModel

from interlock.core.call import Call
from interlock.testing import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
MCP1_VENV = ROOT / ".venv-mcp1"
MCP1_SCRIPT = Path(__file__).with_name("mcp1_script.py")
MCP1_LOCK = Path(__file__).with_name("mcp1.requirements.lock")  # `make lock` compiles it


async def until(condition: Any, timeout: float = 60.0, what: str = "condition") -> None:
    """`wait_for` for async tests: polls without blocking the event loop the SDK client runs on."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.01)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# -- the 2.x SDK -------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def mcp2_client(
    url: str, mode: str = "auto", headers: dict[str, str] | None = None, **options: Any
) -> AsyncIterator[Client]:
    """The 2.x SDK's Client over Streamable HTTP; `mode="legacy"` speaks 2025-11-25 (initialize, SSE),
    "auto" probes `server/discover` and speaks 2026-07-28 with servers that answer it."""
    async with create_mcp_http_client(headers=headers) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=mode, read_timeout_seconds=20, **options) as client:  # type: ignore[arg-type]
            yield client


class Approval(BaseModel):
    ok: bool


def build_server() -> MCPServer:
    server = MCPServer("tools-2x", version="2.0")

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
    def send_email(to: str, body: str) -> str:
        """Send an email."""
        return f"sent to {to}"

    @server.tool()
    def delete_file(path: str) -> str:
        """Delete a file."""
        return f"deleted {path}"

    @server.tool()
    async def count(n: int, ctx: Context) -> str:
        """Count to n, reporting progress."""
        for i in range(n):
            await ctx.report_progress(i + 1, n)
        return f"counted to {n}"

    @server.tool()
    async def announce(ctx: Context) -> str:
        """Tell the client, outside this request, that the tool list changed: on the GET event stream
        (2025-11-25) and to `subscriptions/listen` streams (2026-07-28)."""
        if ctx.protocol_version == "2026-07-28":
            await ctx.notify_tools_changed()
        else:
            await ctx.session.send_tool_list_changed()
        return "announced"

    @server.tool()
    async def confirm(action: str, ctx: Context) -> str:
        """Ask the user before acting (a server request the client answers with its own POST)."""
        answer = await ctx.elicit(f"Really {action}?", Approval)
        return f"{action}: {answer.action} {getattr(answer, 'data', None)}"

    @server.tool()
    def fail() -> str:
        """Always fails."""
        raise ValueError("the tool failed on purpose")

    return server


class HangUp:
    """A server fault: for `tools/call` of `hang_up`, send one notification and end the stream (or
    reset the connection for `reset`) without ever answering; for `empty_reply`, a 200 JSON reply
    with no body; everything else goes to the real app."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.headers: list[dict[str, str]] = []  # each request's headers, as the server got them

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.headers.append({k.decode().lower(): v.decode() for k, v in scope["headers"]})
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if b'"empty_reply"' in body:  # a 200 JSON reply without a body
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": b""})
            return
        if b'"hang_up"' not in body and b'"reset"' not in body:
            replayed = False

            async def replay() -> dict[str, Any]:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            return await self.app(scope, replay, send)
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        note = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "working"}}
        event = b"event: message\ndata: " + json.dumps(note).encode() + b"\n\n"
        await send({"type": "http.response.body", "body": event, "more_body": True})
        if b'"reset"' in body:
            raise RuntimeError("simulated crash mid-stream")  # uvicorn drops the connection
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class ThreadServer:
    """An ASGI app served by uvicorn on a free loopback port in a thread."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"mcp-server-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        wait_for(lambda: self.server.started, what="the MCP server to start")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class Collector:
    """A last stage that keeps every finished call, as the recorder sees it."""

    name = "collector"

    def __init__(self) -> None:
        self.calls: list[Call] = []

    async def done(self, call: Call) -> None:
        self.calls.append(call)

    def wait(self, n: int, timeout: float = 60.0) -> list[Call]:
        wait_for(lambda: len(self.calls) >= n, timeout, f"{n} recorded calls (have {len(self.calls)})")
        return list(self.calls)

    def matching(self, predicate: Any, n: int = 1, timeout: float = 60.0) -> list[Call]:
        """The recorded calls for which `predicate` holds, once there are `n` of them."""
        wait_for(lambda: len([c for c in self.calls if predicate(c)]) >= n, timeout, f"{n} matching calls")
        return [c for c in self.calls if predicate(c)]

    def method(self, method: str) -> Call:
        """The one recorded call of this JSON-RPC method, once it is recorded."""
        [call] = self.matching(lambda c: c.meta.get("mcp", {}).get("method") == method)
        return call

    def tool_call(self, tool: str, timeout: float = 60.0) -> Call:
        """The one recorded tools/call of `tool`, once it is recorded."""
        wait_for(
            lambda: any(c.meta.get("mcp", {}).get("tool") == tool for c in self.calls), timeout, f"a call of {tool}"
        )
        [call] = [c for c in self.calls if c.meta.get("mcp", {}).get("tool") == tool]
        return call


# -- the 1.x SDK ---------------------------------------------------------------------------------------


def run_mcp1_client(python: Path, url: str, steps: list[Any], headers: dict[str, str] | None = None) -> Any:
    """Run the 1.x client through `steps` (see mcp1_script.py); returns its JSON report."""
    command = [str(python), str(MCP1_SCRIPT), "client", url, json.dumps(steps), json.dumps(headers or {})]
    done = subprocess.run(command, capture_output=True, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"the 1.x client failed:\n{done.stderr.decode()[-3000:]}")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])
