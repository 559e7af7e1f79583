"""An order-status agent on the anthropic SDK (messages, tool use, streamed or not), through interlock.

    export ANTHROPIC_BASE_URL=http://127.0.0.1:4141/anthropic
    export ANTHROPIC_AUTH_TOKEN=vk-support                 # a virtual key, sent as Authorization: Bearer
    python agent.py "Where is order 42?" [--stream]

With ANTHROPIC_AUTH_TOKEN the SDK sends `Authorization: Bearer <token>` (with ANTHROPIC_API_KEY it
sends `x-api-key`); interlock reads the key from either. Here it is a virtual key
(`virtual_keys: {vk-support: {agent: support-bot}}` in interlock.yaml), so the agent is named by its
key and the route injects the real Anthropic key as `x-api-key`. The session goes in
`default_headers` (X-Interlock-Session).
Prints one JSON line: {"answer": ..., "tools": [tools the agent ran]}.
"""

from __future__ import annotations

import argparse
import json
import os
import uuid
from typing import Any

from anthropic import Anthropic

ORDERS = {"42": "shipped on 2026-11-20 by DHL, tracking DH123", "7": "waiting for payment"}
TOOLS: Any = [
    {
        "name": "lookup_order",
        "description": "An order's status, by order number",
        "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
    }
]


def lookup_order(order_id: str) -> str:
    return ORDERS.get(order_id, "no such order")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("question", nargs="?", default="Where is order 42?")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--model", default=os.environ.get("MODEL", "claude-sonnet-4-5"))
    args = parser.parse_args()
    # ANTHROPIC_BASE_URL and ANTHROPIC_AUTH_TOKEN (or ANTHROPIC_API_KEY) come from the environment.
    client = Anthropic(
        default_headers={
            "X-Interlock-Session": os.environ.get("INTERLOCK_SESSION") or f"support-{uuid.uuid4().hex[:8]}"
        },
        max_retries=0,  # interlock retries upstream failures (429, 529) itself
    )
    messages: list[Any] = [{"role": "user", "content": args.question}]
    request: dict[str, Any] = {
        "model": args.model,
        "max_tokens": 1024,
        "system": "You answer questions about orders.",
        "tools": TOOLS,
    }
    ran: list[str] = []
    for _ in range(5):
        if args.stream:
            with client.messages.stream(messages=messages, **request) as stream:
                for _text in stream.text_stream:
                    pass
                reply = stream.get_final_message()
        else:
            reply = client.messages.create(messages=messages, **request)
        messages.append(
            {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in reply.content]}
        )
        uses = [block for block in reply.content if block.type == "tool_use"]
        if not uses:
            answer = "".join(block.text for block in reply.content if block.type == "text")
            print(json.dumps({"answer": answer, "tools": ran}))
            return
        results = []
        for use in uses:
            ran.append(use.name)
            output = lookup_order(**use.input)  # type: ignore[arg-type]
            results.append({"type": "tool_result", "tool_use_id": use.id, "content": output})
        messages.append({"role": "user", "content": results})
    raise RuntimeError("the model kept calling tools")


if __name__ == "__main__":
    main()
