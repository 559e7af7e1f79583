"""The demo's multi-agent workflow: an orchestrator hands a client brief to an extraction agent,
passes its output to a risk scorer, then has a report agent write it up (docs/workflows.md).

`seed_workflow` drives it with plain HTTP (httpx, a core dependency), so `interlock demo` needs no
agent framework; `examples/langgraph/workflow.py` runs the same workflow as a LangGraph supervisor,
against the same scripted answers (`workflow_scripts`). What it shows on the workflow page:

- three agents and an orchestrator, one lane each, under one `X-Interlock-Workflow`;
- handoffs by span parentage: each agent's calls carry a W3C `traceparent` whose parent is the span
  the orchestrator sent the call that handed the work over from (its tool call);
- handoffs by text: the extraction's answer reaches the risk scorer and the report agent verbatim;
- the risk scorer's model times out once (its first attempt passes the route's `first_token`
  timeout) and interlock retries it; the agent never sees the failure;
- the client's e-mail address in the brief is redacted before any model sees it.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

from interlock.scripted import Script, ToolUse

#: The brief the orchestrator receives (the e-mail address is the PII the guardrail redacts).
BRIEF = (
    "New client brief: Acme Shipping Holdings Ltd wants a trade finance line of EUR 4M. Registered in"
    " Limassol, Cyprus; sector: bulk shipping; contact jane.doe@example.com. Please extract the facts,"
    " score the risk and write the onboarding report."
)
EXTRACTED = (
    "Client: Acme Shipping Holdings Ltd. Jurisdiction: Cyprus (Limassol). Sector: bulk shipping."
    " Facility requested: trade finance line, EUR 4M. Beneficial owner not yet disclosed."
)
RISK = (
    "Risk score 72/100 (high): offshore-registered holding, beneficial owner not yet disclosed,"
    " sanctions exposure typical of bulk shipping routes. Escalate to enhanced due diligence."
)
REPORT = (
    "Onboarding report for Acme Shipping Holdings Ltd: trade finance line of EUR 4M requested;"
    " risk 72/100 (high); recommendation: proceed only after enhanced due diligence."
)
AGENTS = ("orchestrator", "extraction", "risk-scorer", "report")
#: The risk scorer's own route (`RISK_ROUTE`, in `interlock demo`'s config) has a tight first-token
#: timeout, which its first attempt passes: the scripted provider holds that answer back for
#: `STALLED_FOR`. Far apart, and on one route only, so a slow machine never blurs them.
RISK_ROUTE = "risk"
FIRST_TOKEN_TIMEOUT = 2.0
STALLED_FOR = 6.0

_TOOLS = [
    ("extract_client_facts", "Hand the brief to the extraction agent", "brief"),
    ("score_risk", "Hand the extracted facts to the risk-scoring agent", "facts"),
    ("write_report", "Hand facts and risk to the report agent", "material"),
]


def orchestrator_tools() -> list[dict[str, Any]]:
    """The orchestrator's handoff tools, OpenAI chat format."""
    return [
        {
            "type": "function",
            "function": {
                "name": name,
                "description": description,
                "parameters": {"type": "object", "properties": {arg: {"type": "string"}}, "required": [arg]},
            },
        }
        for name, description, arg in _TOOLS
    ]


def workflow_scripts() -> list[Script]:
    """What the scripted provider answers, in the order the workflow asks: orchestrator, extraction,
    orchestrator, risk scorer (stalled once, then answered), orchestrator, report, orchestrator."""
    return [
        Script(tool_calls=[ToolUse("extract_client_facts", {"brief": BRIEF}, id="call_extract")]),
        Script(text=EXTRACTED),
        Script(tool_calls=[ToolUse("score_risk", {"facts": EXTRACTED}, id="call_risk")]),
        Script(text="(stalled)", delay=STALLED_FOR),
        Script(text=RISK),
        Script(tool_calls=[ToolUse("write_report", {"material": EXTRACTED + " " + RISK}, id="call_report")]),
        Script(text=REPORT),
        Script(text="The onboarding report is ready: risk 72/100, enhanced due diligence recommended."),
    ]


def new_span() -> str:
    return os.urandom(8).hex()


def risk_route(upstream_url: str) -> dict[str, Any]:
    """The risk scorer's route for a config (OpenAI protocol to the scripted provider at `upstream_url`)."""
    return {
        "protocol": "openai",
        "upstream": upstream_url + "/v1",
        "api_key": "sk-demo",
        "retry": {"backoff_initial": 0.05, "backoff_max": 0.2},
        "timeouts": {"first_token": FIRST_TOKEN_TIMEOUT},
    }


def seed_workflow(proxy_url: str, workflow: str, *, model: str = "gpt-4o-mini") -> str:
    """Run the workflow through interlock at `proxy_url` (blocking; the provider must be scripted
    with `workflow_scripts()` first). Returns the workflow's W3C trace id."""

    trace = os.urandom(16).hex()

    def ask(agent: str, parent_span: str, messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        headers = {
            "authorization": "Bearer demo-key",
            "X-Interlock-Agent": agent,
            "X-Interlock-Session": f"{workflow}-{agent}",
            "X-Interlock-Workflow": workflow,
            "traceparent": f"00-{trace}-{parent_span}-01",
        }
        body = {"model": model, "messages": messages, **extra}
        with httpx.Client(base_url=proxy_url, headers=headers, timeout=60) as http:
            route = RISK_ROUTE if agent == "risk-scorer" else "openai"
            response = http.post(f"/{route}/chat/completions", json=body)
        response.raise_for_status()
        message: dict[str, Any] = response.json()["choices"][0]["message"]
        return message

    def agent(name: str, parent_span: str, role: str, material: str) -> str:
        messages = [{"role": "system", "content": role}, {"role": "user", "content": material}]
        return str(ask(name, parent_span, messages)["content"])

    history: list[dict[str, Any]] = [
        {"role": "system", "content": "You run client onboarding: hand each step to the right agent."},
        {"role": "user", "content": BRIEF},
    ]
    roles = {
        "extract_client_facts": ("extraction", "Extract the client facts from the brief."),
        "score_risk": ("risk-scorer", "Score the client's risk from 0 to 100 and say why."),
        "write_report": ("report", "Write the onboarding report."),
    }
    while True:
        span = new_span()  # the orchestrator's span for this step: its call, and the work it hands off
        message = ask("orchestrator", span, history, tools=orchestrator_tools())
        calls = message.get("tool_calls") or []
        if not calls:
            return trace
        history.append({"role": "assistant", "content": None, "tool_calls": calls})
        for call in calls:
            name = call["function"]["name"]
            who, role = roles[name]
            arguments = json.loads(call["function"]["arguments"] or "{}")
            result = agent(who, span, role, next(iter(arguments.values()), ""))
            history.append({"role": "tool", "tool_call_id": call["id"], "content": result})


__all__ = [
    "AGENTS",
    "BRIEF",
    "FIRST_TOKEN_TIMEOUT",
    "RISK_ROUTE",
    "orchestrator_tools",
    "risk_route",
    "seed_workflow",
    "workflow_scripts",
]
