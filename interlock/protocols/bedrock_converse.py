"""Bedrock's Converse API, the wire format of `/model/{modelId}/converse` and `converse-stream`
(`BedrockAdapter` reads InvokeModel's Anthropic body through the anthropic adapter, and this format
here): the request's texts, tools and inference parameters, a ConverseStream reassembled into the
Converse response, the conversation, and the policy's edits of a request. Source: the Bedrock Runtime
API reference (Converse, ConverseStream) and botocore's `bedrock-runtime` service-2.json."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from interlock.core.views import RequestView, TextSlot, ToolCall
from interlock.protocols.base import BadRequest, StreamText, json_strings
from interlock.protocols.conversation import ChatMessage, ChatToolCall, exchange

_INFERENCE = ("maxTokens", "temperature", "topP", "stopSequences")
#: The policy's parameter names (OpenAI's) as Converse's `inferenceConfig` names them.
_PARAMS = {"max_tokens": "maxTokens", "top_p": "topP", "stop": "stopSequences"}


def converse_view(data: dict[str, Any], model: str, stream: bool) -> RequestView:
    """A Converse request body's view; a malformed one is a `BadRequest`."""
    view = RequestView(operation="chat", model=model, stream=stream)
    config = data.get("inferenceConfig")
    if isinstance(config, dict):
        view.params = {k: config[k] for k in _INFERENCE if k in config}
    system = data.get("system")
    if system is not None and not isinstance(system, list):
        raise BadRequest("`system` must be a list", "invalid_request")
    view.texts += converse_blocks(system, ("system",), "system", view)
    messages = data.get("messages", [])
    if not isinstance(messages, list):
        raise BadRequest("`messages` must be a list", "invalid_request")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"messages.{i} must be an object", "invalid_request")
        content = message.get("content")
        if not isinstance(content, list):
            raise BadRequest(f"messages.{i}.content must be a list", "invalid_request")
        view.texts += converse_blocks(content, ("messages", i, "content"), str(message.get("role")), view)
    view.tools = [spec["name"] for spec in _tool_specs(data)]
    return view


#: Converse content blocks (a tool result's too) the model reads that hold no text interlock can scan.
_MEDIA = ("image", "document", "video")


def converse_blocks(
    content: Any, path: tuple[str | int, ...], role: str, view: RequestView | None = None
) -> list[TextSlot]:
    """The texts of a list of content blocks (text, a tool's input, a tool's result) at `path`; a
    request's image, document and video blocks listed in `view.media`, as interlock cannot read them."""
    slots: list[TextSlot] = []
    for i, block in enumerate(content if isinstance(content, list) else []):
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            slots.append(TextSlot((*path, i, "text"), block["text"], role))
        if view is not None:
            for kind in _MEDIA:
                if block.get(kind) is not None:
                    view.media_part((*path, i), kind)
        use = block.get("toolUse")
        if isinstance(use, dict) and use.get("input") is not None:
            slots += json_strings(use["input"], (*path, i, "toolUse", "input"), "tool_args")
        result = block.get("toolResult")
        if isinstance(result, dict):
            parts = result.get("content")
            for j, part in enumerate(parts if isinstance(parts, list) else []):
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    slots.append(TextSlot((*path, i, "toolResult", "content", j, "text"), part["text"], "tool_result"))
                elif isinstance(part, dict) and part.get("json") is not None:
                    where = (*path, i, "toolResult", "content", j, "json")
                    slots += json_strings(part["json"], where, "tool_result")
                elif isinstance(part, dict) and view is not None:
                    for kind in _MEDIA:
                        if part.get(kind) is not None:
                            view.media_part((*path, i, "toolResult", "content", j), kind)
    return slots


def _tool_specs(data: dict[str, Any]) -> list[dict[str, Any]]:
    config = data.get("toolConfig")
    if config is None:
        return []
    if not isinstance(config, dict) or not isinstance(config.get("tools", []), list):
        raise BadRequest("`toolConfig.tools` must be a list", "invalid_request")
    specs = []
    for i, tool in enumerate(config.get("tools", [])):
        spec = tool.get("toolSpec") if isinstance(tool, dict) else None
        if spec is None:
            continue  # a cachePoint
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise BadRequest(f"toolConfig.tools.{i}.toolSpec.name must be a string", "invalid_request")
        specs.append(spec)
    return specs


