"""Assembly: settings → upstream client, stages, store → the proxy and admin apps, served together."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from interlock.config import Settings
from interlock.prices import Pricing
from interlock.proxy.app import ProxyApp
from interlock.proxy.forward import Forwarder
from interlock.proxy.pipeline import Pipeline, Services, built_in_stages, guardrails_on
from interlock.proxy.protocols.mcp import is_mcp
from interlock.proxy.stops import Stops
from interlock.proxy.upstream import make_client
from interlock.serving import QuietServer, ServerRejects, bind_ports, uvicorn_config
from interlock.tracing.recorder import open_recording
from interlock.workers import WorkerBoard

log = logging.getLogger("interlock")


def build_services(settings: Settings) -> Services:
    """The services the stages share with the rest of interlock, as configured: the store and its
    recorder, the policy runtime and its limiter, the redaction vault, the OpenTelemetry exporter
    (None where off)."""
    store, recorder = open_recording(settings)
    services = Services(store=store, recorder=recorder, pricing=Pricing.for_settings(settings))
    if settings.policies:  # else no import of the engine and CEL (~0.4 s of startup)
        from interlock.policies.stage import open_policy

        services.policy, services.limiter = open_policy(settings, pricing=services.pricing)
    if guardrails_on(settings):
        from interlock.policies.vault import open_vault

        services.vault = open_vault(
            settings.guardrails, settings.state, processes=settings.workers, store_path=settings.store.path
        )
    otel = settings.otel
    endpoints = (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    )
    if otel.enabled and (otel.endpoint or any(os.environ.get(name) for name in endpoints)):
        # Else nowhere to export to: not even the OpenTelemetry SDK is imported (docs/otel.md).
        from interlock.tracing.otel import build_exporter

        services.exporter = build_exporter(otel)
    return services


class Runtime:
    """Everything a running interlock holds; the admin API reads it, tests build it directly."""

    def __init__(
        self,
        settings: Settings,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        stages: Sequence[object] = (),
    ) -> None:
        """`stages`: stages of your own, after the built-in ones (`proxy.pipeline.built_in_stages`;
        docs/architecture.md, "Adding a stage")."""
        self.settings = settings
        self.started_at = time.time()
        self.ready = False
        self.services: dict[str, Any] = {}
        self.client = make_client(settings, transport)
        self.forwarder = Forwarder(settings, self.client)
        # The services first (policy what-if, replay and the UI read the store too), then the stages.
        self.shared = build_services(settings)
        self.shared.escalator = self.forwarder.escalator
        # The kill switch: stops kept in the store, applied to new calls and to calls in flight.
        self.stops = self.shared.stops = Stops(
            self.shared.store, self.forwarder.escalator, settings.kill_switch.poll_interval
        )
        if settings.mcp_pins.enabled and any(is_mcp(r.protocol) for r in settings.routes.values()):
            from interlock.proxy.mcp_pins import McpPins

            # Built here, not by the stage list, so that `stop` ends its polling of the store.
            self.shared.mcp_pins = McpPins(settings.mcp_pins, self.shared.store, self.forwarder.escalator, poll=True)
        self.store, self.recorder = self.shared.store, self.shared.recorder
        self.policy, self.policy_limiter = self.shared.policy, self.shared.limiter  # for the admin API
        self.services["otel"] = self.shared.exporter
        self.pipeline = Pipeline(built_in_stages(settings, self.shared, stages))
        self.proxy = ProxyApp(settings, self.pipeline, self.forwarder)

    async def start(self) -> None:
        if self.recorder is not None:
            self.recorder.start()
        await self.stops.start()
        if self.shared.mcp_pins is not None:
            await self.shared.mcp_pins.start()
        self.ready = True

    def warming(self) -> list[str]:
        """What is still being prepared after start (the guardrails engine): `/ready` is 503 until none."""
        waiting = []
        for stage in self.pipeline.stages:
            warmed = getattr(stage, "warmed", None)
            if isinstance(warmed, threading.Event) and not warmed.is_set():
                waiting.append(getattr(stage, "name", type(stage).__name__))
        return waiting

    async def stop(self) -> None:
        self.ready = False
        await self.stops.aclose()
        if self.shared.mcp_pins is not None:
            await self.shared.mcp_pins.aclose()  # before the store closes: its writes go there
        await self.forwarder.aclose()
        if self.policy is not None:
            self.policy.stop()  # the hot-reload watcher
        if self.policy_limiter is not None:
            await self.policy_limiter.aclose()  # saves the daily counters
        if self.shared.vault is not None:
            await self.shared.vault.aclose()
        if self.recorder is not None:
            # Writes everything still queued, within shutdown_grace whatever the store does (the
            # rest goes to the side file: docs/store.md).
            await self.recorder.aclose(self.settings.shutdown_grace)
        exporter = self.services.get("otel")
        if exporter is not None:
            await asyncio.to_thread(exporter.close, 5.0)  # exports what is queued, bounded
        if self.store is not None:
            self.store.close()


class Servers:
    """The proxy and admin servers of one Runtime, on sockets bound beforehand (`serving.bind_ports`);
    `interlock serve` and `interlock.testing.run_interlock` both run interlock through this."""

    def __init__(self, runtime: Runtime, proxy_socket: socket.socket, admin_socket: socket.socket) -> None:
        from interlock.ui.admin import create_admin_app

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

    await servers.run(started)


async def _publish_readiness(runtime: Runtime, board: WorkerBoard) -> None:
    """Keep this worker's slot on the board equal to its own `/ready` (every 100 ms: a probe's
    period is seconds)."""
    from interlock.ui.admin import readiness

    while True:
        board.set(readiness(runtime)[0] == 200)
        await asyncio.sleep(0.1)
