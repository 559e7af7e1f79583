"""The scripted provider's AWS Bedrock Runtime: Converse, ConverseStream, InvokeModel and
InvokeModelWithResponseStream (Anthropic models), with SigV4 checked on every request.

Formats follow the Bedrock Runtime API reference and botocore's `bedrock-runtime` service-2.json:
ConverseStream sends messageStart, per block contentBlockStart (tool use only), contentBlockDelta
(text, or a tool's input JSON in pieces), contentBlockStop, then messageStop and metadata (usage,
metrics), each an event-stream message; InvokeModelWithResponseStream wraps each Anthropic stream
event, base64, in a `chunk` event's `bytes`. Errors: `{"message": ...}` with `x-amzn-errortype`; in a
stream, an exception message (`:exception-type`).
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from interlock.protocols.eventstream import event_message, exception_message
from interlock.scripted.anthropic_replies import anthropic_reply
from interlock.scripted.replies import Script, last_user_text, pieces
from interlock.scripted.wire import Exchange, Reset, ScriptedFormat, register, send_json, send_stream


@dataclass(frozen=True)
class AwsCredentials:
    """What the scripted Bedrock checks each request's SigV4 signature against."""

    access_key_id: str
    secret_access_key: str
    region: str
    session_token: str | None = None


def signature_problem(
    method: str, raw_path: str, query: str, headers: dict[str, str], body: bytes, expected: AwsCredentials
) -> str | None:
    """Why the request's SigV4 signature is not valid for `expected` (None: it is), recomputed with
    botocore's signer over the headers the request says it signed, at the time it says it signed."""
    # Optional dependency: botocore is the `bedrock` extra (~350 ms to import, measured).
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    authorization = headers.get("authorization", "")
    if not authorization.startswith("AWS4-HMAC-SHA256 "):
        return "missing SigV4 Authorization header"
    fields = dict(
        part.strip().split("=", 1) for part in authorization[len("AWS4-HMAC-SHA256 ") :].split(",") if "=" in part
    )
    scope = fields.get("Credential", "").split("/")
    if len(scope) != 5 or scope[0] != expected.access_key_id:
        return "signed with other credentials"
    if scope[2] != expected.region or scope[3] != "bedrock":
        return f"signed for {scope[2:4]}, not {expected.region}/bedrock"
    if expected.session_token is not None and headers.get("x-amz-security-token") != expected.session_token:
        return "missing or wrong session token"
    signed = fields.get("SignedHeaders", "").split(";")
    url = f"http://{headers.get('host', '')}{raw_path}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, data=body, headers={k: headers.get(k, "") for k in signed})
    request.context["timestamp"] = headers.get("x-amz-date", "")
    credentials = Credentials(expected.access_key_id, expected.secret_access_key, expected.session_token)
    auth = SigV4Auth(credentials, "bedrock", expected.region)
    canonical = auth.canonical_request(request)
    wanted = auth.signature(auth.string_to_sign(request, canonical), request)
    return None if wanted == fields.get("Signature") else "the signature does not match the request"


def error(status: int, message: str, kind: str) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    body = json.dumps({"message": message}).encode()
    return status, body, [(b"x-amzn-errortype", f"{kind}:".encode())]


_STATUS_ERRORS = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_NAMED = {
    "context_length_exceeded": "Input is too long for requested model.",
    "content_filter": "The response was blocked by the content filter.",
    "prefill": "This model does not support assistant message prefill.",
}


def error_for(script: Script) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    if script.error is not None:
        return error(script.status if script.status >= 400 else 400, _NAMED[script.error], "ValidationException")
    kind = _STATUS_ERRORS.get(script.status, "InternalServerException")
    return error(
        script.status, "Too many requests, please wait before trying again." if script.status == 429 else kind, kind
    )


def stream_exception() -> bytes:
    """What Bedrock sends when a model fails mid-stream (then the stream ends)."""
    payload = {"message": "The system encountered an unexpected error during processing. Try your request again."}
    return exception_message("internalServerException", json.dumps(payload).encode())


