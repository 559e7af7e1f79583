"""Helpers for the replay tests: a small tool-using agent on the real openai SDK, and a
recorded incident of it (recorded through interlock into the store, exported as a bundle)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai

from interlock.scripted import Script, ScriptedUpstream, ToolUse
from interlock.testing import run_interlock, settings_for_test

SESSION = "incident-42"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def weather_agent(
    question: str,
    *,
    base_url: str,
    tools_url: str,
    system: str = "You are a weather assistant.",
    session: str = SESSION,
    forecast: Callable[[str], str] | None = None,
) -> str:
    """A typical tool loop: ask the model, run the tools it calls (an HTTP tool behind interlock's
    `tools` route, or `forecast`), send the results back, until it answers."""
    headers = {"X-Interlock-Session": session}
    with openai.OpenAI(base_url=base_url, api_key="sk-agent", max_retries=0, default_headers=headers) as client:
        return _tool_loop(client, question, system, tools_url, headers, forecast)


def _tool_loop(
    client: openai.OpenAI,
    question: str,
    system: str,
    tools_url: str,
    headers: dict[str, str],
    forecast: Callable[[str], str] | None,
) -> str:
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    for _ in range(6):
        reply = client.chat.completions.create(model="gpt-4o", messages=messages, tools=TOOLS)  # type: ignore[arg-type]
        message = reply.choices[0].message
        if not message.tool_calls:
            return message.content or ""
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls:
            city = json.loads(call.function.arguments)["city"]  # type: ignore[union-attr]
            if forecast is not None:
                result = forecast(city)
            else:
                response = httpx.post(f"{tools_url}/weather", json={"city": city}, headers=headers, timeout=10)
                response.raise_for_status()
                result = f"{city}: {response.json()['choices'][0]['message']['content']}"
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    raise RuntimeError("the agent did not finish")


def incident_scripts() -> list[Script]:
    """The model's side of the incident: two tool calls, then the answer."""
    return [
        Script(tool_calls=[ToolUse("get_weather", {"city": "Paris"}, id="call_paris")]),
        Script(tool_calls=[ToolUse("get_weather", {"city": "Lyon"}, id="call_lyon")]),
        Script(text="Paris: sunny. Lyon: rainy. Take an umbrella to Lyon."),
        Script(text="sunny"),  # the weather tool's answers (the tools route reaches the same fake)
        Script(text="rainy"),
    ]


@dataclass
class Incident:
    bundle: Path
    answer: str
    routes: dict[str, Any]
    store: Path


def routes_for(upstream: ScriptedUpstream) -> dict[str, Any]:
    return {
        "openai": {"protocol": "openai", "upstream": upstream.url + "/v1", "api_key": "sk-real-openai"},
        "anthropic": {"protocol": "anthropic", "upstream": upstream.url, "api_key": "sk-ant-real"},
        "tools": {"protocol": "http", "upstream": upstream.url + "/tools"},
    }


class _OrderedUpstream(ScriptedUpstream):
    """Model calls get the model scripts, tool calls the tool scripts, whatever the interleaving."""

    def __init__(self, model: list[Script], tools: list[Script]) -> None:
        super().__init__()
        self.model_scripts, self.tool_scripts = list(model), list(tools)

    async def _respond(
        self, path: str, data: dict[str, Any], script: Script, send: Any, gone: asyncio.Event, dialect: Any
    ) -> None:
        queue = self.tool_scripts if path.startswith("/tools") else self.model_scripts
        chosen = queue.pop(0) if queue else script
        await super()._respond(path, data, chosen, send, gone, dialect)


def record_incident(tmp_path: Path, question: str = "Weather in Paris and Lyon?") -> Incident:
    """Run the agent through interlock against a fake provider, then export its session. The fake
    provider is stopped when this returns: a replay has nothing to fall back on."""
    scripts = incident_scripts()
    store = tmp_path / "interlock.db"
    with _OrderedUpstream(scripts[:3], scripts[3:]) as upstream:
        routes = routes_for(upstream)
        settings = settings_for_test({"routes": routes, "shutdown_grace": 1, "store": {"path": str(store)}})
        with run_interlock(settings) as running:
            answer = weather_agent(question, base_url=running.url + "/openai", tools_url=running.url + "/tools")
    bundle = tmp_path / "incident.db"
    from interlock.tracing.store import Store

    with Store(store) as opened:
        assert opened.export(bundle, session=SESSION) == 5
    return Incident(bundle, answer, routes, store)


def recorded_call(
    request: dict[str, Any] | bytes,
    response: dict[str, Any] | bytes | None = None,
    *,
    route: str = "openai",
    protocol: str = "openai",
    method: str = "POST",
    path: str = "/chat/completions",
    session: str | None = SESSION,
    status: int | None = 200,
    chunks: list[tuple[float, bytes]] | None = None,
    headers: list[tuple[str, str]] | None = None,
    **fields: Any,
) -> Any:
    """A recorded Call built by hand, as the store would give it back."""
    from interlock.core.call import Call, Chunk, new_id

    body = request if isinstance(request, bytes) else json.dumps(request).encode()
    call = Call(id=new_id(), route=route, protocol=protocol, method=method, path=path, session=session)
    call.request_body = body
    call.status = status
    if chunks is not None:
        call.stream = True
        call.chunks = [Chunk(t, data) for t, data in chunks]
        call.response_headers = headers or [("content-type", "text/event-stream; charset=utf-8")]
    else:
        payload = response if isinstance(response, bytes) else json.dumps(response or {"ok": True}).encode()
        call.response_body = payload
        call.response_headers = headers or [("content-type", "application/json"), ("x-request-id", "req_1")]
    for key, value in fields.items():
        setattr(call, key, value)
    return call


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], **extra}
