"""Anthropic wire format: the Messages API, JSON and SSE."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from interlock.core.call import Call, Reply
from interlock.core.views import Event, RequestView, ResponseView, TextSlot, TokenUsage, ToolCall
from interlock.protocols.base import (
    Adapter,
    BadRequest,
    ResponseSummary,
    StreamText,
    Unmetered,
    _json_headers,
    body_model,
    json_object_body,
    json_strings,
    token_count,
)
from interlock.protocols.conversation import ChatMessage, anthropic_request, anthropic_response, exchange
from interlock.protocols.reassemble import anthropic_message

_PARAMS = ("max_tokens", "temperature", "top_p", "top_k", "stop_sequences", "tool_choice", "thinking")

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
}


def _blocks(content: Any, path: tuple[str | int, ...], role: str, view: RequestView | None = None) -> list[TextSlot]:
    """The texts of a content (a string or a list of blocks); a request's `image` and `document`
    blocks (a tool result's too) listed in `view.media`, as interlock cannot read them."""
    if isinstance(content, str):
        return [TextSlot(path, content, role)]
    slots: list[TextSlot] = []
    for i, block in enumerate(content if isinstance(content, list) else []):
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            slots.append(TextSlot((*path, i, "text"), block["text"], role))
        elif kind == "tool_result":
            slots += _blocks(block.get("content"), (*path, i, "content"), "tool_result", view)
        elif kind in ("image", "document") and view is not None:
            view.media_part((*path, i), kind)
        # tool_use input is a JSON object, not text: scanned through its string leaves.
        elif kind == "tool_use" and isinstance(block.get("input"), dict):
            slots += json_strings(block["input"], (*path, i, "input"), "tool_args")
    return slots


def read_messages_body(data: dict[str, Any], view: RequestView) -> None:
    """A Messages API request body read into `view`: a chat, its parameters, the texts of its system
    prompt and messages (where they are, whose), the tools offered; a malformed one refused (400).
    Bedrock's InvokeModel carries the same body for Anthropic models (`bedrock.py` reads it here)."""
    view.operation = "chat"
    view.params = {k: data[k] for k in _PARAMS if k in data}
    view.texts += _blocks(data.get("system"), ("system",), "system")
    messages = data.get("messages")
    if not isinstance(messages, list):
        raise BadRequest("`messages` must be a list", "invalid_request")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"messages.{i} must be an object", "invalid_request")
        view.texts += _blocks(message.get("content"), ("messages", i, "content"), str(message.get("role")), view)
    view.tools = _tool_names(data.get("tools"))


def _tool_names(tools: Any) -> list[str]:
    """Names of the offered tools; refused (400) unless `tools` is a list of objects with string names."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise BadRequest("`tools` must be a list", "invalid_request")
    names: list[str] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise BadRequest(f"tools.{i} must be an object", "invalid_request")
        name = tool.get("name")
        if name is not None and not isinstance(name, str):
            raise BadRequest(f"tools.{i}.name must be a string", "invalid_request")
        if name is not None:
            names.append(name)
    return names


def _usage_object(view: ResponseView) -> dict[str, Any] | None:
    """The response's `usage`: a stream's `message_start` usage updated by each `message_delta`'s
    (which repeats only the counts that changed), else the body's."""
    if view.call.stream:
        found = view.adapter.stream_usage(view)  # folded as the events passed (`fold_usage`)
        return found if isinstance(found, dict) else None
    data = view.message
    usage = data.get("usage") if isinstance(data, dict) else None
    return usage if isinstance(usage, dict) else None


def _check_tool_choice(choice: Any) -> None:
    if choice is None:
        return
    if not isinstance(choice, dict):
        raise BadRequest("`tool_choice` must be an object", "invalid_request")
    if choice.get("name") is not None and not isinstance(choice["name"], str):
        raise BadRequest("tool_choice.name must be a string", "invalid_request")


def _named(tool: Any, names: set[str]) -> bool:
    return isinstance(tool, dict) and isinstance(tool.get("name"), str) and tool["name"] in names


