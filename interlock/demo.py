"""`interlock demo`: a scripted upstream, interlock in front of it, and a scripted agent that produces
a few sessions worth looking at in the UI: a retry, a policy denial, a PII redaction, a streamed
tool loop, and a multi-agent workflow (`demo_workflow.py`). Everything runs in-process on loopback; no model provider is needed.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from interlock.demo_workflow import RISK_ROUTE, risk_route, seed_workflow, workflow_scripts
from interlock.scripted import Script, ScriptedUpstream, ToolUse
from interlock.testing import run_interlock, settings_for_test

DEMO_POLICY = """\
# The demo's policy: read by `interlock demo`, shown on the UI's Policies page.
version: 1
rules:
  - name: no-preview-models
    description: Preview models are not approved for production agents.
    deny: {models: ["*-preview*"]}
    message: preview models are not allowed

  - name: no-destructive-tools
    description: Tools that delete things are never offered to a model.
    deny: {tools: ["delete_*"]}
"""

SYSTEM = "You are a helpful assistant for Acme Travel. Answer briefly."


def demo_config(upstream_url: str, policy_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """interlock.yaml for the demo, as a dict: routes to the scripted upstream, the demo policy,
    e-mail addresses redacted on the way to the model (and restored on the way back)."""
    return {
        "routes": {
            "openai": {
                "protocol": "openai",
                "upstream": upstream_url + "/v1",
                "api_key": "sk-demo",
                "retry": {"backoff_initial": 0.15, "backoff_max": 0.5},
            },
            # The workflow's risk scorer: its model stalls once past this route's timeout; interlock retries.
            RISK_ROUTE: risk_route(upstream_url),
            "anthropic": {"protocol": "anthropic", "upstream": upstream_url, "api_key": "sk-ant-demo"},
            "tools": {"protocol": "http", "upstream": upstream_url + "/tools"},
        },
        "policies": [str(policy_dir)],
        "guardrails": {"request": {"EMAIL_ADDRESS": "redact"}},
        "shutdown_grace": 2,
    }


#: What the demo's model answers once its scripted sessions are recorded: like a model that uses the
#: tools it is offered (it calls the first, then answers with the tool's result), on both protocols,
#: so an agent of your own pointed at `interlock demo` gets to call its tools.
DEMO_MODEL = Script(use_tools=True)


def write_demo_policy(directory: str | os.PathLike[str]) -> Path:
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "demo-policy.yaml"
    path.write_text(DEMO_POLICY)
    return path


@dataclass
class Seeded:
    """The sessions the demo agent produced, by what they show."""

    sessions: dict[str, str] = field(default_factory=dict)  # "retry" → session id, ...
    workflows: dict[str, str] = field(default_factory=dict)  # "onboarding" → workflow id


def seed(proxy_url: str, upstream: ScriptedUpstream, *, suffix: str | None = None) -> Seeded:
    """Run the scripted agent through interlock at `proxy_url` (blocking). It speaks plain HTTP
    (httpx, a core dependency) so the demo needs no provider SDK."""

    tag = suffix or time.strftime("%H%M%S")
    seeded = Seeded()

    def agent(name: str, session: str | None) -> httpx.Client:
        headers = {"authorization": "Bearer demo-key", "X-Interlock-Agent": name}
        if session:
            headers["X-Interlock-Session"] = session
        return httpx.Client(base_url=proxy_url, headers=headers, timeout=30)

    def chat(http: httpx.Client, **body: Any) -> httpx.Response:
        if body.get("stream"):
            body["stream_options"] = {"include_usage": True}
            # Read to the very end of the stream, as a careful client does.
            with http.stream("POST", "/openai/chat/completions", json=body) as response:
                response.read()
            return response
        return http.post("/openai/chat/completions", json=body)

    # Warm up (PII recognizers load on the first scan) so the first session's timeline shows the
    # proxy's usual overhead. This call has no session, so the sessions list does not show it.
    upstream.script(Script(text="ready"))
    with agent("demo", None) as http:
        chat(http, model="gpt-4o-mini", messages=[{"role": "user", "content": "warm up, a@b.co"}])

    # 1. A retry: the provider is overloaded once (503), interlock retries, the agent never notices.
    session = seeded.sessions["retry"] = f"support-ticket-{tag}"
    upstream.script(
        Script(status=503),
        Script(text="Your order #1042 shipped yesterday and should arrive on Thursday.", delay=0.05),
    )
    with agent("support-bot", session) as http:
        messages: list[Any] = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Where is my order #1042?"},
        ]
        chat(http, model="gpt-4o-mini", messages=messages).raise_for_status()

    # 2. A denial: a preview model is refused by policy; the agent falls back to an approved one.
    session = seeded.sessions["denial"] = f"research-{tag}"
    upstream.script(Script(text="Three quiet beaches near Lisbon: Adraga, Ursa and Galapinhos.", delay=0.08))
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Suggest quiet beaches near Lisbon."},
    ]
    with agent("research-bot", session) as http:
        if chat(http, model="gpt-4o-preview", messages=messages).status_code == 403:
            chat(http, model="gpt-4o-mini", messages=messages).raise_for_status()

    # 3. A redaction: the user's e-mail address never reaches the model; the reply is restored.
    session = seeded.sessions["redaction"] = f"billing-{tag}"
    upstream.script(Script(text="Done: the invoice for booking B-77 is on its way to <EMAIL_ADDRESS_1>.", delay=0.06))
    with agent("billing-bot", session) as http:
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Please send the invoice for booking B-77 to jane.doe@example.com."},
        ]
        chat(http, model="gpt-4o-mini", messages=messages).raise_for_status()

    # 4. A streamed tool loop: the model calls get_weather, the agent calls the tool, the model answers.
    #    The destructive tool the agent offers is stripped from the request by policy.
    session = seeded.sessions["tools"] = f"trip-planner-{tag}"
    tools = [
        _tool("get_weather", "Current weather for a city", {"city": {"type": "string"}}),
        _tool("delete_booking", "Cancel and delete a booking", {"booking": {"type": "string"}}),
    ]
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Should I pack an umbrella for Paris?"},
    ]
    upstream.script(
        Script(tool_calls=[ToolUse("get_weather", {"city": "Paris"}, id="call_weather")], chunk_delay=0.01),
        Script(body=json.dumps({"city": "Paris", "temp_c": 14, "sky": "light rain"}).encode(), delay=0.04),
        Script(text="Yes: it is 14 °C with light rain in Paris, so pack an umbrella.", chunk_delay=0.01),
    )
    with agent("travel-bot", session) as http:
        streamed = chat(http, model="gpt-4o-mini", messages=messages, tools=tools, stream=True)
        tool_call: dict[str, str] = {"id": "", "name": "", "arguments": ""}
        for line in streamed.text.splitlines():
            if not line.startswith("data: {"):
                continue
            for choice in json.loads(line[6:]).get("choices") or []:
                for delta in choice.get("delta", {}).get("tool_calls") or []:
                    function = delta.get("function") or {}
                    tool_call["id"] = delta.get("id") or tool_call["id"]
                    tool_call["name"] += function.get("name") or ""
                    tool_call["arguments"] += function.get("arguments") or ""
        weather = http.post(
            "/tools/weather", content=tool_call["arguments"], headers={"content-type": "application/json"}
        )
        messages += [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": tool_call["id"],
                        "type": "function",
                        "function": {"name": tool_call["name"], "arguments": tool_call["arguments"]},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": tool_call["id"], "content": weather.text},
        ]
        chat(http, model="gpt-4o-mini", messages=messages, tools=tools, stream=True).raise_for_status()

    # 5. A multi-agent workflow: orchestrator → extraction → risk scorer (times out once, retried by
    #    interlock) → report, the client's e-mail address redacted (docs/workflows.md).
    workflow = seeded.workflows["onboarding"] = f"client-onboarding-{tag}"
    upstream.script(*workflow_scripts())
    seed_workflow(proxy_url, workflow)
    return seeded


def _tool(name: str, description: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": list(properties)},
        },
    }


class Seeding:
    """A stage with no hooks that holds `/ready` at 503 (`"warming": ["demo seeding"]`) until the
    demo's sessions are recorded: whoever waits for ready (a probe, `make demo` in a script, a person
    opening the UI) finds them there. `run_interlock` does not wait for it (a stage you pass is
    yours to finish)."""

    name = "demo seeding"

    def __init__(self) -> None:
        self.warmed = threading.Event()


def run_demo(
    *,
    host: str = "127.0.0.1",
    port: int = 4141,
    admin_port: int = 4142,
    store: str | None = None,
    exit_after_seed: bool = False,
    echo: Any = print,
) -> Seeded:
    """Start the scripted upstream and interlock, seed the sessions, then serve until Ctrl-C."""

    workdir = Path(tempfile.mkdtemp(prefix="interlock-demo-"))
    policy_dir = workdir / "policies"
    write_demo_policy(policy_dir)
    with ScriptedUpstream() as upstream:
        data = demo_config(upstream.url, policy_dir)
        data["listen"] = {"host": host, "port": port}
        data["admin"] = {"host": host, "port": admin_port}
        data["store"] = {"path": store or str(workdir / "demo.db")}
        seeding = Seeding()
        with run_interlock(settings_for_test(data), stages=[seeding]) as running:
            seeded = seed(running.url, upstream)
            # Your agent's calls get the demo model, never a seeding script left over (a seeded call that
            # went otherwise on a loaded machine, e.g. the workflow's stalled attempt, leaves one queued).
            if left := upstream.drop_queued():
                echo(f"interlock demo: {left} seeding answer(s) were not asked for; the recorded sessions may differ")
            upstream.set_default(DEMO_MODEL)
            if running.runtime.recorder is not None:
                running.runtime.recorder.flush()
            seeding.warmed.set()  # recorded and flushed: `/ready` may say so
            echo(f"interlock demo: {len(seeded.sessions)} sessions recorded in {data['store']['path']}")
            for what, session in seeded.sessions.items():
                echo(f"  {what:<10} {session}")
            for what, workflow in seeded.workflows.items():
                echo(f"workflow {what}: {running.admin_url}/workflow?id={workflow}")
            echo(f"policy: {policy_dir / 'demo-policy.yaml'}")
            echo(f"proxy:  {running.url}/openai  (OPENAI_BASE_URL for your own agent)")
            echo(f"        {running.url}/anthropic  (ANTHROPIC_BASE_URL)")
            echo("        the model calls the first tool your agent offers, then answers with its result")
            echo(f"open the UI: {running.admin_url}/")
            if not exit_after_seed:
                echo("serving until Ctrl-C")
                stop = threading.Event()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    signal.signal(sig, lambda *_: stop.set())
                while not stop.wait(0.5):
                    pass
    return seeded


__all__ = ["DEMO_MODEL", "DEMO_POLICY", "Seeded", "Seeding", "demo_config", "run_demo", "seed", "write_demo_policy"]
