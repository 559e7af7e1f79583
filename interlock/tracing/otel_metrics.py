"""Metrics for every exported call: the GenAI client metrics, MCP's, and interlock's own counters."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics, mcp_metrics

from interlock.tracing.call import Call
from interlock.tracing.otel_attributes import Described

#: Bucket boundaries the GenAI conventions recommend.
TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
SECONDS_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]

#: interlock's own counters: key, name, unit, description.
COUNTERS = (
    ("calls", "interlock.calls", "{call}", "Calls through interlock, by route, agent and outcome."),
    ("retries", "interlock.retries", "{attempt}", "Upstream attempts after the first one, by route."),
    ("decisions", "interlock.policy.decisions", "{decision}", "Policy and guardrail decisions."),
    ("findings", "interlock.guardrail.findings", "{finding}", "PII and secrets found by the guardrails."),
)

AttributeKey = tuple[tuple[str, Any], ...]


class CallMetrics:
    """The instruments, created once; `record` runs on the export worker, never on the event loop."""

    def __init__(self, meter: Meter) -> None:
        self.token_usage = meter.create_histogram(
            gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.duration = meter.create_histogram(
            gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.first_chunk = meter.create_histogram(
            gen_ai_metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK,
            unit="s",
            description="Time to receive the first chunk of a streamed response.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.mcp_duration = meter.create_histogram(
            mcp_metrics.MCP_CLIENT_OPERATION_DURATION,
            unit="s",
            description="The duration of the MCP request or notification as observed by the sender.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        # interlock's own counters add up here (a dict increment) and the SDK reads the totals when
        # it collects: a synchronous SDK counter costs ~10 µs an add, and a call makes several.
        self._counts: dict[str, dict[AttributeKey, int]] = {key: {} for key, *_ in COUNTERS}
        self._lock = threading.Lock()
        for key, name, unit, description in COUNTERS:
            meter.create_observable_counter(name, [self._observer(key)], unit=unit, description=description)

    def _observer(self, key: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                totals = list(self._counts[key].items())
            return [Observation(value, dict(attributes)) for attributes, value in totals]

        return observe

    def _count(self, key: str, attributes: AttributeKey, value: int = 1) -> None:
        counts = self._counts[key]
        with self._lock:
            counts[attributes] = counts.get(attributes, 0) + value

    def record(self, call: Call, described: Described) -> None:
        self._count(
            "calls",
            (("interlock.route", call.route), ("interlock.agent", call.agent), ("interlock.outcome", call.outcome)),
        )
        if len(call.attempts) > 1:
            self._count("retries", (("interlock.route", call.route),), len(call.attempts) - 1)
        for decision in call.decisions:
            attributes: AttributeKey = (
                ("interlock.decision.stage", decision.stage),
                ("interlock.decision.action", decision.action),
            )
            if decision.rule:
                attributes += (("interlock.decision.rule", decision.rule),)
            self._count("decisions", attributes)
        for finding in call.findings:
            self._count(
                "findings", (("interlock.finding.entity", finding.entity), ("interlock.finding.action", finding.action))
            )
        seconds = (call.duration_ms or 0.0) / 1000.0
        metric = described.metric_attributes
        if call.protocol == "mcp":
            self.mcp_duration.record(seconds, metric)
            return
        if described.operation is None:
            return
        self.duration.record(seconds, metric)
        if call.stream and call.ttfb_ms is not None:
            self.first_chunk.record(call.ttfb_ms / 1000.0, metric)
        if call.input_tokens is not None:
            self.token_usage.record(call.input_tokens, {**metric, gen_ai.GEN_AI_TOKEN_TYPE: "input"})
        if call.output_tokens is not None:
            self.token_usage.record(call.output_tokens, {**metric, gen_ai.GEN_AI_TOKEN_TYPE: "output"})
