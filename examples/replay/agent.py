"""A small support agent on the openai SDK: it looks an order up and refunds it, through tools.

It knows nothing about interlock: it reads OPENAI_BASE_URL like any openai-SDK program, so the same
code runs against the provider, against interlock in production, and against a replay in a test.
"""

from __future__ import annotations

import json
import os
from typing import Any

import openai

SYSTEM = "You are a support agent. Look the order up before refunding it. Refund at most once."

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "refund",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
            },
        },
    },
]

ORDERS = {"42": {"status": "delivered", "total": 30.0, "customer": "Ann"}}


class Shop:
    """The agent's side effects, recorded so a test can assert on them."""

    def __init__(self) -> None:
        self.refunds: list[tuple[str, float]] = []

    def lookup_order(self, order_id: str) -> str:
        return json.dumps(ORDERS.get(order_id, {"error": "no such order"}))

    def refund(self, order_id: str, amount: float) -> str:
        self.refunds.append((order_id, amount))
        return json.dumps({"refunded": amount})


def run(question: str, shop: Shop, *, system: str = SYSTEM, session: str = "support-ticket-1017") -> str:
    """The tool loop: ask, run the tools the model calls, send the results back, until it answers."""
    client = openai.OpenAI(max_retries=0, default_headers={"X-Interlock-Session": session})
    messages: list[Any] = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    for _ in range(8):
        reply = client.chat.completions.create(model="gpt-4o", messages=messages, tools=TOOLS)
        message = reply.choices[0].message
        if not message.tool_calls:
            return message.content or ""
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls:
            arguments = json.loads(call.function.arguments)  # type: ignore[union-attr]
            result = getattr(shop, call.function.name)(**arguments)  # type: ignore[union-attr]
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    raise RuntimeError("the agent did not finish")


if __name__ == "__main__":
    os.environ.setdefault("OPENAI_API_KEY", "sk-placeholder")
    shop = Shop()
    print(run("Please refund order 42, it arrived broken.", shop))
    print("refunds:", shop.refunds)
