"""AWS Bedrock Runtime: Converse and ConverseStream (JSON; AWS event-stream framing), and InvokeModel /
InvokeModelWithResponseStream for Anthropic models on Bedrock (the Messages API body). This adapter
tells the two apart by the URL and hands each body to its reader: Converse's format is
`bedrock_converse.py`, InvokeModel's is the anthropic adapter's; the framing is `eventstream.py`.

The model is in the URL (`/model/{modelId}/converse`, percent-encoded as boto3 sends it). The agent
signs its request with SigV4 for interlock's host; that signature is worthless upstream and is a
credential: it is never relayed nor recorded, and each upstream request is signed again with the
route's AWS credentials (`sign`). Errors are Bedrock's: a JSON `{"message": ...}` and the error type
in `x-amzn-errortype`; in a stream, an exception message. Sources: the Bedrock Runtime API reference
(Converse, ConverseStream, InvokeModel), botocore's `bedrock-runtime` service-2.json and its
event-stream parser and tests.
"""

from __future__ import annotations

import base64
import functools
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import quote, unquote

from interlock.core.call import Call, Headers, Reply
from interlock.core.views import Event, RequestView, TextSlot, TokenUsage, ToolCall
from interlock.protocols import bedrock_converse as converse
from interlock.protocols.anthropic import AnthropicAdapter, read_messages_body
from interlock.protocols.base import (
    Adapter,
    BadRequest,
    ResponseSummary,
    SigningTarget,
    StreamText,
    dump_body,
    json_object_body,
    response_json,
    token_count,
)
from interlock.protocols.conversation import ChatMessage
from interlock.protocols.eventstream import (
    MessageSplitter,
    chunk_message,
    event_message,
    exception_message,
    iter_messages,
)
from interlock.protocols.sse import EventSplitter

_PREFIX = "/model/"
_OPERATIONS = {
    "converse": ("chat", False),
    "converse-stream": ("chat", True),
    "invoke": ("messages", False),
    "invoke-with-response-stream": ("messages", True),
}
#: Bedrock's error types by status (service-2.json's exceptions).
_ERROR_TYPES = {
    400: "ValidationException",
    401: "AccessDeniedException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    413: "ValidationException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    502: "InternalServerException",
    503: "ServiceUnavailableException",
    504: "ModelTimeoutException",
}
#: What SigV4 puts on a request: the agent's copy signs for interlock's host, never relayed.
_SIGNATURE_HEADERS = frozenset(
    {"authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256", "x-api-key"}
)
_ANTHROPIC = AnthropicAdapter()


def model_and_action(path: str) -> tuple[str, str] | None:
    """The model id (decoded) and the action of a Bedrock Runtime path, or None."""
    if not path.startswith(_PREFIX):
        return None
    model, _, action = path[len(_PREFIX) :].partition("/")
    if not model or action not in _OPERATIONS:
        return None
    return unquote(model), action


def _anthropic_view(data: dict[str, Any], model: str, stream: bool) -> RequestView:
    """InvokeModel's Anthropic Messages body, read as the anthropic adapter reads one."""
    view = RequestView(operation="chat", model=model, stream=stream)
    read_messages_body(data, view)
    return view


def _invoke_events(events: Iterator[Event]) -> Iterator[dict[str, Any]]:
    """InvokeModelWithResponseStream's Anthropic events (a `chunk` event's data is the one it carries)."""
    for event in events:
        if event.event != "chunk":
            continue
        inner = event.json()
        if isinstance(inner, dict):
            yield inner