def converse_user_text(data: dict[str, Any]) -> str:
    for message in reversed(data.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            for block in message.get("content") or []:
                if isinstance(block, dict) and isinstance(block.get("text"), str):
                    return str(block["text"])
    return ""


def converse_reply(text: str, script: Script) -> tuple[list[bytes], dict[str, Any]]:
    """ConverseStream's messages and the Converse response they add up to."""
    content: list[dict[str, Any]] = []
    if script.tool_calls:
        content += [
            {"toolUse": {"toolUseId": f"tooluse_{t.id}", "name": t.name, "input": t.arguments}}
            for t in script.tool_calls
        ]
    else:
        content.append({"text": text})
    stop = "tool_use" if script.tool_calls else "end_turn"
    usage = {
        "inputTokens": script.input_tokens,
        "outputTokens": script.output_tokens,
        "totalTokens": script.input_tokens + script.output_tokens + script.cached_tokens + script.cache_write_tokens,
    }
    if script.cached_tokens or script.cache_write_tokens:
        usage.update(cacheReadInputTokens=script.cached_tokens, cacheWriteInputTokens=script.cache_write_tokens)
    metrics = {"latencyMs": 120}
    whole = {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": usage,
        "metrics": metrics,
    }
    events = [event_message("messageStart", json.dumps({"role": "assistant", "p": "abcd"}).encode())]

    def event(kind: str, **fields: Any) -> None:
        events.append(event_message(kind, json.dumps({**fields, "p": "abcdefgh"[: 1 + len(events) % 8]}).encode()))

    for i, block in enumerate(content):
        if "toolUse" in block:
            use = block["toolUse"]
            event(
                "contentBlockStart",
                contentBlockIndex=i,
                start={"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}},
            )
            for piece in pieces(json.dumps(use["input"]), 8):
                event("contentBlockDelta", contentBlockIndex=i, delta={"toolUse": {"input": piece}})
        else:
            for piece in pieces(block["text"], script.chunk_size):
                event("contentBlockDelta", contentBlockIndex=i, delta={"text": piece})
        event("contentBlockStop", contentBlockIndex=i)
    event("messageStop", stopReason=stop)
    event("metadata", usage=usage, metrics=metrics)
    return events, whole


def invoke_reply(text: str, script: Script, model: str) -> tuple[list[bytes], dict[str, Any]]:
    """InvokeModel's Anthropic message, and InvokeModelWithResponseStream's chunks (each Anthropic
    stream event's JSON, base64, in `bytes`; the last carries `amazon-bedrock-invocationMetrics`)."""
    sse_events, whole = anthropic_reply(text, script, model)
    events = []
    for raw in sse_events:
        data = json.loads(raw.split(b"data: ", 1)[1])
        if data["type"] == "message_stop":
            data["amazon-bedrock-invocationMetrics"] = {
                "inputTokenCount": script.input_tokens,
                "outputTokenCount": script.output_tokens,
                "invocationLatency": 120,
                "firstByteLatency": 40,
            }
        inner = json.dumps(data, separators=(",", ":")).encode()  # compact, as Bedrock writes it
        payload = {"bytes": base64.b64encode(inner).decode(), "p": "abcd"}
        events.append(event_message("chunk", json.dumps(payload, separators=(",", ":")).encode()))
    return events, whole


def reply(path: str, data: dict[str, Any], script: Script) -> tuple[list[bytes], dict[str, Any], bool]:
    """(stream messages, whole response, streamed?) for a Bedrock Runtime path."""
    model, _, action = path[len("/model/") :].partition("/")
    model = script.model or unquote(model)
    if action.startswith("invoke"):
        text = script.text if script.text is not None else f"echo: {last_user_text(data)}"
        events, whole = invoke_reply(text, script, model)
    else:
        text = script.text if script.text is not None else f"echo: {converse_user_text(data)}"
        events, whole = converse_reply(text, script)
    return events, whole, action.endswith("stream")


async def answer(exchange: Exchange) -> None:
    """A Bedrock Runtime request: its SigV4 signature checked against the upstream's
    `aws_credentials` (a 403 `InvalidSignatureException` when it does not verify, as AWS answers),
    then the script; the model is the path's."""
    received, upstream, send = exchange.received, exchange.upstream, exchange.send
    script = upstream.next_script(unquote(received.path[len(_PATH) :].partition("/")[0]))
    if upstream.aws_credentials is not None:
        problem = signature_problem(
            received.method,
            received.raw_path,
            received.query,
            received.headers,
            received.body,
            upstream.aws_credentials,
        )
        received.signature_problem = problem
        if problem is not None:
            status, body, head = error(403, problem, "InvalidSignatureException")
            await send_json(send, status, body, head)
            return
    if script.delay:
        await asyncio.sleep(script.delay)
    if script.status >= 400 or script.error is not None or script.body is not None:
        if script.body is not None:
            status, body, head = script.status, script.body, []
        else:
            status, body, head = error_for(script)
        extra = [(k.lower().encode(), v.encode()) for k, v in script.headers.items()]
        await send_json(send, status, body, head + extra)
        return
    events, whole, streamed = reply(received.path, exchange.data, script)
    if not streamed:
        if script.reset_after == 0:
            raise Reset("scripted reset before the response")
        await send_json(send, 200, json.dumps(whole).encode(), [])
        return
    async with upstream.watching(exchange.receive) as gone:
        head = [(b"content-type", b"application/vnd.amazon.eventstream"), (b"x-amzn-requestid", b"scripted")]
        await send({"type": "http.response.start", "status": 200, "headers": head})
        await send_stream(send, script, events, gone, stream_exception)


#: Bedrock Runtime's paths: the model is in the path.
_PATH = "/model/"
register(ScriptedFormat("bedrock", lambda path: path.startswith(_PATH), answer))
