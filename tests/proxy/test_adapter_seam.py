"""A provider is one adapter plus one registry line: a test adapter registered in `ADAPTERS` (nothing
else changed) is a config protocol, gets its model rewritten in the URL path by routing, its key
moved from the query to its key header, and its streams reassembled and read by its own methods.

The adapter here is a made-up OpenAI-compatible format with the model in the path, the way Gemini
has it (`/models/{model}/chat/completions`) and its key in `?key=`; the scripted provider answers
any such path as chat completions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from interlock.config import load_settings
from interlock.core.call import Call
from interlock.core.views import RequestView
from interlock.policies.cases import CaseRequest, build_call
from interlock.protocols import ADAPTERS
from interlock.protocols.base import BadRequest
from interlock.protocols.openai import OpenAIAdapter
from interlock.scripted import ScriptedUpstream
from interlock.yamlsource import SourceError
from tests.proxy.routing_support import collect_calls, finished

_PREFIX = "/models/"


class PathModelAdapter(OpenAIAdapter):
    name = "pathchat"
    title = "Path chat"
    key_header = "x-goog-api-key"
    key_prefix = ""
    agent_key_headers = frozenset({"authorization", "x-goog-api-key"})
    key_query_params = frozenset({"key"})
    provider_name = "path.chat"

    def parse(self, call: Call) -> RequestView:
        if not call.path.startswith(_PREFIX):
            raise BadRequest("expected /models/{model}/chat/completions", "invalid_path", 404)
        view = super().parse(call)
        view.model = call.path[len(_PREFIX) :].partition("/")[0]
        return view

    def rewrite_model(self, data: Any, path: str, model: str) -> tuple[Any, str] | None:
        current, _, rest = path[len(_PREFIX) :].partition("/")
        return None if current == model else (data, f"{_PREFIX}{model}/{rest}")


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[PathModelAdapter]:
    adapter = PathModelAdapter()
    monkeypatch.setitem(ADAPTERS, adapter.name, adapter)  # the one registry line
    yield adapter


def _route(upstream: ScriptedUpstream, **extra: Any) -> dict[str, Any]:
    return {"protocol": "pathchat", "upstream": upstream.url, "models": {"fast": [{"model": "m2"}]}, **extra}


def test_the_model_is_rewritten_in_the_path_and_the_route_key_replaces_the_query_key(
    registered: PathModelAdapter, make_interlock: Any, upstream: ScriptedUpstream
) -> None:
    running = make_interlock(routes={"p": _route(upstream, api_key="route-key")})
    calls = collect_calls(running)
    body = {"messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(f"{running.url}/p/models/fast/chat/completions?key=agent-key&alt=x", json=body)
    assert response.status_code == 200
    (sent,) = upstream.requests
    assert sent.path == "/models/m2/chat/completions"
    assert sent.query == "alt=x"  # the key parameter is never relayed
    assert sent.headers["x-goog-api-key"] == "route-key"
    assert sent.json() == body  # the model lives in the URL: the body is sent as it came
    (call,) = finished(calls)
    assert call.model == "fast" and call.attempts[0].model == "m2"
    recorded = call.attempts[0].url
    assert "/models/m2/chat/completions?" in recorded and "agent-key" not in recorded and "agent-key" not in call.query


def test_without_a_route_key_the_agents_query_key_goes_in_the_key_header(
    registered: PathModelAdapter, make_interlock: Any, upstream: ScriptedUpstream
) -> None:
    running = make_interlock(routes={"p": _route(upstream)})
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", f"{running.url}/p/models/m1/chat/completions?key=agent-key", json=body) as response:
        assert response.status_code == 200
        streamed = b"".join(response.iter_bytes())
    (sent,) = upstream.requests
    assert sent.path == "/models/m1/chat/completions" and sent.query == ""
    assert sent.headers["x-goog-api-key"] == "agent-key"
    # The adapter's own methods read what came back.
    message = registered.reassemble_stream(streamed)
    assert message["object"] == "chat.completion" and message["choices"][0]["message"]["content"]


def test_an_unregistered_protocol_is_a_config_error_naming_the_registered_ones(tmp_path: Path) -> None:
    path = tmp_path / "interlock.yaml"
    path.write_text("routes:\n  p:\n    protocol: pathchat\n    upstream: http://127.0.0.1:9\n")
    with pytest.raises(SourceError) as raised:
        load_settings(path)
    assert raised.value.line == 3 and "openai" in raised.value.message


def test_a_policy_case_builds_a_request_of_a_registered_protocol(registered: PathModelAdapter) -> None:
    call = build_call(CaseRequest.model_validate({"route": "p", "protocol": "pathchat", "path": "/models/m3/x"}))
    assert call.model == "m3" and json.loads(call.request_body)["messages"][0]["role"] == "user"
