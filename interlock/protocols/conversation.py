"""A recorded exchange as chat messages (system, user, assistant, tool calls and results), for reading.

The message types, and the helpers behind the adapters' `conversation`: the UI and loop detection
ask the adapter, so they never parse a wire format themselves. Each message says
where it sits in the request or response (`where`, in the notation PII findings use:
`request.messages[1]`), so findings can be placed on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class ChatToolCall:
    name: str
    arguments: str
    id: str | None = None


@dataclass(slots=True)
class ChatMessage:
    role: str  # "system", "user", "assistant", "tool"
    text: str = ""
    where: str = ""
    tool_calls: list[ChatToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    response: bool = False  # the model's answer (not part of the request)
    error: bool = False  # a tool result the agent marks as an error (Anthropic `is_error`)


def exchange(request: list[ChatMessage], answer: list[ChatMessage]) -> list[ChatMessage]:
    """A request's messages, then the answer's, marked as the model's."""
    for message in answer:
        message.response = True
    return request + answer


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    parts.append(part["text"])
                elif part.get("type") in ("image_url", "input_image", "image"):
                    parts.append("[image]")
        return "\n".join(parts)
    return json.dumps(content, ensure_ascii=False)


def _chat_tool_calls(message: dict[str, Any]) -> list[ChatToolCall]:
    """The tool calls of a chat completions message (request history or response)."""
    calls = message.get("tool_calls")
    out: list[ChatToolCall] = []
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):  # a recorded bad request may hold anything
            out.append(ChatToolCall(str(function.get("name")), str(function.get("arguments", "")), call.get("id")))
    return out


def openai_request(data: dict[str, Any]) -> list[ChatMessage]:
    out: list[ChatMessage] = []
    if isinstance(data.get("messages"), list):
        for i, message in enumerate(data["messages"]):
            if not isinstance(message, dict):
                continue
            role = str(message.get("role", "user"))
            role = "system" if role == "developer" else role
            out.append(
                ChatMessage(
                    role,
                    _text(message.get("content")),
                    f"request.messages[{i}]",
                    _chat_tool_calls(message),
                    message.get("tool_call_id"),
                    message.get("name"),
                )
            )
        return out
    # The Responses API.
    if isinstance(data.get("instructions"), str):
        out.append(ChatMessage("system", data["instructions"], "request.instructions"))
    items = data.get("input")
    if isinstance(items, str):
        out.append(ChatMessage("user", items, "request.input"))
    elif isinstance(items, list):
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            kind = item.get("type", "message")
            where = f"request.input[{i}]"
            if kind == "message":
                out.append(ChatMessage(str(item.get("role", "user")), _text(item.get("content")), where))
            elif kind == "function_call":
                call = ChatToolCall(str(item.get("name")), str(item.get("arguments", "")), item.get("call_id"))
                out.append(ChatMessage("assistant", "", where, [call]))
            elif kind == "function_call_output":
                out.append(ChatMessage("tool", _text(item.get("output")), where, tool_call_id=item.get("call_id")))
    return out


def openai_response(data: dict[str, Any]) -> list[ChatMessage]:
    out: list[ChatMessage] = []
    for i, choice in enumerate(data.get("choices") or []):
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        out.append(
            ChatMessage("assistant", _text(message.get("content")), f"response.choices[{i}]", _chat_tool_calls(message))
        )
    for i, item in enumerate(data.get("output") or []):
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            out.append(ChatMessage("assistant", _text(item.get("content")), f"response.output[{i}]"))
        elif item.get("type") == "function_call":
            call = ChatToolCall(str(item.get("name")), str(item.get("arguments", "")), item.get("call_id"))
            out.append(ChatMessage("assistant", "", f"response.output[{i}]", [call]))
    return out


def _anthropic_blocks(role: str, content: Any, where: str) -> list[ChatMessage]:
    if isinstance(content, str):
        return [ChatMessage(role, content, where)]
    message = ChatMessage(role, "", where)
    out = [message]
    texts: list[str] = []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            arguments = json.dumps(block.get("input", {}), ensure_ascii=False)
            message.tool_calls.append(ChatToolCall(str(block.get("name")), arguments, block.get("id")))
        elif kind == "tool_result":
            result = ChatMessage("tool", _text(block.get("content")), where, tool_call_id=block.get("tool_use_id"))
            result.error = block.get("is_error") is True
            out.append(result)
    message.text = "\n".join(texts)
    if not message.text and not message.tool_calls:
        out.remove(message)
    return out


def anthropic_request(data: dict[str, Any]) -> list[ChatMessage]:
    out: list[ChatMessage] = []
    if data.get("system"):
        out.append(ChatMessage("system", _text(data["system"]), "request.system"))
    for i, message in enumerate(data.get("messages") or []):
        if isinstance(message, dict):
            out += _anthropic_blocks(str(message.get("role", "user")), message.get("content"), f"request.messages[{i}]")
    return out


def anthropic_response(data: dict[str, Any]) -> list[ChatMessage]:
    if data.get("type") == "error":
        return []
    return _anthropic_blocks("assistant", data.get("content"), "response.content")


__all__ = [
    "ChatMessage",
    "ChatToolCall",
    "exchange",
    "anthropic_request",
    "anthropic_response",
    "openai_request",
    "openai_response",
]
