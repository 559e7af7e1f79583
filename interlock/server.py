"""Serving: a Runtime's proxy and admin apps on their sockets, until a signal (`interlock serve`)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
from collections.abc import Callable
from typing import Any

from interlock.config import Settings
from interlock.runtime import Runtime
from interlock.serving import QuietServer, ServerRejects, bind_ports, uvicorn_config
from interlock.ui.admin import create_admin_app, readiness
from interlock.workers import WorkerBoard

log = logging.getLogger("interlock")


class Servers:
    """The proxy and admin servers of one Runtime, on sockets bound beforehand (`serving.bind_ports`);
    `interlock serve` and `interlock.testing.run_interlock` both run interlock through this."""

    def __init__(self, runtime: Runtime, proxy_socket: socket.socket, admin_socket: socket.socket) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.sockets = (proxy_socket, admin_socket)
        # Requests each port refused before they became a call (malformed HTTP, slow or huge heads).
        self.rejects = {"proxy": ServerRejects("proxy"), "admin": ServerRejects("admin")}
        runtime.services["server_rejects"] = self.rejects
        self.proxy = QuietServer(
            uvicorn_config(
                runtime.proxy,
                settings.listen.host,
                settings.listen.port,
                settings.shutdown_grace,
                settings.server,
                self.rejects["proxy"],
            )
        )
        self.admin = QuietServer(
            uvicorn_config(
                create_admin_app(runtime),
                settings.admin.host,
                settings.admin.port,
                limits=settings.server,
                rejects=self.rejects["admin"],
            )
        )

    def stop(self) -> None:
        """Stop accepting; calls in flight get up to `shutdown_grace` seconds."""
        self.proxy.should_exit = True
        self.admin.should_exit = True

    async def run(self, on_started: Callable[[bool], None] | None = None) -> None:
        """Serve until `stop`; `on_started(ok)` once both listen (or one failed to start)."""
        await self.runtime.start()
        tasks = [
            asyncio.create_task(self.proxy.serve(sockets=[self.sockets[0]])),
            asyncio.create_task(self.admin.serve(sockets=[self.sockets[1]])),
        ]
        while not (self.proxy.started and self.admin.started) and not any(t.done() for t in tasks):
            await asyncio.sleep(0.005)
        ok = self.proxy.started and self.admin.started
        if on_started is not None:
            on_started(ok)
        if not ok:
            self.stop()
        try:
            await asyncio.gather(*tasks)
        finally:
            await self.runtime.stop()
        if not ok:
            raise OSError("a server stopped during startup")  # the CLI says so and exits 2


async def serve(
    settings: Settings,
    *,
    on_ready: Any = None,
    sockets: tuple[socket.socket, socket.socket] | None = None,
    board: WorkerBoard | None = None,
) -> None:
    """Run the proxy and the admin port until SIGTERM or SIGINT, then shut down gracefully.
    `on_ready(runtime, proxy_port, admin_port)` is called once both listen. Raises OSError when a port
    cannot be bound. A worker of `serve --workers N` (`workers.py`) gets the supervisor's `sockets`
    and its slot on the `board` of readiness."""
    if sockets is None:
        _, proxy_socket, admin_socket = bind_ports(settings)
    else:
        proxy_socket, admin_socket = sockets
    try:
        runtime = Runtime(settings)  # may raise: a broken policy file, an unreadable store
        servers = Servers(runtime, proxy_socket, admin_socket)
    except BaseException:
        proxy_socket.close()
        admin_socket.close()
        raise
    publisher: asyncio.Task[None] | None = None
    # Startup's objects out of the collector's way: collected once now, before any call is served
    # (a full collection of the startup heap took ~70 ms on the shared machine: here it delays
    # ready, not a call), and what warming adds once it is done (the task; kept referenced: the
    # loop holds only a weak reference to a task).
    gc.collect()
    gc.freeze()
    freezer = asyncio.get_running_loop().create_task(freeze_startup_heap(runtime))
    if board is not None:
        runtime.services["workers"] = board
        publisher = asyncio.get_running_loop().create_task(_publish_readiness(runtime, board))

    def stop(*_: Any) -> None:
        log.info("shutting down: no new connections, waiting up to %ss for calls in flight", settings.shutdown_grace)
        if board is not None:
            board.set(False)  # out of rotation at once: `/ready` of every worker says so
        if publisher is not None:
            publisher.cancel()
        servers.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)

    def started(ok: bool) -> None:
        if not ok:
            return
        if on_ready:  # first: the CLI's "point agents at ..." is the first line a user sees
            on_ready(runtime, proxy_socket.getsockname()[1], admin_socket.getsockname()[1])
        log.info(  # news, not a warning (the CLI's line on stdout says where to point agents)
            "interlock ready: proxy http://%s:%s/<route>/..., admin http://%s:%s/ (routes: %s)",
            settings.listen.host,
            proxy_socket.getsockname()[1],
            settings.admin.host,
            admin_socket.getsockname()[1],
            ", ".join(settings.routes) or "none",
        )
        if not settings.admin.token and settings.admin.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning(
                "the admin port (recorded prompts and replies, the policy API) listens on %s without a "
                "token: it answers only loopback Host names and admin.allowed_hosts; set admin.token "
                "(INTERLOCK_ADMIN_TOKEN in the Docker image)",
                settings.admin.host,
            )
        if settings.listen.host in ("0.0.0.0", "::", "") and not settings.listen.allowed_hosts:
            log.warning(
                "the proxy listens on %s and answers Host names localhost and IP addresses only (DNS "
                "rebinding); list the names agents use in listen.allowed_hosts",
                settings.listen.host,
            )

    try:
        await servers.run(started)
    finally:
        freezer.cancel()


async def freeze_startup_heap(runtime: Runtime, poll: float = 0.05) -> None:
    """Once startup is over (what `/ready` waits for is warmed: the price catalogue, the guardrails
    engine), move every object alive to the collector's permanent generation (`gc.freeze`; `serve`
    collected and froze the heap before serving, so this only adds what warming made, and costs no
    collection on the loop). Those objects (modules, settings, the catalogue, pydantic models:
    hundreds of thousands) live as long as the process, yet every full collection walked them again
    while calls were being served: measured with callgrind (bench.instructions, non-streamed, c8),
    the collector was ~3 % of a call's instructions. Objects created later are collected as before;
    what startup left that later becomes garbage (the first policy after a hot reload) is kept:
    once, bounded."""
    while runtime.warming():
        await asyncio.sleep(poll)
    gc.freeze()
    # A young collection walks every container object still alive, and while calls are in flight
    # most of those are theirs, alive until the call ends: at the default threshold (700
    # allocations) the same in-flight objects were walked again and again. Collecting young
    # objects 10x less often walks them 10x less; garbage in cycles waits for at most
    # `YOUNG_THRESHOLD` allocations instead of 700 (a few hundred kB at most).
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


#: Allocations between two young collections once serving (`freeze_startup_heap`; Python's default 700).
YOUNG_THRESHOLD = 7000


async def _publish_readiness(runtime: Runtime, board: WorkerBoard) -> None:
    """Keep this worker's slot on the board equal to its own `/ready` (every 100 ms: a probe's
    period is seconds)."""
    while True:
        board.set(readiness(runtime)[0] == 200)
        await asyncio.sleep(0.1)
