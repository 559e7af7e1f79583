"""A Google ADK agent (an LlmAgent on Gemini with one tool, run by ADK's Runner), through interlock.

    export GOOGLE_GEMINI_BASE_URL=http://127.0.0.1:4141/gemini   # google-genai (under ADK) reads it
    export GOOGLE_API_KEY=placeholder                             # the route injects the real key
    python agent.py "Where is order 42?"

ADK runs the loop itself: the model asks for `lookup_order`, ADK calls the Python function and sends
its result back as a `functionResponse`, the model answers. The model streams (`StreamingMode.SSE`:
`streamGenerateContent?alt=sse`), so interlock records SSE calls with their token usage. The agent
and session go in the model's HTTP headers; the session is ADK's session id, so one ADK session is
one interlock session. Prints one JSON line: {"answer": ..., "tools": [tools the agent ran]}.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid

from google.adk.agents import LlmAgent
from google.adk.agents.run_config import RunConfig, StreamingMode
from google.adk.models import Gemini
from google.adk.runners import InMemoryRunner
from google.genai import types

ORDERS = {"42": "shipped on 2026-11-20 by DHL, tracking DH123", "7": "waiting for payment"}
ran: list[str] = []


def lookup_order(order_id: str) -> str:
    """An order's status, by order number."""
    ran.append("lookup_order")
    return ORDERS.get(order_id, "no such order")


async def ask(question: str) -> str:
    session_id = os.environ.get("INTERLOCK_SESSION") or f"adk-{uuid.uuid4().hex[:8]}"
    headers = {"X-Interlock-Agent": os.environ.get("INTERLOCK_AGENT", "adk-orders"), "X-Interlock-Session": session_id}
    agent = LlmAgent(
        name="orders",
        model=Gemini(model=os.environ.get("MODEL", "gemini-2.0-flash"), base_url=os.environ["GOOGLE_GEMINI_BASE_URL"]),
        instruction="Answer questions about orders; look an order up before answering.",
        tools=[lookup_order],
        generate_content_config=types.GenerateContentConfig(http_options=types.HttpOptions(headers=headers)),
    )
    runner = InMemoryRunner(agent=agent, app_name="orders")
    session = await runner.session_service.create_session(app_name="orders", user_id="user", session_id=session_id)
    message = types.Content(role="user", parts=[types.Part(text=question)])
    answer = ""
    config = RunConfig(streaming_mode=StreamingMode.SSE)
    async for event in runner.run_async(user_id="user", session_id=session.id, new_message=message, run_config=config):
        if event.is_final_response() and event.content and event.content.parts:
            answer = "".join(part.text or "" for part in event.content.parts)
    return answer


if __name__ == "__main__":
    question = sys.argv[1] if len(sys.argv) > 1 else "Where is order 42?"
    print(json.dumps({"answer": asyncio.run(ask(question)), "tools": ran}))
