"""An order-status agent on the openai SDK, through interlock.

    export OPENAI_BASE_URL=http://127.0.0.1:4141/openai    # interlock's openai route
    export OPENAI_API_KEY=sk-placeholder                   # the route injects the real key
    python agent.py "Where is order 42?" --api chat --stream

Identified with `default_headers`: X-Interlock-Agent names the agent, X-Interlock-Session groups one
conversation's calls. Both APIs, streamed or not, run the same tool loop: the model asks for
`lookup_order`, the agent runs it and sends the result back until the model answers.
Prints one JSON line: {"answer": ..., "tools": [names of the tools the agent ran]}.
"""

from __future__ import annotations

import argparse
import json
import os
import uuid
from typing import Any

from openai import OpenAI

ORDERS = {"42": "shipped on 2026-11-20 by DHL, tracking DH123", "7": "waiting for payment"}


def lookup_order(order_id: str) -> str:
    return ORDERS.get(order_id, "no such order")


TOOLS = {"lookup_order": lookup_order}
SCHEMA = {
    "type": "object",
    "properties": {"order_id": {"type": "string", "description": "The order number"}},
    "required": ["order_id"],
}
CHAT_TOOLS: Any = [
    {"type": "function", "function": {"name": "lookup_order", "description": "An order's status", "parameters": SCHEMA}}
]
RESPONSES_TOOLS: Any = [
    {"type": "function", "name": "lookup_order", "description": "An order's status", "parameters": SCHEMA}
]


def chat_turn(client: OpenAI, model: str, messages: list[Any], stream: bool) -> dict[str, Any]:
    """One chat completion, as the assistant message dict (streamed deltas put back together)."""
    if not stream:
        completion = client.chat.completions.create(model=model, messages=messages, tools=CHAT_TOOLS)
        return completion.choices[0].message.model_dump(exclude_none=True)
    content, calls = "", {}
    events = client.chat.completions.create(
        model=model, messages=messages, tools=CHAT_TOOLS, stream=True, stream_options={"include_usage": True}
    )
    for chunk in events:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for part in delta.tool_calls or []:
            call = calls.setdefault(
                part.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            call["id"] = part.id or call["id"]
            if part.function:
                call["function"]["name"] += part.function.name or ""
                call["function"]["arguments"] += part.function.arguments or ""
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return message


def run_chat(client: OpenAI, model: str, question: str, stream: bool) -> tuple[str, list[str]]:
    messages: list[Any] = [
        {"role": "system", "content": "You answer questions about orders. Use lookup_order."},
        {"role": "user", "content": question},
    ]
    ran: list[str] = []
    for _ in range(5):
        message = chat_turn(client, model, messages, stream)
        messages.append(message)
        if not message.get("tool_calls"):
            return message.get("content") or "", ran
        for call in message["tool_calls"]:
            name = call["function"]["name"]
            ran.append(name)
            result = TOOLS[name](**json.loads(call["function"]["arguments"]))
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
    raise RuntimeError("the model kept calling tools")


def run_responses(client: OpenAI, model: str, question: str, stream: bool) -> tuple[str, list[str]]:
    items: list[Any] = [{"role": "user", "content": question}]
    ran: list[str] = []
    for _ in range(5):
        if stream:
            with client.responses.stream(
                model=model, instructions="You answer questions about orders.", input=items, tools=RESPONSES_TOOLS
            ) as events:
                for _event in events:
                    pass
                response = events.get_final_response()
        else:
            response = client.responses.create(
                model=model, instructions="You answer questions about orders.", input=items, tools=RESPONSES_TOOLS
            )
        calls = [item for item in response.output if item.type == "function_call"]
        if not calls:
            return response.output_text, ran
        for call in calls:
            ran.append(call.name)
            items.append(
                {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments}
            )
            result = TOOLS[call.name](**json.loads(call.arguments))
            items.append({"type": "function_call_output", "call_id": call.call_id, "output": result})
    raise RuntimeError("the model kept calling tools")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("question", nargs="?", default="Where is order 42?")
    parser.add_argument("--api", choices=["chat", "responses"], default="chat")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--model", default=os.environ.get("MODEL", "gpt-4o-mini"))
    args = parser.parse_args()
    # OPENAI_BASE_URL and OPENAI_API_KEY come from the environment; only the identity is added here.
    client = OpenAI(
        default_headers={
            "X-Interlock-Agent": os.environ.get("INTERLOCK_AGENT", "order-bot"),
            "X-Interlock-Session": os.environ.get("INTERLOCK_SESSION") or f"order-bot-{uuid.uuid4().hex[:8]}",
        },
        max_retries=0,  # interlock retries upstream failures itself
    )
    run = run_chat if args.api == "chat" else run_responses
    answer, ran = run(client, args.model, args.question, args.stream)
    print(json.dumps({"answer": answer, "tools": ran}))


if __name__ == "__main__":
    main()
