"""A pydantic-ai agent with a tool and a structured answer, streamed over the OpenAI Responses API,
through interlock.

    export OPENAI_BASE_URL=http://127.0.0.1:4141/openai    # the AsyncOpenAI client reads it
    export OPENAI_API_KEY=sk-placeholder                   # the route injects the real key
    python agent.py "Where is order 42?" [--native]

`OpenAIResponsesModel` on an `AsyncOpenAI` client that names the agent and session in
`default_headers` (`max_retries=0`: interlock retries upstream failures itself). The answer is an
`OrderStatus`, streamed with `run_stream` and validated as it arrives (`stream_output`). By default
pydantic-ai asks for it as a tool (the model calls `final_result` with the fields); with `--native`
as the Responses API's structured output (`NativeOutput`: the request's `text.format` is the JSON
schema and the answer streams as JSON text). Either way the run is two calls through interlock:
the model asks for `lookup_order`, then, given its result, gives the answer.
Prints one JSON line: {"answer": ..., "tools": [tools the agent ran], "partials": N}.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid

from openai import AsyncOpenAI
from pydantic import BaseModel
from pydantic_ai import Agent, NativeOutput
from pydantic_ai.models.openai import OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider

ORDERS = {"42": "shipped on 2026-11-20 by DHL, tracking DH123", "7": "waiting for payment"}


class OrderStatus(BaseModel):
    order_id: str
    status: str
    carrier: str | None = None


def build_agent(session: str, ran: list[str], native: bool) -> Agent[None, OrderStatus]:
    client = AsyncOpenAI(
        max_retries=0,  # interlock retries upstream failures itself
        default_headers={
            "X-Interlock-Agent": os.environ.get("INTERLOCK_AGENT", "pydantic-ai-orders"),
            "X-Interlock-Session": session,
        },
    )
    model = OpenAIResponsesModel(os.environ.get("MODEL", "gpt-4o-mini"), provider=OpenAIProvider(openai_client=client))
    output = NativeOutput(OrderStatus) if native else OrderStatus
    agent = Agent(model, output_type=output, instructions="You answer questions about orders.")

    @agent.tool_plain
    def lookup_order(order_id: str) -> str:
        """An order's status, by order number."""
        ran.append("lookup_order")
        return ORDERS.get(order_id, "no such order")

    return agent


async def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    question = args[0] if args else "Where is order 42?"
    session = os.environ.get("INTERLOCK_SESSION") or f"pydantic-ai-{uuid.uuid4().hex[:8]}"
    ran: list[str] = []
    agent = build_agent(session, ran, native="--native" in sys.argv)
    partials = 0
    async with agent.run_stream(question) as result:
        async for _ in result.stream_output(debounce_by=None):
            partials += 1
        answer = await result.get_output()
    print(json.dumps({"answer": answer.model_dump(), "tools": ran, "partials": partials}))


if __name__ == "__main__":
    asyncio.run(main())
