"""What the scripted provider answers in the Anthropic messages format, whole and as SSE events,
built from a `Script` (Bedrock's Anthropic models answer the same, `bedrock.py`)."""

from __future__ import annotations

import json
from typing import Any

from interlock.scripted.replies import Script, pieces, signature, sse


# Anthropic messages. The events follow the API reference ("Streaming messages", including
# "Streaming request with extended thinking" and "Streaming request with tool use") and real
# recordings: message_start (the message without content, usage so far), per block
# content_block_start (empty: `thinking` with `signature: ""`, `text`, `tool_use` with `input: {}`),
# its deltas (thinking_delta... then one signature_delta; text_delta; input_json_delta, the first
# one empty), content_block_stop; message_delta (stop_reason, final output_tokens), message_stop.
def anthropic_reply(text: str, script: Script, model: str) -> tuple[list[bytes], dict[str, Any]]:
    mid = script.message_id or "msg_scripted"
    content: list[dict[str, Any]] = []
    if script.thinking is not None:
        content.append({"type": "thinking", "thinking": script.thinking, "signature": signature(script.thinking)})
    if script.tool_calls:
        content += [
            {"type": "tool_use", "id": f"toolu_{t.id}", "name": t.name, "input": t.arguments} for t in script.tool_calls
        ]
    else:
        content.append({"type": "text", "text": text})
    stop = "tool_use" if script.tool_calls else "end_turn"
    usage = {
        "input_tokens": script.input_tokens,
        "cache_creation_input_tokens": script.cache_write_tokens,
        "cache_read_input_tokens": script.cached_tokens,
        "output_tokens": script.output_tokens,
        "service_tier": "standard",
    }
    whole = {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }
    start = {**whole, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events = [sse({"type": "message_start", "message": start}, "message_start")]

    def event(kind: str, **fields: Any) -> None:
        events.append(sse({"type": kind, **fields}, kind))

    for i, block in enumerate(content):
        if block["type"] == "thinking":
            event("content_block_start", index=i, content_block={"type": "thinking", "thinking": "", "signature": ""})
            for piece in pieces(block["thinking"], script.chunk_size):
                event("content_block_delta", index=i, delta={"type": "thinking_delta", "thinking": piece})
            event("content_block_delta", index=i, delta={"type": "signature_delta", "signature": block["signature"]})
        elif block["type"] == "text":
            event("content_block_start", index=i, content_block={"type": "text", "text": ""})
            for piece in pieces(block["text"], script.chunk_size):
                event("content_block_delta", index=i, delta={"type": "text_delta", "text": piece})
        else:
            event("content_block_start", index=i, content_block={**block, "input": {}})
            for piece in ["", *pieces(json.dumps(block["input"]), 8)]:
                event("content_block_delta", index=i, delta={"type": "input_json_delta", "partial_json": piece})
        event("content_block_stop", index=i)
    event(
        "message_delta",
        delta={"stop_reason": stop, "stop_sequence": None},
        usage={"output_tokens": script.output_tokens},
    )
    event("message_stop")
    return events, whole
