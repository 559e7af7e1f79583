"""An AutoGen AgentChat assistant with a tool (autogen-ext's OpenAI client), through interlock.

    export OPENAI_BASE_URL=http://127.0.0.1:4141/openai
    export OPENAI_API_KEY=sk-placeholder                   # the route injects the real key
    python agent.py "Where is order 42?"

`OpenAIChatCompletionClient` takes `base_url` and `default_headers` (X-Interlock-Agent and
X-Interlock-Session); `model_info` tells AutoGen what a model it does not know can do (function
calling, JSON output...), so any model name behind interlock's route works. The assistant streams
(`model_client_stream=True`, usage included) and reflects on the tool result in a second call. Its
context is capped by tokens, counted with tiktoken, whose encoding files must be on disk offline
(TIKTOKEN_CACHE_DIR; litellm ships them, see docs/frameworks.md).
Prints one JSON line: {"answer": ..., "tools": [tools the agent ran]}.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import TextMessage, ToolCallExecutionEvent
from autogen_core.model_context import TokenLimitedChatCompletionContext
from autogen_core.models import ModelFamily, ModelInfo
from autogen_ext.models.openai import OpenAIChatCompletionClient

ORDERS = {"42": "shipped on 2026-11-20 by DHL, tracking DH123", "7": "waiting for payment"}


async def lookup_order(order_id: str) -> str:
    """An order's status, by order number."""
    return ORDERS.get(order_id, "no such order")


async def main() -> None:
    question = sys.argv[1] if len(sys.argv) > 1 else "Where is order 42?"
    client = OpenAIChatCompletionClient(
        model=os.environ.get("MODEL", "gpt-4o-mini"),
        base_url=os.environ["OPENAI_BASE_URL"],
        api_key=os.environ.get("OPENAI_API_KEY", "sk-placeholder"),
        default_headers={
            "X-Interlock-Agent": os.environ.get("INTERLOCK_AGENT", "autogen-orders"),
            "X-Interlock-Session": os.environ.get("INTERLOCK_SESSION") or f"autogen-{uuid.uuid4().hex[:8]}",
        },
        model_info=ModelInfo(
            vision=False,
            function_calling=True,
            json_output=True,
            structured_output=True,
            family=ModelFamily.UNKNOWN,
        ),
        stream_options={"include_usage": True},
        max_retries=0,  # interlock retries upstream failures itself
    )
    agent = AssistantAgent(
        "orders",
        model_client=client,
        tools=[lookup_order],
        system_message="You answer questions about orders.",
        reflect_on_tool_use=True,
        model_client_stream=True,
        # Keeps the conversation under the model's window; counts tokens with tiktoken.
        model_context=TokenLimitedChatCompletionContext(client, token_limit=8000),
    )
    try:
        result = await agent.run(task=question)
    finally:
        await client.close()
    ran = [call.name for m in result.messages if isinstance(m, ToolCallExecutionEvent) for call in m.content]
    answer = next(m.content for m in reversed(result.messages) if isinstance(m, TextMessage))
    print(json.dumps({"answer": answer, "tools": ran}))


if __name__ == "__main__":
    asyncio.run(main())
