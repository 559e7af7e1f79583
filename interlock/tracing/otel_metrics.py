"""Metrics for every exported call: the GenAI client metrics, MCP's, and interlock's own counters."""

from __future__ import annotations

from opentelemetry.metrics import Meter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics, mcp_metrics

from interlock.tracing.call import Call
from interlock.tracing.otel_attributes import Attributes, Described

#: Bucket boundaries the GenAI conventions recommend.
TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
SECONDS_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]


class CallMetrics:
    """The instruments, created once; `record` runs on the export thread, never on the event loop."""

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
        self.calls = meter.create_counter(
            "interlock.calls", unit="{call}", description="Calls through interlock, by route, agent and outcome."
        )
        self.retries = meter.create_counter(
            "interlock.retries", unit="{attempt}", description="Upstream attempts after the first one."
        )
        self.decisions = meter.create_counter(
            "interlock.policy.decisions", unit="{decision}", description="Policy and guardrail decisions."
        )
        self.findings = meter.create_counter(
            "interlock.guardrail.findings", unit="{finding}", description="PII and secrets found by the guardrails."
        )

    def record(self, call: Call, described: Described) -> None:
        self.calls.add(
            1, {"interlock.route": call.route, "interlock.agent": call.agent, "interlock.outcome": call.outcome}
        )
        if len(call.attempts) > 1:
            self.retries.add(len(call.attempts) - 1, {"interlock.route": call.route})
        for decision in call.decisions:
            attrs: Attributes = {
                "interlock.decision.stage": decision.stage,
                "interlock.decision.action": decision.action,
            }
            if decision.rule:
                attrs["interlock.decision.rule"] = decision.rule
            self.decisions.add(1, attrs)
        for finding in call.findings:
            self.findings.add(
                1, {"interlock.finding.entity": finding.entity, "interlock.finding.action": finding.action}
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
