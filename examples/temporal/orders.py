"""The workflow and activities of examples/temporal: a durable agent loop.

The workflow owns the conversation; each model call and each tool run is an activity, so a worker
that dies mid-conversation resumes where it was. The model activity identifies itself to interlock
with the workflow id as the session: one workflow run is one interlock session.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from openai import AsyncOpenAI

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


@activity.defn
async def ask_model(messages: list[dict[str, Any]], session: str) -> dict[str, Any]:
    """One chat completion through interlock (OPENAI_BASE_URL); returns the assistant message."""
    client = AsyncOpenAI(
        default_headers={
            "X-Interlock-Agent": os.environ.get("INTERLOCK_AGENT", "temporal-orders"),
            "X-Interlock-Session": session,
        },
        max_retries=0,  # Temporal retries the activity; interlock retries the upstream
    )
    async with client:
        completion = await client.chat.completions.create(
            model=os.environ.get("MODEL", "gpt-4o-mini"), messages=messages, tools=TOOLS
        )
    return completion.choices[0].message.model_dump(exclude_none=True)


@activity.defn
async def lookup_order(order_id: str) -> str:
    return ORDERS.get(order_id, "no such order")


@workflow.defn
class OrderAgent:
    def __init__(self) -> None:
        self.tools_ran: list[str] = []

    @workflow.run
    async def run(self, question: str) -> dict[str, Any]:
        session = workflow.info().workflow_id
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": "You answer questions about orders."},
            {"role": "user", "content": question},
        ]
        for _ in range(5):
            message = await workflow.execute_activity(
                ask_model, args=[messages, session], start_to_close_timeout=timedelta(seconds=60)
            )
            messages.append(message)
            if not message.get("tool_calls"):
                return {"answer": message.get("content"), "tools": self.tools_ran}
            for call in message["tool_calls"]:
                self.tools_ran.append(call["function"]["name"])
                arguments = json.loads(call["function"]["arguments"])
                result = await workflow.execute_activity(
                    lookup_order, arguments["order_id"], start_to_close_timeout=timedelta(seconds=10)
                )
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
        raise workflow.ApplicationError("the model kept calling tools", non_retryable=True)
