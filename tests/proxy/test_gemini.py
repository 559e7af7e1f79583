"""Gemini through interlock, driven by the real google-genai SDK (and raw HTTP for what the SDK never
sends: `?key=`, the JSON-array stream without `alt=sse`)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors, types

from interlock.scripted import Script, ScriptedUpstream, ToolUse
from interlock.testing import Running, replay_server
from interlock.tracing.store import Store
from tests.conftest import passes_policy_test
from tests.proxy.routing_support import conversation

MODEL = "gemini-2.0-flash"
EMAIL = "jane.roe@acme-corp.io"
WEATHER = types.Tool(
    function_declarations=[
        types.FunctionDeclaration(
            name="get_weather", parameters={"type": "OBJECT", "properties": {"city": {"type": "STRING"}}}
        ),
        types.FunctionDeclaration(name="rm", parameters={"type": "OBJECT"}),
    ]
)
NO_AUTO = types.AutomaticFunctionCallingConfig(disable=True)


def gemini_route(upstream: ScriptedUpstream) -> dict[str, Any]:
    return {"protocol": "gemini", "upstream": upstream.url, "api_key": "google-real-key"}


@pytest.fixture
def start(make_interlock: Any, upstream: ScriptedUpstream) -> Any:
    def run(**config: Any) -> Running:
        routes = {"gemini": gemini_route(upstream), **config.pop("routes", {})}
        return make_interlock(routes=routes, **config)  # type: ignore[no-any-return]

    return run


@pytest.fixture
def clients() -> Iterator[list[genai.Client]]:
    made: list[genai.Client] = []
    yield made
    for client in made:
        client.close()


def client_for(
    running: Running, clients: list[genai.Client], session: str = "g1", base: str | None = None
) -> genai.Client:
    options = types.HttpOptions(
        base_url=base or running.url + "/gemini",
        headers={"X-Interlock-Session": session},
        retry_options=types.HttpRetryOptions(attempts=1),
    )
    client = genai.Client(api_key="agent-placeholder-key", http_options=options)
    clients.append(client)
    return client


def recorded(running: Running, count: int) -> list[dict[str, Any]]:
    """The calls in the store once `count` are recorded (newest first)."""
    recorder = running.runtime.recorder
    assert recorder is not None
    deadline = time.monotonic() + 60
    while True:
        assert recorder.flush()
        calls = running.runtime.store.list_calls(limit=100)
        if len(calls) >= count:
            return calls
        assert time.monotonic() < deadline, "calls were not recorded in time"
        time.sleep(0.01)


def error_of(exc: errors.APIError) -> dict[str, Any]:
    """Google's error object as interlock sent it (by the protocol, not the SDK's wording)."""
    body = exc.details
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    return body["error"]  # type: ignore[no-any-return]


def test_generate_streamed_and_not_with_usage_keys_and_the_call_page(
    start: Any, upstream: ScriptedUpstream, clients: list[genai.Client]
) -> None:
    running = start()
    client = client_for(running, clients)
    upstream.script(Script(reasoning_tokens=5, cached_tokens=4))
    reply = client.models.generate_content(
        model=MODEL,
        contents="hello there",
        config=types.GenerateContentConfig(system_instruction="be brief", max_output_tokens=50),
    )
    assert reply.text == "echo: hello there"
    sent = upstream.requests[-1]
    assert sent.path.endswith(f"/models/{MODEL}:generateContent")
    assert sent.headers["x-goog-api-key"] == "google-real-key"  # the route's key, never the agent's
    assert sent.json()["systemInstruction"]["parts"][0]["text"] == "be brief"

    upstream.script(Script(text="streaming works fine", chunk_size=3))
    pieces = [chunk.text for chunk in client.models.generate_content_stream(model=MODEL, contents="go")]
    assert "".join(p or "" for p in pieces) == "streaming works fine" and pieces[0] == "str"
    assert upstream.requests[-1].query == "alt=sse"

    streamed, plain = recorded(running, 2)[:2]
    assert (plain["input_tokens"], plain["output_tokens"]) == (11, 7 + 5)  # thoughts are output
    assert (streamed["stream"], streamed["input_tokens"], streamed["output_tokens"]) == (True, 11, 7)
    assert plain["cost_usd"] and plain["cost_usd"] > 0  # priced from the catalogue (google)

    # The call page shows the conversation, the stream reassembled into the model's answer.
    assert conversation(running, streamed["id"]) == [("user", "go"), ("assistant response", "streaming works fine")]
    assert conversation(running, plain["id"]) == [
        ("system", "be brief"),
        ("user", "hello there"),
        ("assistant response", "echo: hello there"),
    ]


def test_query_key_is_replaced_and_never_recorded_and_the_json_array_stream(
    start: Any, upstream: ScriptedUpstream
) -> None:
    running = start()
    body = {"contents": [{"role": "user", "parts": [{"text": "array please"}]}]}
    url = f"{running.url}/gemini/v1beta/models/{MODEL}:streamGenerateContent?key=agent-secret-key"
    proxied = httpx.post(url, json=body)
    assert proxied.status_code == 200
    sent = upstream.requests[-1]
    assert "key=" not in sent.query and sent.headers["x-goog-api-key"] == "google-real-key"
    direct = httpx.post(f"{upstream.url}/v1beta/models/{MODEL}:streamGenerateContent", json=body)
    assert proxied.content == direct.content and proxied.content.startswith(b"[{")
    texts = [part["text"] for item in proxied.json() for part in item["candidates"][0]["content"]["parts"]]
    assert "".join(texts) == "echo: array please"
    (call,) = recorded(running, 1)
    assert (call["input_tokens"], call["output_tokens"]) == (11, 7)
    assert conversation(running, call["id"])[-1] == ("assistant response", "echo: array please")
    stored = Path(running.settings.store.path)
    assert b"agent-secret-key" not in b"".join(p.read_bytes() for p in stored.parent.glob(stored.name + "*"))


def test_tool_call_round_trip_and_a_denied_tool(
    start: Any, upstream: ScriptedUpstream, clients: list[genai.Client], tmp_path: Path
) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text("rules:\n  - name: no-rm\n    deny: {tools: [rm]}\n")
    running = start(policies=[str(tmp_path / "policies")])
    client = client_for(running, clients)
    config = types.GenerateContentConfig(tools=[WEATHER], automatic_function_calling=NO_AUTO)
    upstream.script(Script(tool_calls=[ToolUse("get_weather", {"city": "Paris"})]), Script(text="It is sunny."))
    first = client.models.generate_content(model=MODEL, contents="weather in Paris?", config=config)
    assert first.function_calls and first.function_calls[0].name == "get_weather"
    assert first.function_calls[0].args == {"city": "Paris"}
    offered = upstream.requests[-1].json()["tools"][0]["functionDeclarations"]
    assert [d["name"] for d in offered] == ["get_weather"]  # the denied tool is not offered
    assert first.candidates and first.candidates[0].content
    contents = [
        types.Content(role="user", parts=[types.Part(text="weather in Paris?")]),
        first.candidates[0].content,
        types.Content(
            role="user",
            parts=[types.Part.from_function_response(name="get_weather", response={"forecast": "sunny"})],
        ),
    ]
    second = client.models.generate_content(model=MODEL, contents=contents, config=config)
    assert second.text == "It is sunny."
    result = upstream.requests[-1].json()["contents"][2]["parts"][0]["functionResponse"]
    assert result == {"name": "get_weather", "response": {"forecast": "sunny"}}

    # The model calls the denied tool anyway: refused, not streamed on.
    upstream.script(Script(tool_calls=[ToolUse("rm", {"path": "Q" * 40})]))
    with pytest.raises(errors.APIError) as refused:
        client.models.generate_content(model=MODEL, contents="clean up", config=config)
    error = error_of(refused.value)
    assert error["code"] == refused.value.code and error["status"] in ("PERMISSION_DENIED", "INVALID_ARGUMENT")
    assert "no-rm" in error["message"]
    upstream.script(Script(text="ok then", tool_calls=[ToolUse("rm", {"path": "Q" * 40})]))
    received: list[str] = []
    with pytest.raises(errors.APIError):
        for chunk in client.models.generate_content_stream(model=MODEL, contents="clean up", config=config):
            received.append(chunk.model_dump_json())
    assert "QQ" not in "".join(received)


@pytest.mark.parametrize("stream", [False, True])
def test_an_email_is_redacted_upstream_and_restored_for_the_agent(
    start: Any, upstream: ScriptedUpstream, clients: list[genai.Client], stream: bool
) -> None:
    running = start(guardrails={"request": {"EMAIL_ADDRESS": "redact"}})
    client = client_for(running, clients)
    upstream.script(Script(chunk_size=3))
    question = f"mail {EMAIL} and {EMAIL}"
    if stream:
        text = "".join(c.text or "" for c in client.models.generate_content_stream(model=MODEL, contents=question))
    else:
        text = client.models.generate_content(model=MODEL, contents=question).text or ""
    assert text == f"echo: {question}"
    sent = upstream.requests[-1].json()["contents"][0]["parts"][0]["text"]
    assert sent == "mail <EMAIL_ADDRESS_1> and <EMAIL_ADDRESS_1>"
    assert EMAIL.encode() not in b"".join(r.body for r in upstream.requests)


def test_function_args_and_results_are_scanned(
    start: Any, upstream: ScriptedUpstream, clients: list[genai.Client]
) -> None:
    start_running = start(guardrails={"request": {"EMAIL_ADDRESS": "redact"}})
    client = client_for(start_running, clients)
    contents = [
        types.Content(role="user", parts=[types.Part(text="who?")]),
        types.Content(role="model", parts=[types.Part.from_function_call(name="lookup", args={"email": EMAIL})]),
        types.Content(role="user", parts=[types.Part.from_function_response(name="lookup", response={"owner": EMAIL})]),
    ]
    client.models.generate_content(model=MODEL, contents=contents)
    assert EMAIL.encode() not in upstream.requests[-1].body


def test_a_budget_refuses_in_googles_error_shape(
    start: Any, upstream: ScriptedUpstream, clients: list[genai.Client], tmp_path: Path
) -> None:
    (tmp_path / "policies").mkdir()
    rule = "rules:\n  - name: tiny\n    limits: {budget_usd_per_day: 0.000001}\n"
    (tmp_path / "policies" / "p.yaml").write_text(rule)
    running = start(policies=[str(tmp_path / "policies")])
    client = client_for(running, clients)
    client.models.generate_content(model=MODEL, contents="spend")
    recorded(running, 1)
    with pytest.raises(errors.APIError) as refused:
        client.models.generate_content(model=MODEL, contents="spend again")
    error = error_of(refused.value)
    assert refused.value.code in (403, 429) and error["code"] == refused.value.code
    assert error["details"][0]["reason"] == "budget_exceeded" and "tiny" in error["message"]
    assert len(upstream.requests) == 1


def budget(tmp_path: Path, unpriced: str) -> list[str]:
    (tmp_path / "policies").mkdir()
    rule = f"rules:\n  - name: daily\n    limits: {{budget_usd_per_day: 5, unpriced: {unpriced}}}\n"
    (tmp_path / "policies" / "p.yaml").write_text(rule)
    return [str(tmp_path / "policies")]


def test_count_tokens_is_free_and_an_embedding_without_usage_is_refused_by_a_budget(
    start: Any, upstream: ScriptedUpstream, clients: list[genai.Client], tmp_path: Path
) -> None:
    running = start(policies=budget(tmp_path, "deny"))
    client = client_for(running, clients)
    upstream.script(Script(input_tokens=9))
    assert client.models.count_tokens(model=MODEL, contents="how many tokens").total_tokens == 9
    (counted,) = recorded(running, 1)
    assert (counted["cost_usd"], counted["cost_source"]) == (0.0, "free")  # Google bills no counting

    # An embedding is billed, but Google's answer carries no usage: a money budget cannot count it,
    # so under `unpriced: deny` it is refused before it is sent, in Google's error shape.
    with pytest.raises(errors.APIError) as refused:
        client.models.embed_content(model="gemini-embedding-001", contents="embed me")
    error = error_of(refused.value)
    assert refused.value.code == 403 and error["details"][0]["reason"] == "unpriced_model"
    assert len(upstream.requests) == 1  # only the count went upstream


def test_an_embedding_without_usage_is_recorded_unpriced_with_the_reason(
    start: Any, upstream: ScriptedUpstream, clients: list[genai.Client], tmp_path: Path
) -> None:
    running = start(policies=budget(tmp_path, "warn"))
    client = client_for(running, clients)
    assert client.models.embed_content(model="gemini-embedding-001", contents="embed me").embeddings
    (call,) = recorded(running, 1)
    assert (call["cost_usd"], call["cost_source"]) == (None, "unpriced")
    full = running.runtime.store.get_call(call["id"])
    assert full is not None and "no token usage" in full.meta["cost_reason"]
    assert any(d.stage == "limits" and d.action == "monitor" for d in full.decisions)  # counted $0, visibly
    page = httpx.get(f"{running.admin_url}/call/{call['id']}")
    assert page.status_code == 200 and 'class="muted small cost-reason"' in page.text  # the reason is shown


def test_a_recorded_session_replays_offline(
    start: Any, upstream: ScriptedUpstream, clients: list[genai.Client], tmp_path: Path
) -> None:
    running = start()
    client = client_for(running, clients, session="incident")
    upstream.script(Script(text="first answer"), Script(text="second answer", chunk_size=5))
    answers = [client.models.generate_content(model=MODEL, contents="one").text]
    answers.append("".join(c.text or "" for c in client.models.generate_content_stream(model=MODEL, contents="two")))
    recorded(running, 2)
    bundle = tmp_path / "incident.db"
    with Store(Path(running.settings.store.path)) as store:
        assert store.export(bundle, session="incident") == 2
    upstream.reset()
    with replay_server(bundle) as replay:
        again = client_for(running, clients, session="incident", base=replay.base_url("gemini"))
        replayed = [again.models.generate_content(model=MODEL, contents="one").text]
        replayed.append(
            "".join(c.text or "" for c in again.models.generate_content_stream(model=MODEL, contents="two"))
        )
        assert replayed == answers == ["first answer", "second answer"]
        with pytest.raises(errors.APIError) as diverged:
            again.models.generate_content(model=MODEL, contents="three")
    assert diverged.value.code == 409
    assert error_of(diverged.value)["details"][0]["reason"] == "replay_divergence"
    assert upstream.requests == []  # nothing reached a model


def test_google_error_shape_for_bad_input(start: Any) -> None:
    running = start()
    bad = httpx.post(
        f"{running.url}/gemini/v1beta/models/{MODEL}:generateContent",
        content=b'{"contents": "not a list"}',
        headers={"content-type": "application/json"},
    )
    assert bad.status_code == 400
    error = bad.json()["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    assert error["details"][0]["reason"] == "invalid_request"
    assert json.loads(bad.content)  # one JSON document


def test_an_alias_and_its_fallback_rewrite_the_model_in_the_path(
    start: Any, upstream: ScriptedUpstream, clients: list[genai.Client]
) -> None:
    route = {**gemini_route(upstream), "models": {"smart": [{"model": "gemini-2.5-pro"}, {"model": MODEL}]}}
    running = start(routes={"gemini": route})
    upstream.set_model("gemini-2.5-pro", Script(status=503))
    reply = client_for(running, clients).models.generate_content(model="smart", contents="hi")
    assert reply.text == "echo: hi"
    paths = [r.path.rsplit("/", 1)[1] for r in upstream.requests]
    # The failing model may be retried before the fallback (the route's retry policy); the last goes to it.
    assert paths[-1] == f"{MODEL}:generateContent"
    assert set(paths[:-1]) == {"gemini-2.5-pro:generateContent"}


def test_the_json_array_stream_is_relayed_as_it_comes_with_pii_restored_and_a_denied_tool_cut(
    start: Any, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text("rules:\n  - name: no-rm\n    deny: {tools: [rm]}\n")
    running = start(guardrails={"request": {"EMAIL_ADDRESS": "redact"}}, policies=[str(tmp_path / "policies")])
    url = f"{running.url}/gemini/v1beta/models/{MODEL}:streamGenerateContent"
    question = {"contents": [{"role": "user", "parts": [{"text": f"mail {EMAIL} and {EMAIL}"}]}]}
    upstream.script(Script(chunk_size=3, chunk_delay=0.01))
    with httpx.stream("POST", url, json=question) as response:
        assert response.headers["content-type"].startswith("application/json")
        pieces = [piece for piece in response.iter_raw() if piece]
    assert len(pieces) > 1  # element by element, not one body at the end
    answer = json.loads(b"".join(pieces))
    texts = [part["text"] for item in answer for part in item["candidates"][0]["content"]["parts"]]
    assert "".join(texts) == f"echo: mail {EMAIL} and {EMAIL}"
    assert EMAIL.encode() not in b"".join(r.body for r in upstream.requests)

    upstream.script(Script(text="sure", tool_calls=[ToolUse("rm", {"path": "Q" * 40})]))
    cut = httpx.post(url, json={"contents": [{"role": "user", "parts": [{"text": "clean up"}]}]})
    assert cut.status_code == 200 and b"QQ" not in cut.content
    # The refusal is the array's last element, in Google's error shape, and the array is closed.
    *answered, refusal = cut.json()
    assert all("candidates" in item for item in answered)  # the element calling rm never goes out
    assert refusal["error"]["details"][0]["reason"] == "policy_denied" and "no-rm" in refusal["error"]["message"]


@pytest.mark.parametrize("framing", ["sse", "array"])
def test_a_stream_interlock_ends_keeps_the_framing_the_agent_asked_for(
    start: Any, upstream: ScriptedUpstream, clients: list[genai.Client], framing: str, tmp_path: Path
) -> None:
    # (A stream ended before its first element: the denied tool above, `[{"error": ...}]`.)
    running = start()
    upstream.script(Script(text="a long enough answer to stream", chunk_size=3, reset_after=2))
    if framing == "sse":  # what google-genai asks for: its API error, raised from the stream's event
        client = client_for(running, clients)
        with pytest.raises(errors.APIError) as raised:
            for _ in client.models.generate_content_stream(model=MODEL, contents="go"):
                pass
        assert error_of(raised.value)["details"][0]["reason"] == "stream_broken"
        return
    path = f"/v1beta/models/{MODEL}:streamGenerateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "go"}]}]}
    broken = httpx.post(f"{running.url}/gemini{path}", json=body, headers={"X-Interlock-Session": "broken"})
    assert broken.status_code == 200  # the head went out before the upstream broke
    *answered, failure = broken.json()  # a whole JSON array, however far the stream got
    assert len(answered) == 2 and all("candidates" in item for item in answered)
    assert failure["error"]["details"][0]["reason"] == "stream_broken"
    assert failure["error"]["status"] == "INTERNAL"

    # Replayed, the agent gets the same array: the error event the proxy wrote, framed the same way.
    recorded(running, 1)
    bundle = tmp_path / "broken.db"
    with Store(Path(running.settings.store.path)) as store:
        assert store.export(bundle, session="broken") == 1
    with replay_server(bundle) as replay:
        again = httpx.post(f"{replay.base_url('gemini')}{path}", json=body, headers={"X-Interlock-Session": "broken"})
    assert again.status_code == 200 and again.json() == broken.json()


def test_a_virtual_key_in_x_goog_api_key_names_the_agent_and_never_leaves(
    start: Any, upstream: ScriptedUpstream, clients: list[genai.Client]
) -> None:
    running = start(virtual_keys={"vk-gemini-keyed": {"agent": "keyed"}})
    options = types.HttpOptions(base_url=running.url + "/gemini", headers={"X-Interlock-Session": "keyed"})
    client = genai.Client(api_key="vk-gemini-keyed", http_options=options)
    clients.append(client)
    client.models.generate_content(model=MODEL, contents="hi")
    assert upstream.requests[-1].headers["x-goog-api-key"] == "google-real-key"
    assert all("vk-gemini-keyed" not in v for v in upstream.requests[-1].headers.values())
    (call,) = recorded(running, 1)
    assert call["agent"] == "keyed"


def test_policy_test_cases_read_the_model_from_the_path(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    passes_policy_test(
        tmp_path,
        "routes:\n  gemini: {protocol: gemini}\n",
        "rules:\n  - name: no-pro\n    deny: {models: [gemini-2.5-pro], tools: [rm]}\n",
        "cases:\n"
        "  - name: the model named by the case goes in the path\n"
        "    request: {route: gemini, model: gemini-2.5-pro}\n"
        "    expect: {decision: deny, rule: no-pro}\n"
        "  - name: a path names the model too\n"
        "    request: {route: gemini, path: /v1beta/models/gemini-2.5-pro:streamGenerateContent}\n"
        "    expect: {decision: deny, rule: no-pro}\n"
        "  - name: the default model passes\n"
        "    request: {route: gemini}\n"
        "    expect: {decision: allow}\n",
    )


def test_a_virtual_key_in_the_query_names_the_agent_and_is_never_sent(start: Any, upstream: ScriptedUpstream) -> None:
    # A route without a key of its own: the agent's key would pass through, but never a virtual one.
    running = start(
        routes={"gemini": {"protocol": "gemini", "upstream": upstream.url}},
        virtual_keys={"vk-gemini-query": {"agent": "query-agent", "session": "by-query"}},
    )
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    reply = httpx.post(f"{running.url}/gemini/v1beta/models/{MODEL}:generateContent?key=vk-gemini-query", json=body)
    assert reply.status_code == 200
    sent = upstream.requests[-1]
    assert "x-goog-api-key" not in sent.headers and "vk-gemini-query" not in sent.query
    (call,) = recorded(running, 1)
    assert (call["agent"], call["session"]) == ("query-agent", "by-query")


def test_an_agents_oauth_token_is_replaced_by_the_routes_key_and_never_recorded(
    start: Any, upstream: ScriptedUpstream, clients: list[genai.Client]
) -> None:
    token = "ya29.agent-oauth-token"
    running = start(routes={"own": {"protocol": "gemini", "upstream": upstream.url}})
    options = types.HttpOptions(
        base_url=running.url + "/gemini",
        headers={"Authorization": f"Bearer {token}"},
        retry_options=types.HttpRetryOptions(attempts=1),
    )
    client = genai.Client(api_key="agent-placeholder-key", http_options=options)
    clients.append(client)
    assert client.models.generate_content(model=MODEL, contents="hi").text == "echo: hi"
    sent = upstream.requests[-1]
    assert sent.headers["x-goog-api-key"] == "google-real-key"  # the route's credential, and only it
    assert "authorization" not in sent.headers and all(token not in v for v in sent.headers.values())

    # A route without a key of its own: the agent's token goes on as the bearer token it is.
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    own = httpx.post(
        f"{running.url}/own/v1beta/models/{MODEL}:generateContent",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert own.status_code == 200
    sent = upstream.requests[-1]
    assert sent.headers["authorization"] == f"Bearer {token}" and "x-goog-api-key" not in sent.headers

    recorded(running, 2)
    stored = Path(running.settings.store.path)
    assert token.encode() not in b"".join(p.read_bytes() for p in stored.parent.glob(stored.name + "*"))
