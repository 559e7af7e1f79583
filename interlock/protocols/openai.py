"""OpenAI wire format: chat completions, the Responses API, embeddings; JSON and SSE.

Here: the adapter and the response side (usage and asking a chat stream for it, texts, tool calls,
stream events, errors). The request side (a body read into its view, the policy's edits) is
`openai_request.py`."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from interlock.core.call import Call, Reply
from interlock.core.views import Event, RequestView, ResponseView, TextSlot, TokenUsage, ToolCall
from interlock.protocols import openai_request as request_side  # `openai_request` is conversation.py's
from interlock.protocols.base import (
    STREAM_USAGE,
    USAGE_ASKED,
    Adapter,
    ResponseSummary,
    StreamText,
    Unmetered,
    _json_headers,
    dump_body,
    json_object_body,
    token_count,
)
from interlock.protocols.conversation import ChatMessage, exchange, openai_request, openai_response
from interlock.protocols.openai_request import content_texts
from interlock.protocols.reassemble import openai_message

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


#: Endpoints OpenAI does not bill, whose answers carry no usage (platform.openai.com pricing: the
#: moderation models are free; counting a Responses input is not a model call).
_FREE = (
    ("/moderations", "OpenAI's moderations endpoint is free"),
    ("/responses/input_tokens", "OpenAI's input token count (responses/input_tokens) is free"),
)


class OpenAIAdapter(Adapter):
    name = "openai"
    title = "OpenAI"
    base_url_env = "OPENAI_BASE_URL"
    json_body = True
    # A Responses stream ends with one of its three final events (OpenAI "Streaming events").
    stream_end_markers = (
        b"data: [DONE]",
        b"event: response.completed",
        b"event: response.incomplete",
        b"event: response.failed",
    )
    provider_name = "openai"
    price_provider = "openai"
    default_path = "/chat/completions"
    model_api = True
    opaque = False
    stream_rescue = True
    asks_stream_usage = True

    # -- reading a response (the protocols' helper modules hold the format's details) ------------

    def reassemble(self, events: list[dict[str, Any]]) -> Any:
        return openai_message(events)

    def conversation(self, request: Any, response: Any) -> list[ChatMessage]:
        messages = openai_request(request) if isinstance(request, dict) else []
        return exchange(messages, openai_response(response) if isinstance(response, dict) else [])

    def read_summary(self, data: Any, summary: ResponseSummary) -> None:
        if not isinstance(data, dict):
            return
        # A Responses API event wraps the response; chat completions (and chunks) are flat.
        response: dict[str, Any] = data["response"] if isinstance(data.get("response"), dict) else data
        summary.take(response.get("id"), response.get("model"))
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

    def sample_body(
        self, path: str, text: str, model: str | None, tools: Sequence[str], tool: tuple[str, Any] | None = None
    ) -> dict[str, Any] | None:
        return request_side.sample_body(path, text, model, tools)

    def parse(self, call: Call) -> RequestView:
        if call.method != "POST":
            return RequestView(operation="http")
        return request_side.request_view(json_object_body(call), call.path)

    def fold_usage(self, event: Event, found: Any) -> Any:
        # The last usage object wins: chat's `include_usage` chunk, Responses' `response.completed`.
        # (Every other chunk of an `include_usage` stream has `"usage":null`: not parsed for it.)
        if not _reports_usage(event.data):
            return found
        data = event.json()
        if not isinstance(data, dict):
            return found
        usage = data.get("usage") or (data.get("response") or {}).get("usage")
        return usage if isinstance(usage, dict) else found

    def with_stream_usage(self, call: Call, body: bytes) -> bytes | None:
        # A chat stream reports its usage only with `stream_options.include_usage` (the openai SDK's
        # default leaves it out): without it a budget could not count the call.
        view = call.view
        data = call.request_json
        if view is None or not view.stream or view.operation != "chat" or not isinstance(data, dict):
            return None
        options = data.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            return None  # the agent asked: its usage chunk is its own
        if "stream_options" not in data:
            # The usual case: one member added to the bytes as they are (no second serialisation of a
            # long conversation on the hot path).
            spliced = _with_member(body, b'"stream_options":{"include_usage":true}')
            if spliced is not None:
                return spliced
        # Rare (`stream_options` without `include_usage: true`, or a body not plainly a UTF-8 object):
        # read back what this attempt sends (a model alias may have changed it) and write it again.
        sent = json.loads(body)
        kept = options if isinstance(options, dict) else {}
        return dump_body({**sent, "stream_options": {**kept, "include_usage": True}})

    def unasked(self, call: Call) -> Callable[[Event], Event | None] | None:
        return _unasked if call.meta.get(STREAM_USAGE) == USAGE_ASKED else None

    def unmetered(self, call: Call) -> Unmetered | None:
        if call.method != "POST":
            return None
        path = call.path
        for ending, reason in _FREE:
            if path.endswith(ending):
                return Unmetered(True, reason)
        return None

    def usage(self, call: Call) -> tuple[int | None, int | None]:
        usage = self.memoized(call, "usage", _usage_object)
        return (None, None) if usage is None else _read_usage(usage)

    def token_usage(self, call: Call) -> TokenUsage | None:
        usage = self.memoized(call, "usage", _usage_object)
        if usage is None:
            return None
        input_tokens, output_tokens = _read_usage(usage)
        # Chat names the details `prompt_tokens_details` / `completion_tokens_details`, Responses
        # `input_tokens_details` / `output_tokens_details`; cached tokens are part of the input.
        inputs = _details(usage, "prompt_tokens_details", "input_tokens_details")
        outputs = _details(usage, "completion_tokens_details", "output_tokens_details")
        return TokenUsage(
            input=input_tokens or 0,
            output=output_tokens or 0,
            cache_read=token_count(inputs.get("cached_tokens")),
            cache_write=token_count(inputs.get("cache_write_tokens")),
            reasoning=token_count(outputs.get("reasoning_tokens")),
        )

    def response_texts(self, data: Any) -> list[TextSlot]:
        slots: list[TextSlot] = []
        if not isinstance(data, dict):
            return slots
        for i, choice in enumerate(data.get("choices") or []):
            message = choice.get("message") if isinstance(choice, dict) else None
            if message is None and isinstance(choice, dict) and isinstance(choice.get("text"), str):
                slots.append(TextSlot(("choices", i, "text"), choice["text"], "assistant"))  # legacy completions
            if isinstance(message, dict):
                if isinstance(message.get("content"), str):
                    slots.append(TextSlot(("choices", i, "message", "content"), message["content"], "assistant"))
                for j, tool_call in enumerate(message.get("tool_calls") or []):
                    function = tool_call.get("function") or {}
                    if isinstance(function.get("arguments"), str):
                        slots.append(
                            TextSlot(
                                ("choices", i, "message", "tool_calls", j, "function", "arguments"),
                                function["arguments"],
                                "tool_args",
                            )
                        )
        for i, item in enumerate(data.get("output") or []):
            if not isinstance(item, dict):
                continue
            if item.get("type") == "message":
                slots += content_texts(item.get("content"), ("output", i, "content"), "assistant")
            elif item.get("type") == "function_call" and isinstance(item.get("arguments"), str):
                slots.append(TextSlot(("output", i, "arguments"), item["arguments"], "tool_args"))
        return slots

    def response_tool_calls(self, data: Any) -> list[ToolCall]:
        calls: list[ToolCall] = []
        if not isinstance(data, dict):
            return calls
        for choice in data.get("choices") or []:
            message = choice.get("message") if isinstance(choice, dict) else None
            for tool_call in (message or {}).get("tool_calls") or []:
                function = tool_call.get("function") or {}
                calls.append(
                    ToolCall(str(function.get("name")), str(function.get("arguments", "")), tool_call.get("id"))
                )
        for item in data.get("output") or []:
            if isinstance(item, dict) and item.get("type") == "function_call":
                calls.append(ToolCall(str(item.get("name")), str(item.get("arguments", "")), item.get("call_id")))
        return calls

    def error_reply(self, status: int, code: str, message: str, *, retryable: bool = True) -> Reply:
        error = {"message": message, "type": _ERROR_TYPES.get(status, "api_error"), "param": None, "code": code}
        return Reply(status, json.dumps({"error": error}).encode(), _json_headers(retryable))

    def stream_error_event(self, code: str, message: str) -> bytes:
        # The openai SDK raises APIError when a `data:` payload carries an "error" key.
        error = {"message": message, "type": "api_error", "param": None, "code": code}
        return b"data: " + json.dumps({"error": error}).encode() + b"\n\n"

    # -- policy (interlock/policies/stage.py) ---------------------------------------------------

    def strip_tools(self, data: Any, names: set[str]) -> list[str]:
        return request_side.strip_tools(data, names)

    def set_param(self, data: Any, name: str, value: Any, operation: str) -> list[tuple[str, Any, Any]]:
        return request_side.set_param(data, name, value, operation)

    def stream_tool_names(self, event: Any) -> list[str]:
        if '"name"' not in event.data:
            return []
        message = event.json()
        if not isinstance(message, dict):
            return []
        names: list[str] = []
        for choice in message.get("choices") or []:  # chat: delta.tool_calls[].function.name
            delta = choice.get("delta") if isinstance(choice, dict) else None
            for tool_call in (delta or {}).get("tool_calls") or []:
                function = tool_call.get("function") if isinstance(tool_call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("name"), str):
                    names.append(function["name"])
        kind = message.get("type")
        if kind in ("response.output_item.added", "response.output_item.done"):  # Responses API
            item = message.get("item")
            if isinstance(item, dict) and item.get("type") == "function_call" and isinstance(item.get("name"), str):
                names.append(item["name"])
        elif kind in ("response.completed", "response.incomplete", "response.in_progress"):
            names += [c.name for c in self.response_tool_calls(message.get("response"))]
        return names

    # -- guardrails (interlock/guardrails/guardstream.py) ---------------------------------------

    def stream_keepalive(self, event: str | None, data: Any) -> bool:
        # A chat chunk whose choices have no finish reason and an empty delta (some servers send one
        # to keep the connection alive).
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices:
            return False
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("finish_reason") is not None:
                return False
            delta = choice.get("delta")
            if not isinstance(delta, dict) or any(k != "role" and v for k, v in delta.items()):
                return False
        return True

    def stream_texts(self, event: str | None, data: Any) -> list[StreamText]:
        if not isinstance(data, dict):
            return []
        kind = data.get("type")
        if isinstance(kind, str) and kind.startswith("response."):
            return _responses_stream_texts(self, kind, data)
        texts: list[StreamText] = []
        for i, choice in enumerate(data.get("choices") or []):
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if delta is None and isinstance(choice, dict) and isinstance(choice.get("text"), str):
                # A legacy completions chunk: its text piece sits on the choice.
                index = choice.get("index", i)
                texts.append(StreamText(f"choices.{index}.text", ("choices", i, "text"), choice["text"]))
            if not isinstance(delta, dict):
                continue
            index = choice.get("index", i)
            if isinstance(delta.get("content"), str):
                texts.append(
                    StreamText(f"choices.{index}.content", ("choices", i, "delta", "content"), delta["content"])
                )
            for j, tool_call in enumerate(delta.get("tool_calls") or []):
                function = tool_call.get("function") if isinstance(tool_call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    texts.append(
                        StreamText(
                            f"choices.{index}.tool_calls.{tool_call.get('index', j)}",
                            ("choices", i, "delta", "tool_calls", j, "function", "arguments"),
                            function["arguments"],
                            json_text=True,
                        )
                    )
        return texts


#: A `usage` member whose value is not null (JSON allows whitespace around the colon; `n` starts
#: only null).
_USAGE_VALUE = re.compile(r'"usage"\s*:\s*[^\sn]')


def _reports_usage(data: str) -> bool:
    """Whether an event's data may hold a usage object: a cheap test before its JSON is read."""
    at = data.find('"usage"')
    while at >= 0:  # matched where the key is, not searched for: every chunk of an asked stream has one
        if _USAGE_VALUE.match(data, at) is not None:
            return True
        at = data.find('"usage"', at + 7)
    return False


