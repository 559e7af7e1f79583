"""What a finished response says about itself: its id, the model that answered, why it stopped.

Read for export (OpenTelemetry's `gen_ai.response.*`). A stream is read from its first event and its
last few only, never parsed whole: the answer is in those, and this runs once per exported call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from interlock.proxy.protocols import ADAPTERS
from interlock.proxy.protocols.base import TextSlot, decoded_body
from interlock.proxy.protocols.reassemble import reassemble_stream
from interlock.proxy.protocols.sse import iter_events
from interlock.tracing.call import Call

#: How many events from the end of a stream are looked at for the finish reason.
_TAIL_EVENTS = 6
#: How many bytes from the end of a stream hold those events (a larger tail only costs a little).
_TAIL_BYTES = 8192


@dataclass(slots=True)
class ResponseSummary:
    id: str | None = None
    model: str | None = None
    finish_reasons: list[str] = field(default_factory=list)


def summarize_response(call: Call) -> ResponseSummary:
    """The response's id, model and finish reasons, as far as the protocol tells them."""
    summary = ResponseSummary()
    if call.protocol not in ("openai", "anthropic") or call.status is None or call.status >= 400:
        return summary
    if call.reply is not None:  # interlock's own answer: no model spoke
        return summary
    if call.stream:
        head, tail = _stream_ends(call)
        for data in head:
            _read(call.protocol, data, summary)
            if summary.id or summary.model:
                break
        for text in tail:  # parsed lazily, last first: the finish reason is near the end
            _read(call.protocol, _payload(text), summary)
            if summary.finish_reasons:
                break
        return summary
    body = decoded_body(call.response_body, call.response_headers)
    if body:
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return summary
        _read(call.protocol, data, summary)
    return summary


def _read(protocol: str, data: Any, summary: ResponseSummary) -> None:
    if not isinstance(data, dict):
        return
    if protocol == "anthropic":
        message = data.get("message") if data.get("type") == "message_start" else data
        if isinstance(message, dict):
            _take(summary, message.get("id"), message.get("model"))
            if isinstance(message.get("stop_reason"), str):
                summary.finish_reasons = [message["stop_reason"]]
        delta = data.get("delta")
        if (
            data.get("type") == "message_delta"
            and isinstance(delta, dict)
            and isinstance(delta.get("stop_reason"), str)
        ):
            summary.finish_reasons = [delta["stop_reason"]]
        return
    # OpenAI: a Responses API event wraps the response; chat completions (and chunks) are flat.
    response: dict[str, Any] = data["response"] if isinstance(data.get("response"), dict) else data
    _take(summary, response.get("id"), response.get("model"))
    choices = response.get("choices")
    if isinstance(choices, list):
        reasons = [
            c["finish_reason"] for c in choices if isinstance(c, dict) and isinstance(c.get("finish_reason"), str)
        ]
        if reasons:
            summary.finish_reasons = reasons
    elif response.get("object") == "response" and isinstance(response.get("status"), str):
        status = response["status"]
        if status == "completed":
            summary.finish_reasons = ["stop"]
        elif status == "incomplete":
            details = response.get("incomplete_details")
            reason = details.get("reason") if isinstance(details, dict) else None
            summary.finish_reasons = [str(reason or "incomplete")]
        elif status in ("failed", "cancelled"):
            summary.finish_reasons = [status]


def response_message(call: Call, body: bytes) -> Any:
    """A response body as the agent received it, parsed; a stream is reassembled into the message the
    non-streamed call would have returned, so both read the same. None when it is not JSON."""
    if call.stream:
        return reassemble_stream(call.protocol, body)
    return _payload(body.decode("utf-8", "replace").lstrip())


def output_texts(protocol: str, data: Any) -> list[TextSlot]:
    """The texts of a response (`response_message`: a stream reads like the message it reassembles
    to), by the adapter's `response_texts`. Empty texts (a stream's opening `content: ""`) say
    nothing and are left out."""
    if data is None:
        return []
    return [slot for slot in ADAPTERS[protocol].response_texts(data) if slot.text]


def _take(summary: ResponseSummary, rid: Any, model: Any) -> None:
    if summary.id is None and isinstance(rid, str):
        summary.id = rid
    if summary.model is None and isinstance(model, str):
        summary.model = model


def _stream_ends(call: Call) -> tuple[list[Any], list[str]]:
    """JSON payloads of the first events (in order), and the data of the last events (last first)."""
    chunks = call.chunks
    head_bytes = b""
    for chunk in chunks:
        head_bytes += chunk.data
        if b"\n\n" in head_bytes and b"{" in head_bytes:
            break
    head = [d for d in (_payload(e.data) for e in iter_events(head_bytes)) if d is not None][:2]
    tail_bytes = b""
    for chunk in reversed(chunks):
        tail_bytes = chunk.data + tail_bytes
        if len(tail_bytes) >= _TAIL_BYTES:
            break
    events = list(iter_events(tail_bytes))  # a cut-off first event simply fails to parse
    return head, [e.data for e in reversed(events[-_TAIL_EVENTS:])]


def _payload(data: str) -> Any:
    if not data or data[0] != "{":
        return None
    try:
        return json.loads(data)
    except json.JSONDecodeError:
        return None
