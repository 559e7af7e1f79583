"""Stream rescue, the proxy half (issue 21, `stream_rescue: true` on a route): when a stream breaks or
stalls after bytes reached the agent, ask the next target to continue the answer.

The app relays the original stream through a `StreamRescue` (protocols/rescue.py, which knows the
wire format) and, when it breaks, calls `open_continuation`. That picks the next target of the call's
plan that can continue: one whose upstream accepts an assistant prefill in some style
(`upstreams[].prefill`), or any target when only whitespace reached the agent (a clean restart). It
makes one attempt there, bounded by `timeouts.first_token`; the app then splices the continuation's
events into the agent's stream, through the same response hooks (guardrails, redaction) as the rest.

One continuation per call: a continuation that breaks too ends the stream with the error event, as
a stream without rescue does. Anything that stops the rescue (nothing can continue, the attempt
fails, the target refuses the prefill with a 400) leaves the agent with the original failure: a
fallback's refusal is never the error the agent sees.
"""

from __future__ import annotations

import logging
from typing import Any

from interlock.config import Route
from interlock.core.call import Call
from interlock.protocols import ADAPTERS, Adapter
from interlock.protocols.base import dump_body
from interlock.protocols.rescue import StreamRescue
from interlock.proxy.forward import Forwarder, Opened
from interlock.proxy.relay_rules import route_timeouts
from interlock.proxy.retry import DEADLINE
from interlock.proxy.routing import Slot

log = logging.getLogger("interlock.proxy")


def prefill_style(protocol: str, declared: str | None) -> str:
    """How an upstream continues a prefill: as declared, else Anthropic's own way on anthropic routes
    and none on openai ones (api.openai.com answers a trailing assistant message with a new turn)."""
    if declared is not None:
        return declared
    return ADAPTERS[protocol].default_prefill


async def open_continuation(
    forwarder: Forwarder,
    call: Call,
    route: Route,
    adapter: Adapter,
    broken: Opened,
    rescue: StreamRescue,
    failure: str,
    offset_bytes: int,
) -> Opened | None:
    """The continuation's response (a 200 event stream, decoded and idle-bounded), or None with the
    reason recorded in `call.meta["rescue"]`; `broken` is closed either way."""
    record: dict[str, Any] = {
        "failure": failure,
        "from": {"upstream": call.upstream, "model": call.attempts[-1].model if call.attempts else None},
        "offset_chars": len(rescue.delivered),
        "offset_bytes": offset_bytes,
    }
    if rescue.held_error is not None:  # the upstream's own error event, which the agent never sees if rescued
        record["upstream_error_event"] = rescue.held_error[:2048].decode("utf-8", "replace")
    call.meta["rescue"] = record
    if call.attempts and call.attempts[-1].duration_ms is None:
        call.attempts[-1].duration_ms = call.elapsed_ms() - call.attempts[-1].started_ms
    failed = broken.slot
    await broken.aclose()  # before asking anyone else: the connection is useless (`broken`: its breaker learns)
    if rescue.blocker is not None:
        return _stop(call, record, f"not continued: {rescue.blocker}")
    router = forwarder.router(call.route, route)
    model = call.model
    plan = router.plan(model)
    unable: set[Slot] = set()
    # The next target first; the one that broke only when no other can continue (a one-target route:
    # a reset is often transient).
    for avoid in ((failed,) if failed is not None else (), ()):
        while True:
            target = router.pick(plan, model, skip=unable.union(avoid))
            if target is None:
                break
            slot = router.slot_of(target, model)
            style = prefill_style(route.protocol, target.state.upstream.prefill)
            built = rescue.request(call.request_json, style)
            if built is None:
                unable.add(slot)  # cannot take a prefill, and text reached the agent
                continue
            data, mode = built
            if target.model is not None:
                data = {**data, "model": target.model}
            record.update(mode=mode, to={"upstream": target.state.name, "model": target.model or model})
            if mode == "prefill" and style != "assistant":
                record["prefill"] = style
            first_token = route_timeouts(forwarder.settings, route).first_token
            result = await forwarder._cut_attempt(
                call, adapter, router, target, None, first_token, body=dump_body(data)
            )
            if not isinstance(result, Opened):
                # (Cut at `first_token`, the attempt reads as the retry deadline's: say which it was.)
                detail = (
                    f"no response within timeouts.first_token ({first_token}s)"
                    if result.kind == DEADLINE
                    else result.detail
                )
                return _stop(call, record, f"the continuation failed: {result.kind}: {detail}")
            status = result.response.status_code
            if status != 200 or not result.response.headers.get("content-type", "").startswith("text/event-stream"):
                await result.aclose()
                why = "refused the prefill" if status == 400 and mode == "prefill" else "answered"
                return _stop(call, record, f"{target.state.name} {why} (HTTP {status})")
            return forwarder._bounded(router, await forwarder.decoded(result))
    return _stop(call, record, "no target can continue it (none left, or none accepts a prefill)")


def _stop(call: Call, record: dict[str, Any], reason: str) -> Opened | None:
    record["outcome"] = "not_rescued"
    record["reason"] = reason
    log.info("call %s: stream not rescued: %s", call.id, reason)
    return None


__all__ = ["open_continuation", "prefill_style"]
