"""An OpenAI Agents SDK agent with a function tool, streamed over the Responses API, through interlock.

    export OPENAI_BASE_URL=http://127.0.0.1:4141/openai    # the AsyncOpenAI client reads it
    export OPENAI_API_KEY=sk-placeholder                   # the route injects the real key
    python agent.py "Where is order 42?" [--structured]

`OpenAIResponsesModel` on an `AsyncOpenAI` client that names the agent and session in
`default_headers` (`max_retries=0`: interlock retries upstream failures itself); `Runner.run_streamed`
consumes the Responses events as they arrive. With `--structured` the agent's `output_type` is
`OrderStatus`, sent as the request's `text.format` (a JSON schema) and parsed from the streamed text.
The SDK's own tracing (an exporter to OpenAI's servers) is switched off: interlock records the run.
Prints one JSON line: {"answer": ..., "tools": [tools the agent ran]}.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid

from agents import Agent, ItemHelpers, Runner, function_tool, set_tracing_disabled
from agents.models.openai_responses import OpenAIResponsesModel
from openai import AsyncOpenAI
from pydantic import BaseModel

ORDERS = {"42": "shipped on 2026-11-20 by DHL, tracking DH123", "7": "waiting for payment"}


class OrderStatus(BaseModel):
    order_id: str
    status: str


@function_tool
def lookup_order(order_id: str) -> str:
    """An order's status, by order number."""
    return ORDERS.get(order_id, "no such order")


async def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    question = args[0] if args else "Where is order 42?"
    structured = "--structured" in sys.argv
    session = os.environ.get("INTERLOCK_SESSION") or f"agents-{uuid.uuid4().hex[:8]}"
    set_tracing_disabled(True)
    client = AsyncOpenAI(
        max_retries=0,  # interlock retries upstream failures itself
        default_headers={
            "X-Interlock-Agent": os.environ.get("INTERLOCK_AGENT", "agents-orders"),
            "X-Interlock-Session": session,
        },
    )
    agent: Agent[None] = Agent(
        name="order desk",
        instructions="You answer questions about orders.",
        model=OpenAIResponsesModel(os.environ.get("MODEL", "gpt-4o-mini"), openai_client=client),
        tools=[lookup_order],
        output_type=OrderStatus if structured else None,
    )
    result = Runner.run_streamed(agent, question)
    ran: list[str] = []
    async for event in result.stream_events():
        if event.type == "run_item_stream_event" and event.item.type == "tool_call_item":
            ran.append(getattr(event.item.raw_item, "name", "?"))
    output = result.final_output
    answer = output.model_dump() if isinstance(output, BaseModel) else str(output)
    if not structured:
        answer = ItemHelpers.text_message_outputs(result.new_items) or answer
    print(json.dumps({"answer": answer, "tools": ran}))


if __name__ == "__main__":
    asyncio.run(main())
