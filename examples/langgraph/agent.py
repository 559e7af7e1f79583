"""A LangGraph ReAct agent (langchain-openai's ChatOpenAI, one tool), through interlock.

    export OPENAI_BASE_URL=http://127.0.0.1:4141/openai    # ChatOpenAI's client reads it
    export OPENAI_API_KEY=sk-placeholder                   # the route injects the real key
    python agent.py "Where is order 42?"

The graph is the classic loop: the model node, then the tool node while the model asks for tools.
The agent and session go in `default_headers`; the session is the LangGraph thread id, so one
conversation (one checkpointer thread) is one interlock session. The model streams its tokens
(`streaming=True`, `stream_usage=True`), so interlock records SSE calls with their token usage.
Prints one JSON line: {"answer": ..., "tools": [tools the agent ran]}.
"""

from __future__ import annotations

import json
import os
import sys
import uuid

from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

ORDERS = {"42": "shipped on 2026-11-20 by DHL, tracking DH123", "7": "waiting for payment"}


@tool
def lookup_order(order_id: str) -> str:
    """An order's status, by order number."""
    return ORDERS.get(order_id, "no such order")


def build_graph(thread_id: str) -> object:
    model = ChatOpenAI(
        model=os.environ.get("MODEL", "gpt-4o-mini"),
        streaming=True,
        stream_usage=True,
        max_retries=0,  # interlock retries upstream failures itself
        default_headers={
            "X-Interlock-Agent": os.environ.get("INTERLOCK_AGENT", "langgraph-orders"),
            "X-Interlock-Session": thread_id,
        },
    ).bind_tools([lookup_order])

    def call_model(state: MessagesState) -> dict[str, list[object]]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", call_model)
    graph.add_node("tools", ToolNode([lookup_order]))
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition)
    graph.add_edge("tools", "model")
    return graph.compile(checkpointer=InMemorySaver())


def main() -> None:
    question = sys.argv[1] if len(sys.argv) > 1 else "Where is order 42?"
    thread_id = os.environ.get("INTERLOCK_SESSION") or f"thread-{uuid.uuid4().hex[:8]}"
    agent = build_graph(thread_id)
    state = agent.invoke(  # type: ignore[attr-defined]
        {"messages": [("system", "You answer questions about orders."), ("user", question)]},
        {"configurable": {"thread_id": thread_id}},
    )
    messages = state["messages"]
    ran = [m.name for m in messages if isinstance(m, ToolMessage)]
    answer = next(m.content for m in reversed(messages) if isinstance(m, AIMessage))
    print(json.dumps({"answer": answer, "tools": ran}))


if __name__ == "__main__":
    main()