class BedrockAdapter(Adapter):
    name = "bedrock"
    title = "AWS Bedrock Runtime"
    base_url_env = "AWS_ENDPOINT_URL_BEDROCK_RUNTIME"
    json_body = True
    opaque = False
    model_api = True
    provider_name = "aws.bedrock"
    price_provider = "aws"
    default_path = "/model/scripted-model/converse"
    # The route's credentials sign each request (`sign`); no key header is written.
    key_header = ""
    key_prefix = ""
    stream_media_types = ("application/vnd.amazon.eventstream",)
    # ConverseStream's last event is `metadata` (usage), matched as a whole header, name and value;
    # InvokeModelWithResponseStream's is the chunk carrying Anthropic's `message_stop`, matched by
    # the base64 of `{"type":"message_stop"` (Bedrock writes the event's JSON compact).
    stream_end_markers = (
        b"\x0b:event-type\x07\x00\x08metadata",
        b'{"bytes":"' + base64.b64encode(b'{"type":"message_stop"')[:28],
    )
    markers_at_line_start = False
    prefills = frozenset({"none"})

    # -- request ---------------------------------------------------------------------------------

    def parse(self, call: Call) -> RequestView:
        found = model_and_action(call.path)
        if call.method != "POST" or found is None:
            return RequestView(operation="http")
        model, action = found
        operation, stream = _OPERATIONS[action]
        data = json_object_body(call)
        if operation == "messages":  # an Anthropic Messages body, the model in the URL
            return _anthropic_view(data, model, stream)
        return converse.converse_view(data, model, stream)

    def rewrite_model(self, data: Any, path: str, model: str) -> tuple[Any, str] | None:
        found = model_and_action(path)
        if found is None or found[0] == model:
            return None
        return data, f"{_PREFIX}{quote(model, safe='')}/{found[1]}"

    def sign(self, method: str, url: str, headers: Headers, body: bytes, upstream: SigningTarget) -> Headers:
        """The headers with a SigV4 signature for `url` made with the route's AWS credentials:
        `api_key` as `ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]`, else botocore's credential
        chain (environment, shared files, container or instance role). Only the host, the content
        type and the x-amz- headers are signed, so what the HTTP client adds cannot break it."""
        # Optional dependency: botocore is the `bedrock` extra (~350 ms to import, measured).
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        credentials: Any
        if upstream.api_key:
            access, _, rest = upstream.api_key.partition(":")
            secret, _, token = rest.partition(":")
            credentials = Credentials(access, secret, token or None)
        else:
            credentials = _chain_session().get_credentials()
            if credentials is None:
                raise BadRequest("no AWS credentials to sign the upstream request with", "no_credentials", 502)
        region = upstream.region or _region(upstream.url)
        signed = [(k, v) for k, v in headers if k == "content-type"]
        request = AWSRequest(method=method, url=url, data=body, headers=dict(signed))
        SigV4Auth(credentials, "bedrock", region).add_auth(request)
        added = [(k.lower(), v) for k, v in request.headers.items() if k.lower() != "content-type"]
        # The key header is "" (`upstream_key` writes the route's credentials under it): never sent.
        return [h for h in headers if h[0] not in _SIGNATURE_HEADERS and h[0]] + added

    def sample_body(
        self, path: str, text: str, model: str | None, tools: Sequence[str], tool: tuple[str, Any] | None = None
    ) -> dict[str, Any] | None:
        return converse.sample_body(text, tools)

    # -- streams -----------------------------------------------------------------------------------

    def event_splitter(self) -> EventSplitter:
        return MessageSplitter()

    def iter_events(self, body: bytes) -> Iterator[Event]:
        return iter_messages(body)

    def event_json(self, event: Event) -> Any:
        """`{eventType: payload}`, as boto3 yields a stream's events."""
        payload = super().event_json(event)
        return {event.event: payload} if event.event and isinstance(payload, dict) else None

    def reassemble_events(self, events: Iterable[Event]) -> Any:
        listed = list(events)
        if any(e.event == "chunk" for e in listed):
            return _ANTHROPIC.reassemble(list(_invoke_events(iter(listed))))
        return super().reassemble_events(listed)

    def reassemble(self, events: list[dict[str, Any]]) -> Any:
        return converse.converse_message(events)

    def stream_head_and_tail(self, body: bytes, head: int, tail: int) -> bytes:
        events = list(self.iter_events(body))
        kept, size = [], 0
        for event in events:
            if size + len(event.raw) > head:
                break
            kept.append(event.raw)
            size += len(event.raw)
        return b"".join(kept) + b"".join(e.raw for e in events[-8:] if e.raw not in kept)

    def stream_event(self, event: str | None, data: Any) -> bytes:
        if event == "chunk":
            return chunk_message(dump_body(data))
        return event_message(event or "", dump_body(data))

    def stream_keepalive(self, event: str | None, data: Any) -> bool:
        return event == "chunk" and _ANTHROPIC.stream_keepalive(None, data)

    def stream_error_event(self, code: str, message: str) -> bytes:
        return exception_message("internalServerException", dump_body({"message": message, "code": code}))

    def stream_texts(self, event: str | None, data: Any) -> list[StreamText]:
        if event == "chunk":  # an Anthropic event: its texts where the anthropic adapter finds them
            return _ANTHROPIC.stream_texts(None, data)
        return converse.stream_texts(event, data)

    def stream_tool_names(self, event: Any) -> list[str]:
        if event.event == "chunk":  # InvokeModelWithResponseStream: an Anthropic event inside
            names: list[str] = []
            for inner in _invoke_events(iter([event])):
                names += _ANTHROPIC.stream_tool_names(Event(b"", inner.get("type"), event.data, inner))
            return names
        if event.event != "contentBlockStart" or '"toolUse"' not in event.data:
            return []
        try:
            use = event.json()["start"]["toolUse"]
        except (KeyError, TypeError):
            return []
        return [use["name"]] if isinstance(use, dict) and isinstance(use.get("name"), str) else []

    # -- response ------------------------------------------------------------------------------------

    def fold_usage(self, event: Event, found: Any) -> Any:
        if event.event == "chunk":  # InvokeModelWithResponseStream: the Anthropic event inside
            inner = event.json()
            return (
                _ANTHROPIC.fold_usage(Event(b"", None, event.data, inner), found) if isinstance(inner, dict) else found
            )
        if event.event == "metadata" and found is None:  # ConverseStream: its usage, once
            data = event.json()
            usage = data.get("usage") if isinstance(data, dict) else None
            return usage if isinstance(usage, dict) else found
        return found

    def _usage(self, call: Call) -> dict[str, Any] | None:
        if call.stream:
            found = self.memoized(call, "usage", self.stream_usage)
            return found if isinstance(found, dict) else None
        data = response_json(call)
        usage = data.get("usage") if isinstance(data, dict) else None
        return usage if isinstance(usage, dict) else None

    def _anthropic(self, call: Call) -> bool:
        found = model_and_action(call.path)
        return found is not None and _OPERATIONS[found[1]][0] == "messages"

    def usage(self, call: Call) -> tuple[int | None, int | None]:
        if self._anthropic(call):
            return _ANTHROPIC.usage(call) if not call.stream else self._invoke_usage(call)
        usage = self._usage(call)
        if usage is None:
            return None, None
        return token_count(usage.get("inputTokens")), token_count(usage.get("outputTokens"))

    def _invoke_usage(self, call: Call) -> tuple[int | None, int | None]:
        usage = self._usage(call)  # the Anthropic events' usage, folded as they passed
        if not isinstance(usage, dict):
            return None, None
        return token_count(usage.get("input_tokens")), token_count(usage.get("output_tokens"))

    def token_usage(self, call: Call) -> TokenUsage | None:
        if self._anthropic(call):
            if call.stream:
                i, o = self._invoke_usage(call)
                return None if i is None else TokenUsage(input=i, output=o or 0)
            return _ANTHROPIC.token_usage(call)
        usage = self._usage(call)
        if usage is None:
            return None
        # Bedrock's `inputTokens` leaves out the cache reads and writes (as Anthropic's does).
        cache_read = token_count(usage.get("cacheReadInputTokens"))
        cache_write = token_count(usage.get("cacheWriteInputTokens"))
        return TokenUsage(
            input=token_count(usage.get("inputTokens")) + cache_read + cache_write,
            output=token_count(usage.get("outputTokens")),
            cache_read=cache_read,
            cache_write=cache_write,
        )

    def response_texts(self, data: Any) -> list[TextSlot]:
        if not isinstance(data, dict):
            return []
        if "output" not in data:
            return _ANTHROPIC.response_texts(data)
        return converse.response_texts(data)

    def response_tool_calls(self, data: Any) -> list[ToolCall]:
        if not isinstance(data, dict):
            return []
        if "output" not in data:
            return _ANTHROPIC.response_tool_calls(data)
        return converse.response_tool_calls(data)

    def answer_shape_problem(self, data: Any) -> str | None:
        if not isinstance(data, dict):
            return "the body is not a JSON object"
        return converse.shape_problem(data) if "output" in data else None

    def conversation(self, request: Any, response: Any) -> list[ChatMessage]:
        if isinstance(request, dict) and "anthropic_version" in request:
            return _ANTHROPIC.conversation(request, response)
        return converse.conversation(request, response)

    def read_summary(self, data: Any, summary: ResponseSummary) -> None:
        if not isinstance(data, dict):
            return
        if isinstance(data.get("stopReason"), str):
            summary.finish_reasons = [data["stopReason"]]
        stop = data.get("messageStop")
        if isinstance(stop, dict) and isinstance(stop.get("stopReason"), str):
            summary.finish_reasons = [stop["stopReason"]]

    def error_reply(self, status: int, code: str, message: str, *, retryable: bool = True) -> Reply:
        kind = _ERROR_TYPES.get(status, "InternalServerException")
        headers: Headers = [("content-type", "application/json"), ("x-amzn-errortype", f"{kind}:")]
        if not retryable:
            headers.append(("x-should-retry", "false"))
        return Reply(status, dump_body({"message": message, "code": code}), headers)

    # -- policy ------------------------------------------------------------------------------------

    def strip_tools(self, data: Any, names: set[str]) -> list[str]:
        if not isinstance(data, dict):
            return []
        if "anthropic_version" in data:
            return _ANTHROPIC.strip_tools(data, names)
        return converse.strip_tools(data, names)

    def set_param(self, data: Any, name: str, value: Any, operation: str) -> list[tuple[str, Any, Any]]:
        if not isinstance(data, dict):
            return []
        if "anthropic_version" in data:
            return _ANTHROPIC.set_param(data, name, value, operation)
        return converse.set_param(data, name, value)


@functools.cache
def _chain_session() -> Any:
    """One botocore session for the credential chain: it reads the files once and refreshes role
    credentials (a container or instance role) before they expire."""
    # Optional dependency: botocore is the `bedrock` extra (~350 ms to import, measured).
    import botocore.session

    return botocore.session.get_session()


def _region(url: str) -> str:
    """The region in a Bedrock Runtime host (`bedrock-runtime.us-east-1.amazonaws.com`), else the
    environment's (AWS_REGION, AWS_DEFAULT_REGION), else us-east-1."""
    host = url.split("://", 1)[-1].split("/", 1)[0]
    parts = host.split(".")
    if len(parts) >= 4 and parts[0].startswith("bedrock-runtime"):
        return parts[1]
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