def _usage_chunk(event: Event) -> bool:
    """The chunk `include_usage` adds before `[DONE]`: no choices, a usage object (OpenAI's API
    reference, "stream_options"). Azure's opening prompt-filter chunk also has no choices, and no usage."""
    if not _reports_usage(event.data):
        return False
    data = event.json()
    return isinstance(data, dict) and data.get("choices") == [] and isinstance(data.get("usage"), dict)


#: After a `"usage"` key: its null value, up to the comma or brace that follows it.
_NULL_VALUE = re.compile(rb"\s*:\s*null(?=\s*[,}])")
#: The comma (and whitespace) that follows a first member.
_COMMA = re.compile(rb"\s*,\s*")


def _unasked(event: Event) -> Event | None:
    """An event of a stream interlock asked for usage, as the agent gets it: the usage chunk not at
    all, the others without the `"usage": null` member the ask added to them (byte for byte the
    chunk the agent gets unasked). A `"usage"` followed by `:` is a key (a quote inside a JSON string
    is escaped); the value `"usage"` is not followed by one."""
    raw = event.raw
    at = raw.find(b'"usage"')
    while at >= 0:
        null = _NULL_VALUE.match(raw, at + 7)
        if null is not None:
            # (Only the bytes go on: nothing reads an event after the relay picks what the agent is sent.)
            head = raw[:at].rstrip()
            if head.endswith(b","):  # `..., "usage": null}`: the comma before it goes with it
                return Event(head[:-1] + raw[null.end() :], event.event, event.data)
            comma = _COMMA.match(raw, null.end())  # `{"usage": null, ...`: the comma after it
            if comma is not None:
                return Event(raw[:at] + raw[comma.end() :], event.event, event.data)
            return event
        at = raw.find(b'"usage"', at + 7)
    return None if _usage_chunk(event) else event


