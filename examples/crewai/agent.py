"""A one-agent CrewAI crew with a tool, through interlock.

    export OPENAI_BASE_URL=http://127.0.0.1:4141/openai    # CrewAI's OpenAI provider reads it
    export OPENAI_API_KEY=vk-crew                          # a virtual key: interlock maps it to the agent
    export CREWAI_DISABLE_TELEMETRY=true OTEL_SDK_DISABLED=true
    python agent.py "Where is order 42?"

CrewAI needs a model name it knows (gpt-4o-mini) to pick its OpenAI provider. The agent is named by
a virtual key (interlock.yaml: `virtual_keys: {vk-crew: {agent: crew-order-desk}}`; the route
injects the real key, so the crew never holds it); the session, one per crew run, goes in the LLM's
`default_headers`. CrewAI writes its own files under HOME (~/.local/share/...): give it a HOME.
Prints one JSON line: {"answer": ..., "tools": [tools the crew ran]}.
"""

from __future__ import annotations

import json
import os
import sys
import uuid

from crewai import LLM, Agent, Crew, Process, Task
from crewai.tools import tool

ORDERS = {"42": "shipped on 2026-11-20 by DHL, tracking DH123", "7": "waiting for payment"}
RAN: list[str] = []


@tool("lookup_order")
def lookup_order(order_id: str) -> str:
    """An order's status, by order number."""
    RAN.append("lookup_order")
    return ORDERS.get(order_id, "no such order")


def main() -> None:
    question = sys.argv[1] if len(sys.argv) > 1 else "Where is order 42?"
    llm = LLM(
        model=os.environ.get("MODEL", "gpt-4o-mini"),
        default_headers={"X-Interlock-Session": os.environ.get("INTERLOCK_SESSION") or f"crew-{uuid.uuid4().hex[:8]}"},
        max_retries=0,  # interlock retries upstream failures itself
    )
    clerk = Agent(
        role="Order desk clerk",
        goal="Answer customers' questions about their orders, exactly",
        backstory="You look every order up before you answer.",
        tools=[lookup_order],
        llm=llm,
        allow_delegation=False,
        max_iter=5,
    )
    answer_question = Task(
        description=f"Answer the customer's question: {question}",
        expected_output="One sentence with the order's status.",
        agent=clerk,
    )
    crew = Crew(agents=[clerk], tasks=[answer_question], process=Process.sequential, verbose=False)
    result = crew.kickoff()
    print(json.dumps({"answer": result.raw, "tools": RAN}))


if __name__ == "__main__":
    main()
