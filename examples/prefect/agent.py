"""A Prefect flow whose tasks call the model (and a tool) through interlock.

    export OPENAI_BASE_URL=http://127.0.0.1:4141/openai
    export OPENAI_API_KEY=sk-placeholder                   # the route injects the real key
    export PREFECT_SERVER_ANALYTICS_ENABLED=false
    python agent.py "Where is order 42?"                   # PREFECT_API_URL=... for your own server

Without PREFECT_API_URL, Prefect runs the flow against a temporary local API server (SQLite under
PREFECT_HOME), which works offline. The model task uses the openai SDK with `default_headers`:
X-Interlock-Agent is the flow's name, X-Interlock-Session the flow run's id, so interlock's session
and Prefect's flow run are the same thing, and either leads to the other.
Prints one JSON line: {"answer": ..., "tools": [tools the flow ran], "flow_run_id": ...}.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from openai import OpenAI
from prefect import flow, task
from prefect.runtime import flow_run

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


@task(retries=2, retry_delay_seconds=1)
def ask_model(messages: list[dict[str, Any]]) -> dict[str, Any]:
    client = OpenAI(
        default_headers={"X-Interlock-Agent": flow_run.flow_name, "X-Interlock-Session": str(flow_run.id)},
        max_retries=0,  # interlock retries the upstream; Prefect retries the task
    )
    completion = client.chat.completions.create(
        model=os.environ.get("MODEL", "gpt-4o-mini"), messages=messages, tools=TOOLS
    )
    return completion.choices[0].message.model_dump(exclude_none=True)


@task
def lookup_order(order_id: str) -> str:
    return ORDERS.get(order_id, "no such order")


@flow(name="order-desk")
def order_desk(question: str) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You answer questions about orders."},
        {"role": "user", "content": question},
    ]
    ran: list[str] = []
    for _ in range(5):
        message = ask_model(messages)
        messages.append(message)
        if not message.get("tool_calls"):
            return {"answer": message.get("content"), "tools": ran, "flow_run_id": str(flow_run.id)}
        for call in message["tool_calls"]:
            ran.append(call["function"]["name"])
            result = lookup_order(**json.loads(call["function"]["arguments"]))
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
    raise RuntimeError("the model kept calling tools")


if __name__ == "__main__":
    print(json.dumps(order_desk(sys.argv[1] if len(sys.argv) > 1 else "Where is order 42?")))