def _with_member(body: bytes, member: bytes) -> bytes | None:
    """`body`, a JSON object in UTF-8, with `member` added last; None when the bytes are not plainly
    one (json.loads also reads UTF-16 and -32, and a byte-order mark)."""
    end = len(body.rstrip())
    if end < 2 or body[end - 1] != 0x7D or (body[:1] != b"{" and body.lstrip()[:1] != b"{"):
        return None
    inner = body[: end - 1].rstrip()
    return inner + (b"" if inner.endswith(b"{") else b",") + member + b"}" + body[end:]


def _responses_stream_texts(adapter: OpenAIAdapter, kind: str, data: dict[str, Any]) -> list[StreamText]:
    """Texts in a Responses API stream event: text and argument deltas, and the whole texts repeated
    by the `.done` and `response.completed` events."""
    key = f"output.{data.get('output_index')}"
    if kind == "response.output_text.delta" and isinstance(data.get("delta"), str):
        return [StreamText(f"{key}.{data.get('content_index')}", ("delta",), data["delta"])]
    if kind == "response.function_call_arguments.delta" and isinstance(data.get("delta"), str):
        return [StreamText(f"{key}.arguments", ("delta",), data["delta"], json_text=True)]
    if kind == "response.output_text.done" and isinstance(data.get("text"), str):
        return [StreamText(f"{key}.{data.get('content_index')}", ("text",), data["text"], delta=False)]
    if kind == "response.function_call_arguments.done" and isinstance(data.get("arguments"), str):
        return [StreamText(f"{key}.arguments", ("arguments",), data["arguments"], delta=False, json_text=True)]
    part = data.get("part")
    if kind.startswith("response.content_part.") and isinstance(part, dict) and isinstance(part.get("text"), str):
        return [StreamText(f"{key}.{data.get('content_index')}", ("part", "text"), part["text"], delta=False)]
    if kind.startswith("response.output_item.") and isinstance(data.get("item"), dict):
        slots = adapter.response_texts({"output": [data["item"]]})
        return [
            StreamText(
                f"{key}.{'.'.join(map(str, s.path[2:]))}", ("item", *s.path[2:]), s.text, False, s.role == "tool_args"
            )
            for s in slots
        ]
    if isinstance(data.get("response"), dict):  # response.completed / .incomplete / .failed
        return [
            StreamText(
                f"response.{'.'.join(map(str, s.path))}", ("response", *s.path), s.text, False, s.role == "tool_args"
            )
            for s in adapter.response_texts(data["response"])
        ]
    return []


def _usage_object(view: ResponseView) -> dict[str, Any] | None:
    """The response's `usage` object: a stream's last one (chat: the `include_usage` chunk;
    Responses: `response.completed`'s), else the body's."""
    if view.call.stream:
        found = view.adapter.stream_usage(view)  # folded as the events passed (`fold_usage`)
        return found if isinstance(found, dict) else None
    data = view.message
    usage = data.get("usage") if isinstance(data, dict) else None
    return usage if isinstance(usage, dict) else None


def _details(usage: dict[str, Any], *names: str) -> dict[str, Any]:
    for name in names:
        value = usage.get(name)
        if isinstance(value, dict):
            return value
    return {}


def _read_usage(usage: dict[str, Any]) -> tuple[int | None, int | None]:
    input_tokens = usage.get("prompt_tokens", usage.get("input_tokens"))
    output_tokens = usage.get("completion_tokens", usage.get("output_tokens"))
    return (
        input_tokens if isinstance(input_tokens, int) else None,
        output_tokens if isinstance(output_tokens, int) else None,
    )