def sample_body(text: str, tools: Sequence[str]) -> dict[str, Any]:
    """A `policy test` case's Converse body: asking about `text` with these tools offered."""
    body: dict[str, Any] = {"messages": [{"role": "user", "content": [{"text": text}]}]}
    if tools:
        specs = [{"toolSpec": {"name": n, "inputSchema": {"json": {"type": "object"}}}} for n in tools]
        body["toolConfig"] = {"tools": specs}
    return body


# -- the response -------------------------------------------------------------------------------


def _message(data: dict[str, Any]) -> dict[str, Any]:
    """The answer's message; a malformed body (a non-object `output` or `message`) reads as no message,
    so the call is recorded with nothing read from it, never an error of interlock's own (a 500)."""
    output = data.get("output")
    message = output.get("message") if isinstance(output, dict) else None
    return message if isinstance(message, dict) else {}


def shape_problem(data: dict[str, Any]) -> str | None:
    """Where a Converse answer is not in its shape (`Adapter.answer_shape_problem`)."""
    output = data.get("output")
    message = output.get("message") if isinstance(output, dict) else None
    if output is not None and not isinstance(output, dict):
        return "`output` is not an object"
    if message is not None and not isinstance(message, dict):
        return "`output.message` is not an object"
    if isinstance(message, dict) and message.get("content") is not None and not isinstance(message["content"], list):
        return "`output.message.content` is not a list"
    return None


def _blocks(data: dict[str, Any]) -> list[Any]:
    content = _message(data).get("content")
    return content if isinstance(content, list) else []


def response_texts(data: dict[str, Any]) -> list[TextSlot]:
    return converse_blocks(_blocks(data), ("output", "message", "content"), "assistant")


def response_tool_calls(data: dict[str, Any]) -> list[ToolCall]:
    return [
        ToolCall(str(use.get("name")), json.dumps(use.get("input", {})), use.get("toolUseId"))
        for block in _blocks(data)
        if isinstance(block, dict) and isinstance(use := block.get("toolUse"), dict)
    ]


def converse_message(events: list[dict[str, Any]]) -> dict[str, Any]:
    """ConverseStream's events (`{eventType: payload}`, as boto3 yields them) as the Converse response."""
    blocks: dict[int, dict[str, Any]] = {}
    tool_inputs: dict[int, list[str]] = {}
    out: dict[str, Any] = {"output": {"message": {"role": "assistant", "content": []}}}
    for event in events:
        for kind, payload in event.items():
            if not isinstance(payload, dict):
                continue
            index = payload.get("contentBlockIndex", 0)
            if kind == "messageStart" and isinstance(payload.get("role"), str):
                out["output"]["message"]["role"] = payload["role"]
            elif kind == "contentBlockStart":
                use = (payload.get("start") or {}).get("toolUse")
                if isinstance(use, dict):
                    blocks[index] = {"toolUse": {**use, "input": {}}}
                    tool_inputs[index] = []
            elif kind == "contentBlockDelta" and isinstance(payload.get("delta"), dict):
                delta = payload["delta"]
                if isinstance(delta.get("text"), str):
                    block = blocks.setdefault(index, {"text": ""})
                    block["text"] = block.get("text", "") + delta["text"]
                use = delta.get("toolUse")
                if isinstance(use, dict) and isinstance(use.get("input"), str):
                    tool_inputs.setdefault(index, []).append(use["input"])
            elif kind == "messageStop":
                out["stopReason"] = payload.get("stopReason")
            elif kind == "metadata":
                out.update({k: v for k, v in payload.items() if k in ("usage", "metrics", "trace")})
    for index, pieces in tool_inputs.items():
        block = blocks.setdefault(index, {"toolUse": {}})
        try:
            block["toolUse"]["input"] = json.loads("".join(pieces)) if pieces else {}
        except ValueError:
            block["toolUse"]["input"] = "".join(pieces)  # cut short: kept as it came
    out["output"]["message"]["content"] = [blocks[i] for i in sorted(blocks)]
    return out


