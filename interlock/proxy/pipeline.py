"""The stages every call passes, in order: `built_in_stages` is the one list, and reading it tells
the whole flow. Each stage is inert when its configuration is off (not even imported: the plain path
stays free of it). The services the stages share with the rest of interlock (the store and its
recorder, the policy runtime and its limiter, the redaction vault, the exporter) are built first, by
`interlock.runtime.Runtime`, and passed in as `Services`; stages a user adds
(`Runtime(settings, stages=[...])`) come after the built-in ones.

request:   identify → parse → mcp session → mcp pins → stops → policy → mcp tools filter → loops → guardrails
           (then route/retry/send upstream, or relay the response a stage supplied: `call.supplied`)
response:  response_head → chunk... → response, through every stage in this order (a stream is split
           into events once, by the adapter's splitter: `chunk` hooks receive whole events)
           (usage is read, guardrails scan the output, policy refuses denied tool calls)
seal:      the call is over: outcome settled (mcp session), a call the kill switch ended before its
           answer priced on its prompt (usage), limits counted (policy), the record
           redacted and scrubbed (guardrails, scrub), MCP meta copied from it (mcp record)
done:      the sealed record is consumed: recorder, exporter (and a user's collectors)

Hooks run per event in list order (`interlock/proxy/hooks.py` describes each). Every `seal` hook
runs before any `done` hook, so a stage that consumes the record (the recorder, the exporter, a
user's collector) always reads it sealed, wherever it sits in the list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from interlock.config import Settings
from interlock.protocols.mcp import is_mcp
from interlock.proxy.identify import Identify
from interlock.proxy.mcp import McpRecord, McpSession
from interlock.proxy.parse import Parse
from interlock.proxy.stops import StopGate
from interlock.proxy.usage import Usage

if TYPE_CHECKING:
    from interlock.guardrails.redaction import Vault
    from interlock.policies.limits import Limiter
    from interlock.policies.loader import PolicyRuntime
    from interlock.policies.loop_history import LoopHistory
    from interlock.prices import Pricing
    from interlock.proxy.escalation import Escalator
    from interlock.proxy.mcp_pins import McpPins
    from interlock.proxy.stops import Stops
    from interlock.tracing.recorder import Recorder


@dataclass(slots=True)
class Services:
    """What the stages share with the rest of interlock, built before them (`runtime.Runtime`); None
    where its configuration is off."""

    #: The store (`open_recording`'s; typed by its interface once that lands, issue 18 part 5).
    store: Any = None
    #: The recording stage (its `done` queues the sealed call for the writer thread).
    recorder: Recorder | None = None
    #: The live policy (engine, hot reload, rule counts) and the limits' counters.
    policy: PolicyRuntime | None = None
    limiter: Limiter | None = None
    #: Each session's loop history for `loop:` rules (in this process, the store's file for
    #: `--workers`, or Redis with `state.url`; built with the policy).
    loops: LoopHistory | None = None
    #: The values behind reversible redaction's placeholders, per session (when guardrails can run).
    vault: Vault | None = None
    #: The OpenTelemetry export stage (`otel.exporter.build_exporter`), whose `done` queues the call.
    exporter: Any = None
    #: The escalation webhook's queue (the forwarder's; stages emit loop and pin events to it).
    escalator: Escalator | None = None
    #: Prices calls (the catalogue with `prices:` over it): the usage stage and the limiter share it.
    pricing: Pricing | None = None
    #: The kill switch: stopped sessions and agents, and the calls in flight a stop ends.
    stops: Stops | None = None
    #: The MCP tool pins stage, when the runtime built it (it polls the store; `Runtime.stop` ends that).
    mcp_pins: McpPins | None = None


def guardrails_on(settings: Settings) -> bool:
    """Whether anything can ask for a guardrail scan (the config's actions, or a policy's rules)."""
    guardrails = settings.guardrails
    return bool(guardrails.request or guardrails.response or settings.policies)


def built_in_stages(settings: Settings, services: Services, extra: Sequence[object] = ()) -> list[object]:
    """Every built-in stage, in order, then `extra` (a user's or a test's stages). The order is a
    contract; `tests/proxy/test_pipeline.py` asserts the pairs named below."""
    mcp = any(is_mcp(route.protocol) for route in settings.routes.values())
    stages: list[object] = [
        Identify(settings),  # first: agent, session and key decide what every later stage sees
        Parse(settings),  # the request view; a malformed body is answered 400 here, before any rule reads it
    ]
    if mcp:
        # Before policy: the MCP session it adopts is the call's session for every later stage.
        stages.append(McpSession())
        if settings.mcp_pins.enabled:
            # Startup: only with MCP routes and pins on (~11 ms to import, measured under shared load).
            from interlock.proxy.mcp_pins import McpPins

            # Before the policy's tools/list filter: the pins judge the server's own list.
            stages.append(services.mcp_pins or McpPins(settings.mcp_pins, services.store, services.escalator))
    if services.stops is not None:
        # Once the session is known (identify, MCP session): a stopped session or agent goes no further.
        stages.append(StopGate(services.stops))
    # Its `response` reads the token usage and prices the call before policy's `seal` counts them
    # against limits and budgets (usage before limits).
    stages.append(Usage(services.pricing))
    if services.policy is not None:
        # Function-level imports here and below: the engine and CEL cost ~0.4 s of startup, the
        # guardrails more, and a configuration without them never pays it.
        from interlock.policies.stage import PolicyStage

        # Before guardrails: a rule may ask for a guardrail (`call.guardrails`), and a denied call
        # is never scanned.
        stages.append(PolicyStage(services.policy, settings, services.limiter, services.escalator))
        if mcp:
            # Startup: policies/ brings the CEL engine (~0.4-0.7 s to import, measured) only when policies are
            # configured.
            from interlock.policies.mcp_tools import McpToolFilter

            stages.append(McpToolFilter(services.policy, settings))  # tools/list without denied tools
        # Startup: only with loop rules (~20 ms to import, measured under shared load).
        from interlock.policies.loops import LoopStage

        # After policy, which names the `loop:` rules that apply (`call.loop_rules`); its `chunk`
        # after policy's, so a tool call policy refuses is cut before a loop is judged.
        stopper = services.stops.stop_session if services.stops is not None else None
        on_failure = settings.state.on_failure.loops
        stages.append(LoopStage(services.loops, services.escalator, stopper, on_failure=on_failure))
    if guardrails_on(settings):  # else the plain path stays free of the scan
        # Startup: guardrails/ only when guardrails are on (~20 ms to import, measured; presidio itself loads
        # with the PII engine).
        from interlock.guardrails.scrub import ScrubRecord
        from interlock.guardrails.stage import Guardrails

        scan = Guardrails(settings, services.vault)
        # Their `seal` redacts what is recorded (bodies, then secrets in headers and URLs): before
        # MCP record copies from the stored bodies, and before the recorder and exporter read it.
        stages += [scan, ScrubRecord(scan)]
    if mcp:
        # Its `seal` copies tool arguments and results into meta from the stored (redacted) bodies.
        stages.append(McpRecord())
    if services.recorder is not None:
        stages.append(services.recorder)  # `done`: the sealed call to the writer thread
    if services.exporter is not None:
        stages.append(services.exporter)  # `done`: the sealed call to OpenTelemetry
    stages.extend(extra)
    return stages
