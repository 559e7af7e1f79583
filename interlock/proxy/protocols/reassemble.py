"""A streamed response put back together as the one JSON message the non-streamed call would return.

The store keeps streams as timed chunks (for replay) and, through this, as the reassembled message
(for reading and search): OpenAI chat → a `chat.completion`, OpenAI Responses → the final
`response`, Anthropic → a `message`; MCP → the list of JSON-RPC messages. Runs in the recorder's
writer thread, never on the event loop.
"""

from __future__ import annotations

import json
from typing import Any

from interlock.proxy.protocols.sse import iter_events


def reassemble_stream(protocol: str, body: bytes) -> Any:
    """The message a stream carried, or None when it holds nothing this protocol knows."""
    events = []
    for event in iter_events(body):
        if not event.data or event.data == "[DONE]":
            continue
        try:
            events.append(json.loads(event.data))
        except json.JSONDecodeError:
            continue
    events = [e for e in events if isinstance(e, dict)]
    if not events:
        return None
    if protocol == "openai":
        if any(str(e.get("type", "")).startswith("response.") for e in events):
            return _openai_response(events)
        return _openai_chat(events)
    if protocol == "anthropic":
        return _anthropic(events)
    if protocol == "mcp":
        return events
    return None


def _openai_chat(events: list[dict[str, Any]]) -> dict[str, Any]:
    message: dict[str, Any] = {"object": "chat.completion", "choices": []}
    choices: dict[int, dict[str, Any]] = {}
    for event in events:
        for key in ("id", "created", "model", "system_fingerprint"):
            if key in event and key not in message:
                message[key] = event[key]
        if event.get("usage"):
            message["usage"] = event["usage"]
        if "error" in event:
            message["error"] = event["error"]
        for delta_choice in event.get("choices") or []:
            index = delta_choice.get("index", 0)
            choice = choices.setdefault(
                index, {"index": index, "message": {"role": "assistant", "content": None}, "finish_reason": None}
            )
            delta = delta_choice.get("delta") or {}
            target = choice["message"]
            if delta.get("role"):
                target["role"] = delta["role"]
            for key in ("content", "refusal"):
                if isinstance(delta.get(key), str):
                    target[key] = (target.get(key) or "") + delta[key]
            for piece in delta.get("tool_calls") or []:
                calls = target.setdefault("tool_calls", [])
                slot = piece.get("index", len(calls))
                while len(calls) <= slot:
                    calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
                call = calls[slot]
                if piece.get("id"):
                    call["id"] = piece["id"]
                function = piece.get("function") or {}
                call["function"]["name"] += function.get("name") or ""
                call["function"]["arguments"] += function.get("arguments") or ""
            if delta_choice.get("finish_reason"):
                choice["finish_reason"] = delta_choice["finish_reason"]
    message["choices"] = [choices[i] for i in sorted(choices)]
    return message


def _openai_response(events: list[dict[str, Any]]) -> dict[str, Any]:
    final = None
    text = ""
    for event in events:
        kind = event.get("type")
        if kind in ("response.completed", "response.incomplete", "response.failed") and isinstance(
            event.get("response"), dict
        ):
            final = event["response"]
        elif kind == "response.output_text.delta" and isinstance(event.get("delta"), str):
            text += event["delta"]
    if final is not None:
        return dict(final)
    # A stream cut short: what the agent did see.
    content = [{"type": "output_text", "text": text}]
    return {"object": "response", "status": "incomplete", "output": [{"type": "message", "content": content}]}


def _anthropic(events: list[dict[str, Any]]) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "message", "role": "assistant", "content": []}
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, str] = {}
    for event in events:
        kind = event.get("type")
        if kind == "message_start" and isinstance(event.get("message"), dict):
            message.update({k: v for k, v in event["message"].items() if k != "content"})
        elif kind == "content_block_start":
            blocks[event.get("index", len(blocks))] = dict(event.get("content_block") or {})
        elif kind == "content_block_delta":
            index = event.get("index", 0)
            block = blocks.setdefault(index, {"type": "text", "text": ""})
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                block["text"] = block.get("text", "") + delta.get("text", "")
            elif delta.get("type") == "input_json_delta":
                partial[index] = partial.get(index, "") + delta.get("partial_json", "")
            elif delta.get("type") == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
        elif kind == "message_delta":
            message.update(event.get("delta") or {})
            if isinstance(event.get("usage"), dict):
                message["usage"] = {**(message.get("usage") or {}), **event["usage"]}
        elif kind == "error":
            message["error"] = event.get("error")
    for index, text in partial.items():
        try:
            blocks[index]["input"] = json.loads(text) if text else {}
        except json.JSONDecodeError:
            blocks[index]["input"] = text
    message["content"] = [blocks[i] for i in sorted(blocks)]
    return message
