"""Serving ASGI apps with uvicorn the way interlock needs it: our own sockets, our own signals, and
bounds on what a client may hold open.

uvicorn (with httptools) has no deadline for a request's head and no limit on its size, so 300
slowloris connections stayed open: `GuardedHttp` adds both (`server.header_timeout`,
`server.max_header_bytes`) and answers what the HTTP parser refuses with a JSON 400 instead of
uvicorn's plain text. All of these are requests that never become a call (nothing is recorded for
them): `ServerRejects` counts them (`/api/stats` → `server`) and logs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from interlock.config import HttpServer, Settings

log = logging.getLogger("interlock.server")


class ServerRejects:
    """Requests a server refused before they became a call, by kind; each kind logged on its first
    occurrence and every 100th after."""

    KINDS = ("malformed", "header_timeout", "header_too_large")

    def __init__(self, name: str) -> None:
        self.name = name
        self.counts = dict.fromkeys(self.KINDS, 0)

    def reject(self, kind: str, client: Any, detail: str) -> None:
        self.counts[kind] += 1
        count = self.counts[kind]
        if count == 1 or count % 100 == 0:
            log.warning(
                "%s port: refused a request from %s (%s): %s [%d so far]", self.name, client, kind, detail, count
            )


_STATUS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}

_on_url = HttpToolsProtocol.on_url
_on_header = HttpToolsProtocol.on_header


def guarded_protocol(limits: HttpServer, rejects: ServerRejects) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with a deadline and a size limit for request heads."""

    class GuardedHttp(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None
        _head_bytes = 0  # of the request line and headers parsed
        _head_received = 0  # bytes received while a head was incomplete

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()  # from the connection's start: one that never sends a byte is closed too

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = self._head_received = 0
            self._arm()

        # The parser calls these once per request line and per header: uvicorn's own are called as
        # plain functions, not through super() (a super object and a lookup per header: ~1.1 k
        # instructions each, ~19 k a call with the openai SDK's 17 headers; docs/bench.md).
        def on_url(self, url: bytes) -> None:
            self._head_bytes += len(url)
            _on_url(self, url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_bytes += len(name) + len(value) + 4
            _on_header(self, name, value)

        def on_headers_complete(self) -> None:
            self._disarm()
            if self._head_bytes > limits.max_header_bytes:
                self._too_large()
                return
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            self._unset_keepalive_if_required()
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade:  # as uvicorn does
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
                return
            except httptools.HttpParserError as exc:
                if self.transport.is_closing():  # refused already (the rest of a head too large)
                    return
                rejects.reject("malformed", self.client, str(exc) or type(exc).__name__)
                self._refuse(400, "bad_http", "the request is not valid HTTP/1.1")
                return
            if self._head_timer is not None and not self.transport.is_closing():
                # Still in a head that arrives slowly: what is received so far counts against it.
                self._head_received += len(data)
                if self._head_received > limits.max_header_bytes:
                    self._too_large()

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(limits.header_timeout, self._head_timeout)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
                return
            rejects.reject("header_timeout", self.client, f"no complete request head in {limits.header_timeout}s")
            self._refuse(408, "header_timeout", f"no complete request head within {limits.header_timeout}s")

        def _too_large(self) -> None:
            rejects.reject("header_too_large", self.client, f"over {limits.max_header_bytes} bytes")
            self._refuse(431, "header_too_large", f"request head over {limits.max_header_bytes} bytes")

        def _refuse(self, status: int, code: str, message: str) -> None:
            """Answer in JSON (interlock's error shape) and close: the connection cannot be trusted."""
            self._disarm()
            if self.transport.is_closing():
                return
            if self.cycle is None or not self.cycle.response_started or self.cycle.response_complete:
                body = json.dumps({"error": {"code": code, "message": message}}).encode()
                head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
                self.transport.write(head % (status, _STATUS[status], len(body)) + body)
            self.transport.close()

    return GuardedHttp


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


def bind_ports(settings: Settings) -> tuple[Settings, socket.socket, socket.socket]:
    """The proxy's and the admin port's sockets, bound (the first closed again when the second cannot
    be), and `settings` with the ports the kernel chose where they say 0."""
    proxy_socket = bind_socket(settings.listen.host, settings.listen.port)
    try:
        admin_socket = bind_socket(settings.admin.host, settings.admin.port)
    except OSError:
        proxy_socket.close()
        raise
    bound = settings.model_copy(
        update={
            "listen": settings.listen.model_copy(update={"port": proxy_socket.getsockname()[1]}),
            "admin": settings.admin.model_copy(update={"port": admin_socket.getsockname()[1]}),
        }
    )
    return bound, proxy_socket, admin_socket


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signals alone: the CLI handles them once for all its servers,
    and a server in a thread must not touch them at all."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def uvicorn_config(
    app: Any,
    host: str,
    port: int,
    grace: float = 1.0,
    limits: HttpServer | None = None,
    rejects: ServerRejects | None = None,
) -> uvicorn.Config:
    limits = limits or HttpServer()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=guarded_protocol(limits, rejects or ServerRejects("http")),
        lifespan="off",
        log_level="warning",
        access_log=False,
        server_header=False,  # the upstream's own headers are relayed, not uvicorn's
        date_header=False,
        timeout_graceful_shutdown=max(1, round(grace)),
        timeout_keep_alive=max(1, round(limits.keep_alive)),
        backlog=4096,
    )
