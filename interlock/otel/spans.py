"""A finished Call → its span tree: the call span, a child per upstream attempt and per decision.

The spans are made after the fact, so they are built as the SDK's finished-span records
(`ReadableSpan`) with the call's own timestamps and ids, and handed to the span processor (the SDK's
batch processor and OTLP exporter ship them). The call span gets exactly `call.span_id` in
`call.trace_id` under `call.parent_span_id`, the ids interlock already sent upstream in
`traceparent`, so the agent's spans, interlock's and the upstream's join one trace.

Why not `Tracer.start_span`: it would need the ids smuggled in through an IdGenerator, and its
attribute checks and span bookkeeping cost more than the rest of the export (measured: ~45 µs of
~60 µs per call for a call and an attempt span). The tracer provider's sampler still decides.
"""

from __future__ import annotations

from typing import Any, cast

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased, Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from interlock import __version__
from interlock.core.call import SOUND_OUTCOMES, Call
from interlock.otel.attributes import Attributes, describe_attempt

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_OK = Status(StatusCode.UNSET)


def span_id_int(value: str | None, length: int) -> int | None:
    """A hex id from the Call as an int, or None when absent or malformed."""
    if value is None or len(value) != length:
        return None
    try:
        number = int(value, 16)
    except ValueError:
        return None
    return number or None


class SpanBuilder:
    """Builds and hands on the spans of one call at a time (used from one thread)."""

    def __init__(self, processor: SpanProcessor, resource: Resource, sampler: Sampler) -> None:
        self.processor = processor
        self.resource = resource
        self.sampler = sampler
        self.scope = InstrumentationScope("interlock", __version__)
        self.ids = RandomIdGenerator()
        # The SDK's default sampler (no OTEL_TRACES_SAMPLER) samples every call: asking it costs a
        # context object and ~10 µs a call for a known answer.
        default: Any = ParentBased(ALWAYS_ON)  # get_description is untyped in the SDK
        self.sample_all = bool(cast(Any, sampler).get_description() == default.get_description())

    def _span(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Attributes,
        start: int,
        end: int,
        status: Status = _OK,
        events: tuple[Event, ...] = (),
    ) -> ReadableSpan:
        return ReadableSpan(
            name,
            context,
            parent,
            self.resource,
            attributes,
            events,
            (),
            kind,
            None,
            status,
            start,
            end,
            self.scope,
        )

    def build(self, call: Call, name: str, attributes: Attributes) -> list[ReadableSpan]:
        """The call's spans (empty when the sampler drops it)."""
        start = int(call.started_at * 1e9)
        end = start + int((call.duration_ms or 0.0) * 1e6)
        trace_id = span_id_int(call.trace_id, 32) or self.ids.generate_trace_id()
        parent_id = span_id_int(call.parent_span_id, 16)
        span_id = span_id_int(call.span_id, 16) or self.ids.generate_span_id()
        parent = SpanContext(trace_id, parent_id, True, _SAMPLED) if parent_id is not None else None
        if not self.sample_all:
            parent_context = trace.set_span_in_context(NonRecordingSpan(parent)) if parent else Context()
            sampled = self.sampler.should_sample(parent_context, trace_id, name, SpanKind.CLIENT, attributes)
            if sampled.decision != Decision.RECORD_AND_SAMPLE:
                return []
            if sampled.attributes:
                attributes = {**attributes, **sampled.attributes}
        context = SpanContext(trace_id, span_id, False, _SAMPLED)
        spans: list[ReadableSpan] = []
        for number, attempt in enumerate(call.attempts, 1):
            attempt_name, attempt_attributes = describe_attempt(call, attempt, number)
            attempt_start = start + int(attempt.started_ms * 1e6)
            duration = attempt.duration_ms
            attempt_end = attempt_start + int(duration * 1e6) if duration is not None else end
            failed = attempt.error or (attempt.status is not None and attempt.status >= 500)
            status = Status(StatusCode.ERROR, attempt.error or f"HTTP {attempt.status}") if failed else _OK
            child = SpanContext(trace_id, self.ids.generate_span_id(), False, _SAMPLED)
            spans.append(
                self._span(
                    attempt_name,
                    child,
                    context,
                    SpanKind.CLIENT,
                    attempt_attributes,
                    attempt_start,
                    attempt_end,
                    status,
                )
            )
        for decision in call.decisions:
            at = start + int((decision.t_ms or 0.0) * 1e6)
            decision_attributes: dict[str, Any] = {
                "interlock.decision.stage": decision.stage,
                "interlock.decision.action": decision.action,
            }
            if decision.rule:
                decision_attributes["interlock.decision.rule"] = decision.rule
            if decision.reason:
                decision_attributes["interlock.decision.reason"] = decision.reason
            status = Status(StatusCode.ERROR, decision.reason) if decision.action == "error" else _OK
            child = SpanContext(trace_id, self.ids.generate_span_id(), False, _SAMPLED)
            spans.append(
                self._span(
                    f"{decision.stage} {decision.action}",
                    child,
                    context,
                    SpanKind.INTERNAL,
                    decision_attributes,
                    at,
                    at,
                    status,
                )
            )
        events = tuple(
            Event(
                "interlock.finding",  # never the value: entity, place and action only
                {
                    "interlock.finding.entity": finding.entity,
                    "interlock.finding.where": finding.where,
                    "interlock.finding.action": finding.action,
                    "interlock.finding.score": finding.score,
                },
                end,
            )
            for finding in call.findings
        )
        status = Status(StatusCode.ERROR, call.error or call.outcome) if call.outcome not in SOUND_OUTCOMES else _OK
        spans.append(self._span(name, context, parent, SpanKind.CLIENT, attributes, start, end, status, events))
        return spans

    def export(self, call: Call, name: str, attributes: Attributes) -> None:
        for span in self.build(call, name, attributes):
            self.processor.on_end(span)


class CachedHashResource(Resource):
    """A Resource whose hash is computed once: the OTLP encoder hashes the resource of every span
    to group them, and `Resource.__hash__` JSON-encodes all its attributes each time (measured:
    about a fifth of the encoding cost)."""

    _cached_hash: int | None = None

    def __hash__(self) -> int:
        if self._cached_hash is None:
            self._cached_hash = super().__hash__()
        return self._cached_hash

    def __eq__(self, other: object) -> bool:
        return self is other or super().__eq__(other)
