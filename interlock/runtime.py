"""Assembly of one running interlock: settings → services (store, policy, limiter, vault, exporter) →
stages → the proxy app. `server.py` serves it; the admin API and tests read it."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx

from interlock.config import Settings, fleet_warnings
from interlock.prices import Pricing
from interlock.protocols.mcp import is_mcp
from interlock.proxy.app import ProxyApp
from interlock.proxy.forward import Forwarder
from interlock.proxy.hooks import Pipeline
from interlock.proxy.pipeline import Services, built_in_stages, guardrails_on
from interlock.proxy.stops import Stops
from interlock.proxy.upstream import make_client
from interlock.tracing.recorder import open_recording

log = logging.getLogger("interlock")


def build_services(settings: Settings) -> Services:
    """The services the stages share with the rest of interlock, as configured: the store and its
    recorder, the policy runtime and its limiter, the redaction vault, the OpenTelemetry exporter
    (None where off)."""
    store, recorder = open_recording(settings)
    services = Services(store=store, recorder=recorder, pricing=Pricing.for_settings(settings))
    if settings.policies:  # else no import of the engine and CEL (~0.4 s of startup)
        # Startup: the policy engine and CEL (~0.4-0.7 s to import, measured) only when policies are
        # configured.
        from interlock.policies.loop_history_open import open_loop_history
        from interlock.policies.stage import open_policy

        services.policy, services.limiter = open_policy(settings, pricing=services.pricing)
        services.loops = open_loop_history(settings.store.path, settings.state, processes=settings.workers)
    if guardrails_on(settings):
        # Startup: guardrails/ only when guardrails are on (~20 ms to import, measured under shared load).
        from interlock.guardrails.vault_open import open_vault

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
        from interlock.otel.exporter import build_exporter

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
        if settings.workers == 1:  # a worker of `serve --workers N`: its supervisor said them once
            for warning in fleet_warnings(settings):  # what a fleet would not share: loud, at startup
                log.warning("%s", warning)
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
            # Startup: only with MCP routes and pins on (~11 ms to import, measured under shared load).
            from interlock.proxy.mcp_pins import McpPins

            # Built here, not by the stage list, so that `stop` ends its polling of the store.
            self.shared.mcp_pins = McpPins(settings.mcp_pins, self.shared.store, self.forwarder.escalator, poll=True)
        self.store, self.recorder = self.shared.store, self.shared.recorder
        self.policy, self.policy_limiter = self.shared.policy, self.shared.limiter  # for the admin API
        self.services["otel"] = self.shared.exporter
        self.pipeline = Pipeline(built_in_stages(settings, self.shared, stages))
        self.proxy = ProxyApp(settings, self.pipeline, self.forwarder)
        if self.recorder is not None:
            proxy = self.proxy
            self.recorder.in_flight = lambda: proxy.inflight

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
        if self.shared.loops is not None:
            await self.shared.loops.aclose()
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
