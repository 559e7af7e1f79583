"""A LangGraph supervisor: an orchestrator hands a client brief to an extraction agent, the facts to a
risk-scoring agent, then both to a report agent, each agent a ChatOpenAI of its own, all through
interlock as one workflow (docs/workflows.md).

    export OPENAI_BASE_URL=http://127.0.0.1:4141/openai    # every agent but the risk scorer
    export RISK_BASE_URL=http://127.0.0.1:4141/risk        # the risk scorer's route (its own timeouts)
    export OPENAI_API_KEY=sk-placeholder                   # the routes inject the real key
    export INTERLOCK_WORKFLOW=client-onboarding-1
    python workflow.py

The supervisor is the plain StateGraph pattern (langgraph-supervisor wraps the same thing, and is not
in this example's lock): the orchestrator node's model calls a handoff tool, a `Command` sends the
graph to that agent's node, the agent answers into the shared history as the tool's result, and the
graph goes back to the orchestrator until it answers without a tool.

What interlock needs from it, all in headers: `X-Interlock-Agent` per agent, one
`X-Interlock-Workflow`, and a W3C `traceparent` per orchestrator step (one trace for the workflow, a
new span for each step) that the agent the step hands over to sends too, so interlock sees whose
work each agent's call is. Prints one JSON line: {"answer", "report", "handoffs"}.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from typing import Any, Literal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command

TRACE = uuid.uuid4().hex  # the workflow's W3C trace


@tool
def extract_client_facts(brief: str) -> str:
    """Hand the brief to the extraction agent"""
    return brief


@tool
def score_risk(facts: str) -> str:
    """Hand the extracted facts to the risk-scoring agent"""
    return facts


@tool
def write_report(material: str) -> str:
    """Hand facts and risk to the report agent"""
    return material


AGENTS = {
    "extract_client_facts": ("extraction", "Extract the client facts from the brief."),
    "score_risk": ("risk-scorer", "Score the client's risk from 0 to 100 and say why."),
    "write_report": ("report", "Write the onboarding report."),
}


class Workflow(MessagesState):
    span: str  # the orchestrator's span for the current step


def model(agent: str, base_url: str | None = None) -> ChatOpenAI:
    return ChatOpenAI(
        model=os.environ.get("MODEL", "gpt-4o-mini"),
        base_url=base_url or os.environ["OPENAI_BASE_URL"],
        max_retries=0,  # interlock retries upstream failures (the risk scorer's timeout) itself
        default_headers={
            "X-Interlock-Agent": agent,
            "X-Interlock-Workflow": os.environ.get("INTERLOCK_WORKFLOW") or f"onboarding-{TRACE[:8]}",
        },
    )


def traceparent(span: str) -> dict[str, dict[str, str]]:
    return {"extra_headers": {"traceparent": f"00-{TRACE}-{span}-01"}}


def build_graph() -> Any:
    orchestrator = model("orchestrator").bind_tools([extract_client_facts, score_risk, write_report])
    agents = {
        "extraction": model("extraction"),
        "risk-scorer": model("risk-scorer", os.environ.get("RISK_BASE_URL")),
        "report": model("report"),
    }

    def orchestrate(state: Workflow) -> Command[Literal["extraction", "risk-scorer", "report", "__end__"]]:
        span = uuid.uuid4().hex[:16]  # a new step of the orchestrator
        answer = orchestrator.invoke(state["messages"], **traceparent(span))
        if not isinstance(answer, AIMessage) or not answer.tool_calls:
            return Command(goto=END, update={"messages": [answer]})
        agent, _ = AGENTS[answer.tool_calls[0]["name"]]
        return Command(goto=agent, update={"messages": [answer], "span": span})

    def run_agent(name: str) -> Any:
        def node(state: Workflow) -> Command[Literal["orchestrator"]]:
            last = state["messages"][-1]
            assert isinstance(last, AIMessage)
            handoff = last.tool_calls[0]
            role = next(r for who, r in AGENTS.values() if who == name)
            material = str(next(iter(handoff["args"].values()), ""))
            messages: list[BaseMessage] = [SystemMessage(role), HumanMessage(material)]
            answer = agents[name].invoke(messages, **traceparent(state["span"]))
            result = ToolMessage(content=str(answer.content), tool_call_id=handoff["id"], name=handoff["name"])
            return Command(goto="orchestrator", update={"messages": [result]})

        return node

    graph = StateGraph(Workflow)
    graph.add_node("orchestrator", orchestrate)
    for name in agents:
        graph.add_node(name, run_agent(name))
    graph.add_edge(START, "orchestrator")
    return graph.compile()


def main() -> None:
    brief = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("BRIEF", "")
    state = build_graph().invoke(
        {
            "messages": [
                ("system", "You run client onboarding: hand each step to the right agent."),
                ("user", brief),
            ],
            "span": "",
        }
    )
    messages = state["messages"]
    handoffs = [m.name for m in messages if isinstance(m, ToolMessage)]
    report = next(
        (m.content for m in reversed(messages) if isinstance(m, ToolMessage) and m.name == "write_report"), ""
    )
    print(json.dumps({"answer": messages[-1].content, "report": report, "handoffs": handoffs}))


if __name__ == "__main__":
    main()