def stream_texts(event: str | None, data: Any) -> list[StreamText]:
    """The text in one ConverseStream event: a `contentBlockDelta`'s text or tool input piece."""
    if event != "contentBlockDelta" or not isinstance(data, dict) or not isinstance(data.get("delta"), dict):
        return []
    index, delta = data.get("contentBlockIndex"), data["delta"]
    if isinstance(delta.get("text"), str):
        return [StreamText(f"content.{index}", ("delta", "text"), delta["text"])]
    use = delta.get("toolUse")
    if isinstance(use, dict) and isinstance(use.get("input"), str):
        return [StreamText(f"content.{index}.input", ("delta", "toolUse", "input"), use["input"], json_text=True)]
    return []


def _chat_messages(blocks: Any, role: str, where: str) -> list[ChatMessage]:
    """One Converse message as chat messages: its text and tool calls, then each tool result."""
    message = ChatMessage(role, "", where)
    out = [message]
    texts: list[str] = []
    for block in blocks if isinstance(blocks, list) else []:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        use = block.get("toolUse")
        if isinstance(use, dict):
            arguments = json.dumps(use.get("input", {}), ensure_ascii=False)
            message.tool_calls.append(ChatToolCall(str(use.get("name")), arguments, use.get("toolUseId")))
        result = block.get("toolResult")
        if isinstance(result, dict):
            parts = result.get("content")
            text = "\n".join(
                p["text"] if isinstance(p.get("text"), str) else json.dumps(p.get("json"), ensure_ascii=False)
                for p in (parts if isinstance(parts, list) else [])
                if isinstance(p, dict)
            )
            tool = ChatMessage("tool", text, where, tool_call_id=result.get("toolUseId"))
            tool.error = result.get("status") == "error"
            out.append(tool)
    message.text = "\n".join(texts)
    return [m for m in out if m.text or m.tool_calls or m.role == "tool"]


def conversation(request: Any, response: Any) -> list[ChatMessage]:
    """A Converse exchange as chat messages (`Adapter.conversation`)."""
    out: list[ChatMessage] = []
    if isinstance(request, dict):
        for i, block in enumerate(request.get("system") or []):
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                out.append(ChatMessage("system", block["text"], f"request.system[{i}]"))
        for i, message in enumerate(request.get("messages") or []):
            if isinstance(message, dict):
                role = str(message.get("role", "user"))
                out += _chat_messages(message.get("content"), role, f"request.messages[{i}]")
    answer: list[ChatMessage] = []
    if isinstance(response, dict):
        answer = _chat_messages(_blocks(response), "assistant", "response.output.message")
    return exchange(out, answer)


# -- the policy's edits of a request --------------------------------------------------------------


def strip_tools(data: dict[str, Any], names: set[str]) -> list[str]:
    """`Adapter.strip_tools` for a Converse body: the named tools out of `toolConfig`."""
    config = data.get("toolConfig")
    tools = config.get("tools") if isinstance(config, dict) else None
    if not isinstance(config, dict) or not isinstance(tools, list):
        return []

    def named(tool: Any) -> bool:
        spec = tool.get("toolSpec") if isinstance(tool, dict) else None
        return isinstance(spec, dict) and spec.get("name") in names

    removed = [t["toolSpec"]["name"] for t in tools if named(t)]
    if not removed:
        return []
    kept = [t for t in tools if not named(t)]
    if not any(isinstance(t, dict) and "toolSpec" in t for t in kept):
        data.pop("toolConfig")  # Bedrock refuses a toolConfig without tools
    else:
        config["tools"] = kept
        choice = config.get("toolChoice")
        if isinstance(choice, dict) and (choice.get("tool") or {}).get("name") in names:
            config.pop("toolChoice")
    return removed


def set_param(data: dict[str, Any], name: str, value: Any) -> list[tuple[str, Any, Any]]:
    """`Adapter.set_param` for a Converse body: in `inferenceConfig`, under Converse's name."""
    key = _PARAMS.get(name, name)
    config = data.setdefault("inferenceConfig", {})
    if not isinstance(config, dict):
        return []
    old = config.get(key)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and isinstance(old, (int, float)) and not isinstance(old, bool):
        if old <= value:
            return []
    elif key in config and old == value:
        return []
    config[key] = value
    return [(f"inferenceConfig.{key}", old, value)]
