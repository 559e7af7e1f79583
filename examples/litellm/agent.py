"""An order-status agent on the litellm SDK, through interlock (interlock is the proxy; no litellm server).

    export OPENAI_BASE_URL=http://127.0.0.1:4141/openai
    export OPENAI_API_KEY=sk-placeholder                   # the route injects the real key
    export LITELLM_LOCAL_MODEL_COST_MAP=True               # litellm fetches its price list otherwise
    python agent.py "Where is order 42?" [--stream]

`model="openai/<name>"` with `api_base` sends the OpenAI wire format to interlock's route, and
`extra_headers` carry X-Interlock-Agent and X-Interlock-Session. litellm ships tiktoken's
encoding files and points TIKTOKEN_CACHE_DIR at them, so its token counting stays offline.
Prints one JSON line: {"answer": ..., "tools": [tools the agent ran]}.
"""

from __future__ import annotations

import argparse
import json
import os
import uuid
from typing import Any

import litellm

ORDERS = {"42": "shipped on 2026-11-20 by DHL, tracking DH123", "7": "waiting for payment"}
TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "An order's status, by order number",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
        },
    }
]


def lookup_order(order_id: str) -> str:
    return ORDERS.get(order_id, "no such order")


def complete(messages: list[Any], stream: bool, **options: Any) -> dict[str, Any]:
    """One completion as an assistant message dict (a stream put back together by litellm)."""
    if not stream:
        response = litellm.completion(messages=messages, **options)
        return response.choices[0].message.model_dump(exclude_none=True)  # type: ignore[no-any-return]
    chunks = list(litellm.completion(messages=messages, stream=True, stream_options={"include_usage": True}, **options))
    rebuilt = litellm.stream_chunk_builder(chunks, messages=messages)
    return rebuilt.choices[0].message.model_dump(exclude_none=True)  # type: ignore[no-any-return,union-attr]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("question", nargs="?", default="Where is order 42?")
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()
    options = {
        "model": "openai/" + os.environ.get("MODEL", "gpt-4o-mini"),
        "api_base": os.environ["OPENAI_BASE_URL"],
        "api_key": os.environ.get("OPENAI_API_KEY", "sk-placeholder"),
        "tools": TOOLS,
        "extra_headers": {
            "X-Interlock-Agent": os.environ.get("INTERLOCK_AGENT", "litellm-orders"),
            "X-Interlock-Session": os.environ.get("INTERLOCK_SESSION") or f"litellm-{uuid.uuid4().hex[:8]}",
        },
        "num_retries": 0,  # interlock retries upstream failures itself
    }
    messages: list[Any] = [
        {"role": "system", "content": "You answer questions about orders."},
        {"role": "user", "content": args.question},
    ]
    ran: list[str] = []
    for _ in range(5):
        message = complete(messages, args.stream, **options)
        messages.append(message)
        if not message.get("tool_calls"):
            print(json.dumps({"answer": message.get("content"), "tools": ran}))
            return
        for call in message["tool_calls"]:
            ran.append(call["function"]["name"])
            result = lookup_order(**json.loads(call["function"]["arguments"]))
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
    raise RuntimeError("the model kept calling tools")


if __name__ == "__main__":
    main()