class AnthropicAdapter(Adapter):
    name = "anthropic"
    title = "Anthropic"
    base_url_env = "ANTHROPIC_BASE_URL"
    json_body = True
    key_header = "x-api-key"
    key_prefix = ""
    stream_end_markers = (b"event: message_stop",)
    provider_name = "anthropic"
    price_provider = "anthropic"
    default_path = "/v1/messages"
    model_api = True
    opaque = False
    stream_rescue = True
    #: Anthropic continues a trailing assistant message; the OpenAI-compatible servers' other ways
    #: (`prefix`, `continue_final_message`) are not its.
    prefills = frozenset({"assistant", "none"})
    default_prefill = "assistant"

    # -- reading a response (the protocols' helper modules hold the format's details) ------------

    def reassemble(self, events: list[dict[str, Any]]) -> Any:
        return anthropic_message(events)

    def conversation(self, request: Any, response: Any) -> list[ChatMessage]:
        messages = anthropic_request(request) if isinstance(request, dict) else []
        return exchange(messages, anthropic_response(response) if isinstance(response, dict) else [])

    def read_summary(self, data: Any, summary: ResponseSummary) -> None:
        if not isinstance(data, dict):
            return
        message = data.get("message") if data.get("type") == "message_start" else data
        if isinstance(message, dict):
            summary.take(message.get("id"), message.get("model"))
            if isinstance(message.get("stop_reason"), str):
                summary.finish_reasons = [message["stop_reason"]]
        delta = data.get("delta")
        if (
            data.get("type") == "message_delta"
            and isinstance(delta, dict)
            and isinstance(delta.get("stop_reason"), str)
        ):
            summary.finish_reasons = [delta["stop_reason"]]

    def sample_body(
        self, path: str, text: str, model: str | None, tools: Sequence[str], tool: tuple[str, Any] | None = None
    ) -> dict[str, Any] | None:
        body: dict[str, Any] = {"model": model} if model is not None else {}
        body.update(max_tokens=1024, messages=[{"role": "user", "content": text}])
        if tools:
            body["tools"] = [{"name": n, "input_schema": {"type": "object"}} for n in tools]
        return body

    def parse(self, call: Call) -> RequestView:
        if call.method != "POST":
            return RequestView(operation="http")
        data = json_object_body(call)
        model = body_model(data)
        view = RequestView(operation="http", model=model, stream=data.get("stream") is True)
        view.params = {k: data[k] for k in _PARAMS if k in data}
        if call.path.endswith("/messages") or call.path.endswith("/messages/count_tokens"):
            read_messages_body(data, view)
            _check_tool_choice(data.get("tool_choice"))
        return view

    def fold_usage(self, event: Event, found: Any) -> Any:
        # `message_start`'s usage, updated by each `message_delta`'s (which repeats only the counts
        # that changed).
        if '"usage"' not in event.data:
            return found
        data = event.json()
        if not isinstance(data, dict):
            return found
        usage = (data.get("message") or {}).get("usage") or data.get("usage")
        if not isinstance(usage, dict):
            return found
        return {**(found or {}), **{k: v for k, v in usage.items() if v is not None}}

    def unmetered(self, call: Call) -> Unmetered | None:
        if call.method == "POST" and call.path.endswith("/messages/count_tokens"):
            # Its answer is `{"input_tokens": N}`, a count, not usage; Anthropic documents token
            # counting as free (limited by a request rate only).
            return Unmetered(True, "Anthropic's token counting (messages/count_tokens) is free")
        return None

    def usage(self, call: Call) -> tuple[int | None, int | None]:
        usage = self.memoized(call, "usage", _usage_object)
        if usage is None:
            return None, None
        input_tokens, output_tokens = usage.get("input_tokens"), usage.get("output_tokens")
        return (
            input_tokens if isinstance(input_tokens, int) else None,
            output_tokens if isinstance(output_tokens, int) else None,
        )

    def token_usage(self, call: Call) -> TokenUsage | None:
        usage = self.memoized(call, "usage", _usage_object)
        if usage is None:
            return None
        # `input_tokens` is only what was neither read from nor written to the prompt cache.
        cache_read = token_count(usage.get("cache_read_input_tokens"))
        cache_write = token_count(usage.get("cache_creation_input_tokens"))
        return TokenUsage(
            input=token_count(usage.get("input_tokens")) + cache_read + cache_write,
            output=token_count(usage.get("output_tokens")),
            cache_read=cache_read,
            cache_write=cache_write,
        )

    def response_texts(self, data: Any) -> list[TextSlot]:
        if not isinstance(data, dict):
            return []
        return _blocks(data.get("content"), ("content",), "assistant")

    def response_tool_calls(self, data: Any) -> list[ToolCall]:
        if not isinstance(data, dict):
            return []
        return [
            ToolCall(str(b.get("name")), json.dumps(b.get("input", {})), b.get("id"))
            for b in data.get("content") or []
            if isinstance(b, dict) and b.get("type") == "tool_use"
        ]

    def error_reply(self, status: int, code: str, message: str, *, retryable: bool = True) -> Reply:
        error = {"type": _ERROR_TYPES.get(status, "api_error"), "message": message, "code": code}
        return Reply(status, json.dumps({"type": "error", "error": error}).encode(), _json_headers(retryable))

    def stream_error_event(self, code: str, message: str) -> bytes:
        error = {"type": "api_error", "message": message, "code": code}
        return b"event: error\ndata: " + json.dumps({"type": "error", "error": error}).encode() + b"\n\n"

    # -- policy (interlock/policies/stage.py) ---------------------------------------------------

    def strip_tools(self, data: Any, names: set[str]) -> list[str]:
        tools = data.get("tools") if isinstance(data, dict) else None
        if not isinstance(tools, list):
            return []
        removed = [t["name"] for t in tools if _named(t, names)]
        if not removed:
            return []
        kept = [t for t in tools if not _named(t, names)]
        choice = data.get("tool_choice")
        chosen = choice.get("name") if isinstance(choice, dict) else None
        if isinstance(choice, dict) and (
            (isinstance(chosen, str) and chosen in names) or (not kept and choice.get("type") != "none")
        ):
            data.pop("tool_choice")
        if kept:
            data["tools"] = kept
        else:
            data.pop("tools")
        return removed

    def set_param(self, data: Any, name: str, value: Any, operation: str) -> list[tuple[str, Any, Any]]:
        if not isinstance(data, dict):
            return []
        old = data.get(name)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if number and isinstance(old, (int, float)) and not isinstance(old, bool):
            if old <= value:
                return []
        elif name in data and old == value:
            return []
        data[name] = value
        return [(name, old, value)]

    def stream_tool_names(self, event: Any) -> list[str]:
        # content_block_start carries the tool's name; its input follows in input_json_delta events.
        if event.event not in (None, "content_block_start") or '"tool_use"' not in event.data:
            return []
        message = event.json()
        block = message.get("content_block") if isinstance(message, dict) else None
        if (
            isinstance(block, dict)
            and block.get("type") in ("tool_use", "server_tool_use")
            and isinstance(block.get("name"), str)
        ):
            return [block["name"]]
        return []

    # -- guardrails (interlock/guardrails/guardstream.py) ---------------------------------------

    def stream_keepalive(self, event: str | None, data: Any) -> bool:
        return event == "ping" or (isinstance(data, dict) and data.get("type") == "ping")

    def stream_texts(self, event: str | None, data: Any) -> list[StreamText]:
        if not isinstance(data, dict):
            return []
        kind, index = data.get("type"), data.get("index")
        if kind == "content_block_delta" and isinstance(data.get("delta"), dict):
            delta = data["delta"]
            if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                return [StreamText(f"content.{index}", ("delta", "text"), delta["text"])]
            if delta.get("type") == "input_json_delta" and isinstance(delta.get("partial_json"), str):
                return [
                    StreamText(
                        f"content.{index}.input", ("delta", "partial_json"), delta["partial_json"], json_text=True
                    )
                ]
        elif kind == "content_block_start" and isinstance(data.get("content_block"), dict):
            block = data["content_block"]
            if block.get("type") == "text" and isinstance(block.get("text"), str) and block["text"]:
                return [StreamText(f"content.{index}", ("content_block", "text"), block["text"], delta=False)]
        return []
