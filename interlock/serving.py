"""Serving ASGI apps with uvicorn the way interlock needs it: our own sockets, our own signals."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound socket for uvicorn to listen on. Port 0 lets the kernel pick a free port, with no
    window in which another process could take it (a free port probed, closed, then re-bound has one)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: without it, a response head and body written apart wait
    # for the client's delayed ACK (measured: 45 ms a request on the default asyncio loop).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signals alone: the CLI handles them once for all its servers,
    and a server in a thread must not touch them at all."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def uvicorn_config(app: Any, host: str, port: int, grace: float = 1.0) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        log_level="warning",
        access_log=False,
        server_header=False,  # the upstream's own headers are relayed, not uvicorn's
        date_header=False,
        timeout_graceful_shutdown=max(1, round(grace)),
        timeout_keep_alive=75,
        backlog=4096,
    )
