"""Ollama's native API through interlock, driven by the real `ollama` SDK (and raw HTTP where the
protocol, not the SDK, is the point: error bodies, NDJSON lines): chat and generate streamed and not,
embeddings, the model list, tools and a denied tool, an e-mail redacted and restored, usage, cost
and budgets, a broken stream, replay, the call page and OTel."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from interlock.config import load_settings
from interlock.otel.attributes import describe_call
from interlock.protocols import ADAPTERS
from interlock.scripted import Script, ScriptedUpstream, ToolUse
from interlock.testing import Running, replay_server, run_interlock, settings_for_test
from interlock.yamlsource import SourceError
from tests.conftest import closed_after_test, passes_policy_test
from tests.proxy.routing_support import conversation

MODEL = "llama3.2"
EMAIL = "jane.roe@acme-corp.io"
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "rm", "parameters": {"type": "object"}}},
]
POLICY = """
rules:
  - name: no-rm
    deny: {tools: [rm]}
  - name: thrifty
    match: {agent: thrifty}
    limits: {budget_usd_per_day: 0.00005}
  - name: tool-loops
    match: {agent: looper}
    loop: {tool_calls: 3, requests: null, tool_errors: null}
"""


@pytest.fixture(scope="module")
def running(upstream_server: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One interlock for the module: guardrails redact e-mail addresses, a policy denies `rm` and gives
    the agent `thrifty` a budget; `llama3.2*` is free (`prices:`), `qwen-paid` is priced, other
    models have no price."""
    tmp = tmp_path_factory.mktemp("ollama")
    (tmp / "policies").mkdir()
    (tmp / "policies" / "policy.yaml").write_text(textwrap.dedent(POLICY))
    data = {
        "routes": {
            "ollama": {
                "protocol": "ollama",
                "upstream": upstream_server.url,
                # A model alias: the body's model is rewritten to each target in turn.
                "models": {"smart": [{"model": "llama3.2:70b"}, {"model": MODEL}]},
            }
        },
        "shutdown_grace": 2,
        "policies": [str(tmp / "policies")],
        "guardrails": {"request": {"EMAIL_ADDRESS": "redact"}},
        "prices": {"llama3.2*": {"input": 0, "output": 0}, "qwen-paid": {"input": 5, "output": 5}},
    }
    with run_interlock(settings_for_test(data, tmp)) as served:
        yield served


def client(running: Running, session: str, agent: str = "ollama-bot", host: str | None = None) -> ollama.Client:
    headers = {"X-Interlock-Agent": agent, "X-Interlock-Session": session}
    return closed_after_test(ollama.Client(host=host or f"{running.url}/ollama", headers=headers))


def lines(body: bytes) -> list[dict[str, Any]]:
    """An NDJSON body's objects (each line must be one)."""
    assert body.endswith(b"\n")
    return [json.loads(line) for line in body.split(b"\n")[:-1]]


def test_chat_streamed_and_not_with_usage_cost_the_call_page_and_otel(
    running: Running, upstream: ScriptedUpstream
) -> None:
    sdk = client(running, "chat")
    upstream.script(Script(), Script(text="streaming works fine", chunk_size=3))
    reply = sdk.chat(model=MODEL, messages=[{"role": "user", "content": "hello there"}])
    assert reply.message.content == "echo: hello there" and reply.done_reason == "stop"
    pieces = [
        part.message.content
        for part in sdk.chat(model=MODEL, messages=[{"role": "user", "content": "go"}], stream=True)
    ]
    assert "".join(p or "" for p in pieces) == "streaming works fine" and pieces[0] == "str"
    assert upstream.requests[-1].json()["stream"] is True and upstream.requests[-1].path == "/api/chat"

    streamed, plain = running.recorded_calls(2, session="chat")
    assert (plain.stream, plain.input_tokens, plain.output_tokens) == (False, 11, 7)
    assert (streamed.stream, streamed.input_tokens, streamed.output_tokens) == (True, 11, 7)
    assert (streamed.cost_usd, streamed.cost_source) == (0.0, "prices")  # a local model, free by `prices:`
    assert conversation(running, streamed.id) == [("user", "go"), ("assistant response", "streaming works fine")]
    detail = httpx.get(f"{running.admin_url}/api/calls/{streamed.id}").json()
    assert detail["response_message"]["message"]["content"] == "streaming works fine"
    found = running.runtime.store.list_calls(session="chat", q="streaming works")  # the search index
    assert [row["id"] for row in found] == [streamed.id]

    streamed.view = ADAPTERS["ollama"].parse(streamed)  # what the exporter has: the live call's view
    attributes = describe_call(streamed).attributes
    assert attributes["gen_ai.provider.name"] == "ollama"
    assert (attributes["gen_ai.operation.name"], attributes["gen_ai.request.model"]) == ("chat", MODEL)
    assert list(attributes["gen_ai.response.finish_reasons"]) == ["stop"]
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (11, 7)


def test_generate_embed_and_the_model_list(running: Running, upstream: ScriptedUpstream) -> None:
    sdk = client(running, "generate")
    upstream.script(Script(text="The sky scatters blue light.", chunk_size=5), Script(chunk_size=2))
    assert sdk.generate(model=MODEL, prompt="why blue?").response == "The sky scatters blue light."
    assert "".join(p.response or "" for p in sdk.generate(model=MODEL, prompt="again", stream=True)) == "echo: again"
    assert len(sdk.embed(model="all-minilm", input=["a", "b"]).embeddings) == 2
    assert [m.model for m in sdk.list().models] == ["llama3.2:latest"]  # relayed as plain HTTP
    listing, embedded, streamed, plain = running.recorded_calls(4, session="generate")
    assert (plain.input_tokens, plain.output_tokens, streamed.output_tokens) == (11, 7, 7)
    assert (embedded.input_tokens, embedded.model) == (11, "all-minilm")
    assert (listing.method, listing.path, listing.input_tokens) == ("GET", "/api/tags", None)
    assert conversation(running, streamed.id) == [("user", "again"), ("assistant response", "echo: again")]


def test_tool_calls_round_trip_and_a_denied_tool_is_refused(running: Running, upstream: ScriptedUpstream) -> None:
    sdk = client(running, "tools")
    upstream.script(
        Script(tool_calls=[ToolUse("get_weather", {"city": "Paris"})]),
        Script(text="It is sunny."),
        Script(tool_calls=[ToolUse("get_weather", {"city": "Lyon"})]),
    )
    question = {"role": "user", "content": "weather in Paris?"}
    first = sdk.chat(model=MODEL, messages=[question], tools=TOOLS)
    assert first.message.tool_calls and first.message.tool_calls[0].function.arguments == {"city": "Paris"}
    offered = upstream.requests[-1].json()["tools"]
    assert [t["function"]["name"] for t in offered] == ["get_weather"]  # the denied tool is not offered
    result = {"role": "tool", "content": "sunny", "tool_name": "get_weather"}
    second = sdk.chat(model=MODEL, messages=[question, first.message, result], tools=TOOLS)
    assert second.message.content == "It is sunny."
    assert upstream.requests[-1].json()["messages"][2] == result
    streamed = [c.message.tool_calls for c in sdk.chat(model=MODEL, messages=[question], tools=TOOLS, stream=True)]
    calls = [call for found in streamed if found for call in found]
    assert [(c.function.name, c.function.arguments) for c in calls] == [("get_weather", {"city": "Lyon"})]

    # The model calls the denied tool anyway: refused, its arguments never reach the agent.
    rm = Script(text="sure", tool_calls=[ToolUse("rm", {"path": "Q" * 40})])
    upstream.script(rm, rm)
    with pytest.raises(ollama.ResponseError) as refused:
        sdk.chat(model=MODEL, messages=[{"role": "user", "content": "clean up"}], tools=TOOLS)
    assert refused.value.status_code == 403
    error = refused.value.error
    assert isinstance(error, str) and "no-rm" in error
    cut = httpx.post(
        f"{running.url}/ollama/api/chat",
        json={"model": MODEL, "messages": [{"role": "user", "content": "clean up"}]},
        headers={"X-Interlock-Session": "tools"},
    )
    assert cut.status_code == 200 and b"QQ" not in cut.content
    *answered, refusal = lines(cut.content)
    assert all(not line["done"] for line in answered)  # the chunk calling rm never goes out
    assert refusal["code"] == "policy_denied" and "no-rm" in refusal["error"]


@pytest.mark.parametrize("stream", [False, True])
def test_an_email_is_redacted_upstream_and_restored_for_the_agent(
    running: Running, upstream: ScriptedUpstream, stream: bool
) -> None:
    sdk = client(running, f"pii-{stream}")
    upstream.script(Script(chunk_size=3))
    question = f"mail {EMAIL} and {EMAIL}"
    if stream:
        parts = sdk.chat(model=MODEL, messages=[{"role": "user", "content": question}], stream=True)
        text = "".join(p.message.content or "" for p in parts)
    else:
        text = sdk.chat(model=MODEL, messages=[{"role": "user", "content": question}]).message.content or ""
    assert text == f"echo: {question}"
    assert upstream.requests[-1].json()["messages"][0]["content"] == "mail <EMAIL_ADDRESS_1> and <EMAIL_ADDRESS_1>"
    assert all(EMAIL.encode() not in r.body for r in upstream.requests)
    # At rest only the placeholder form is kept: the store's files, byte by byte.
    running.recorded_calls(1, session=f"pii-{stream}")
    stored = Path(running.settings.store.path)
    assert EMAIL.encode() not in b"".join(p.read_bytes() for p in stored.parent.glob(stored.name + "*"))


PNG = b"\x89PNG\r\n\x1a\n" + bytes(16)  # an image's bytes: the SDK sends them base64-encoded


def test_images_and_a_generate_context_are_recorded_gaps_not_silent_passes(
    running: Running, upstream: ScriptedUpstream
) -> None:
    # Images can hold text (interlock has no OCR) and `context` is token ids: neither can be scanned for
    # the e-mail the guardrail redacts. With no block action the call goes on, the gap recorded.
    sdk = client(running, "unread")
    upstream.script(Script(text="seen"), Script(text="seen"))
    assert sdk.generate(model=MODEL, prompt=f"mail {EMAIL}", context=[1734, 374, 9], images=[PNG]).response == "seen"
    message = {"role": "user", "content": "what is in it?", "images": [PNG, PNG]}
    assert sdk.chat(model=MODEL, messages=[message]).message.content == "seen"
    assert upstream.requests[-2].json()["prompt"] == "mail <EMAIL_ADDRESS_1>"  # the text beside them scanned
    chatted, generated = running.recorded_calls(2, session="unread")  # newest first
    gaps = [d.reason for d in generated.decisions if d.stage == "guardrails" and d.action == "skip"]
    assert len(gaps) == 2  # the media rule's and the token ids'
    assert any("images (1 images)" in g for g in gaps) and any("context (3 token ids)" in g for g in gaps)
    (gap,) = [d for d in chatted.decisions if d.stage == "guardrails" and d.action == "skip"]
    assert "messages[0].images (2 images)" in gap.reason


def test_a_context_under_a_block_action_fails_closed_images_only_under_media_deny(
    make_interlock: Any, upstream: ScriptedUpstream
) -> None:
    # `context` is text interlock cannot read (on_error decides); images follow every protocol's media
    # rule: a recorded skip, refused only under `guardrails.media: deny` (tests/guardrails/test_media.py).
    route = {"protocol": "ollama", "upstream": upstream.url}
    guarded = make_interlock(routes={"ollama": route}, guardrails={"request": {"CREDIT_CARD": "block"}})
    sdk = client(guarded, "unread-block")
    with pytest.raises(ollama.ResponseError) as refused:
        sdk.generate(model=MODEL, prompt="describe it", context=[1734, 374])
    assert refused.value.status_code == 503
    assert upstream.requests == []
    sdk.generate(model=MODEL, prompt="describe it", images=[PNG])
    assert len(upstream.requests) == 1
    denying = make_interlock(
        routes={"ollama": route}, guardrails={"request": {"CREDIT_CARD": "block"}, "media": "deny"}
    )
    refused_raw = httpx.post(
        f"{denying.url}/ollama/api/chat",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi", "images": ["aGk="]}], "stream": False},
    )
    assert refused_raw.status_code == 503 and refused_raw.json()["code"] == "guardrails_error"
    assert len(upstream.requests) == 1
    passed, blocked = guarded.recorded_calls(2, session="unread-block")
    assert (blocked.outcome, blocked.error_code) == ("blocked", "guardrails_error") and passed.outcome == "ok"
    bad = httpx.post(f"{guarded.url}/ollama/api/generate", json={"model": MODEL, "prompt": "hi", "context": "x"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_request"


def test_tool_arguments_in_the_history_are_scanned(running: Running, upstream: ScriptedUpstream) -> None:
    history = [
        {"role": "user", "content": "who?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "lookup", "arguments": {"email": EMAIL}}}],
        },
        {"role": "tool", "content": f"owner: {EMAIL}", "tool_name": "lookup"},
    ]
    client(running, "history").chat(model=MODEL, messages=history)
    assert EMAIL.encode() not in upstream.requests[-1].body


def test_budgets_fail_closed_on_an_unpriced_model_and_count_a_priced_one(
    running: Running, upstream: ScriptedUpstream
) -> None:
    sdk = client(running, "budget", agent="thrifty")
    # A model nobody prices, under a money budget: refused before it is sent (`limits.unpriced: deny`).
    unpriced = httpx.post(
        f"{running.url}/ollama/api/chat",
        json={"model": "mistral", "messages": [{"role": "user", "content": "hi"}], "stream": False},
        headers={"X-Interlock-Agent": "thrifty", "X-Interlock-Session": "budget"},
    )
    assert unpriced.status_code == 403
    assert unpriced.json()["code"] == "unpriced_model" and isinstance(unpriced.json()["error"], str)
    # Loading that model (no messages) generates nothing: free, so the budget lets it through.
    loaded = sdk.chat(model="mistral", messages=[])
    assert loaded.done_reason == "load"
    (load,) = running.recorded_calls(2, session="budget")[:1]
    assert (load.model, load.cost_usd, load.cost_source) == ("mistral", 0.0, "free")
    # qwen-paid at $5 per million tokens: 18 tokens cost $0.00009, over the budget after one call.
    sdk.chat(model="qwen-paid", messages=[{"role": "user", "content": "one"}])
    (call,) = [c for c in running.recorded_calls(3, session="budget") if c.model == "qwen-paid"]
    assert call.cost_source == "prices" and call.cost_usd == pytest.approx(18 * 5 / 1e6)
    with pytest.raises(ollama.ResponseError) as refused:
        sdk.chat(model="qwen-paid", messages=[{"role": "user", "content": "two"}])
    assert refused.value.status_code == 429
    assert len([r for r in upstream.requests if r.json().get("model") == "qwen-paid"]) == 1


def test_a_broken_stream_and_the_upstreams_own_error_line(running: Running, upstream: ScriptedUpstream) -> None:
    sdk = client(running, "broken")
    upstream.script(Script(text="a long enough answer to stream", chunk_size=3, reset_after=2))
    with pytest.raises(ollama.ResponseError) as raised:
        for _ in sdk.chat(model=MODEL, messages=[{"role": "user", "content": "go"}], stream=True):
            pass
    assert isinstance(raised.value.error, str)
    upstream.script(Script(text="a long enough answer to stream", chunk_size=3, error_event_after=2))
    failed = httpx.post(
        f"{running.url}/ollama/api/chat",
        json={"model": MODEL, "messages": [{"role": "user", "content": "go"}]},
        headers={"X-Interlock-Session": "broken"},
    )
    assert failed.status_code == 200  # the head went out before the model failed
    *answered, upstreams, ours = lines(failed.content)
    assert len(answered) == 2 and "error" in upstreams  # Ollama's own line, relayed as it came
    assert ours["code"] == "stream_truncated"  # no `done` line: interlock says the answer is cut
    failing, broken = running.recorded_calls(2, session="broken")  # newest first
    assert (broken.error_code, failing.error_code) == ("stream_broken", "stream_truncated")


def test_a_line_past_its_bound_ends_the_stream_in_the_protocols_shape(
    running: Running, upstream: ScriptedUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ADAPTERS["ollama"], "max_line_bytes", 64)  # every chunk line is longer
    upstream.script(Script(text="a long enough answer to stream", chunk_size=3))
    refused = httpx.post(
        f"{running.url}/ollama/api/chat",
        json={"model": MODEL, "messages": [{"role": "user", "content": "go"}]},
        headers={"X-Interlock-Session": "long-line"},
    )
    (error,) = lines(refused.content)
    assert error["code"] == "stream_event_too_large"
    (call,) = running.recorded_calls(1, session="long-line")
    assert (call.outcome, call.error_code, call.truncated) == ("upstream_error", "stream_event_too_large", True)


def test_a_pull_streams_its_progress_to_the_end(running: Running, upstream: ScriptedUpstream) -> None:
    # Model management is relayed as plain HTTP: its NDJSON has no `done` line and is not cut for it.
    statuses = [p.status for p in client(running, "pull").pull(MODEL, stream=True)]
    assert statuses == ["pulling manifest", "verifying sha256 digest", "success"]
    (call,) = running.recorded_calls(1, session="pull")
    assert (call.outcome, call.error_code) == ("ok", None)


def test_bad_input_and_openai_paths_are_refused_in_ollamas_shape(running: Running) -> None:
    bad = httpx.post(f"{running.url}/ollama/api/chat", json={"model": MODEL, "messages": "hi"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_request"
    assert isinstance(bad.json()["error"], str)
    elsewhere = httpx.post(f"{running.url}/ollama/v1/chat/completions", json={"model": MODEL, "messages": []})
    assert elsewhere.status_code == 404 and elsewhere.json()["code"] == "not_found"


def test_a_recorded_session_replays_offline(running: Running, upstream: ScriptedUpstream, tmp_path: Path) -> None:
    upstream.script(Script(text="first answer"), Script(text="second answer", chunk_size=5))

    def agent(sdk: ollama.Client) -> list[str]:
        answers = [sdk.chat(model=MODEL, messages=[{"role": "user", "content": "one"}]).message.content or ""]
        parts = sdk.chat(model=MODEL, messages=[{"role": "user", "content": "two"}], stream=True)
        return [*answers, "".join(p.message.content or "" for p in parts)]

    answers = agent(client(running, "incident"))
    assert answers == ["first answer", "second answer"]
    running.recorded_calls(2, session="incident")
    bundle = tmp_path / "incident.db"
    assert running.runtime.store.export(bundle, session="incident") == 2
    served = len(upstream.requests)
    with replay_server(bundle) as replay:
        again = client(running, "incident", host=replay.base_url("ollama"))
        assert agent(again) == answers
        with pytest.raises(ollama.ResponseError) as diverged:
            again.chat(model=MODEL, messages=[{"role": "user", "content": "three"}])
    assert diverged.value.status_code == 409
    assert len(upstream.requests) == served  # nothing reached a model


def test_an_upstream_ending_in_api_is_refused_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "interlock.yaml"
    path.write_text("routes:\n  local:\n    protocol: ollama\n    upstream: http://127.0.0.1:11434/api\n")
    with pytest.raises(SourceError) as refused:
        load_settings(path)
    assert ":4" in str(refused.value) or ":3" in str(refused.value)  # the upstream's line
    (tmp_path / "default.yaml").write_text("routes:\n  local: {protocol: ollama}\n")
    settings = load_settings(tmp_path / "default.yaml")
    assert settings.routes["local"].upstreams[0].url == "http://127.0.0.1:11434"  # Ollama's own default


def test_an_alias_falls_back_by_rewriting_the_model_in_the_body(running: Running, upstream: ScriptedUpstream) -> None:
    upstream.set_model("llama3.2:70b", Script(status=503))
    reply = client(running, "alias").chat(model="smart", messages=[{"role": "user", "content": "hi"}])
    assert reply.message.content == "echo: hi"
    models = [r.json()["model"] for r in upstream.requests]
    # The failing model may be retried before the fallback (the route's retry policy); the last goes to it.
    assert models[-1] == MODEL and set(models[:-1]) == {"llama3.2:70b"}
    (call,) = running.recorded_calls(1, session="alias")
    assert [a.status for a in call.attempts][-1] == 200 and call.attempts[0].status == 503


def test_the_async_client_streams_through_interlock(running: Running, upstream: ScriptedUpstream) -> None:
    upstream.script(Script(text="async works", chunk_size=4))

    async def agent() -> str:
        sdk = ollama.AsyncClient(host=f"{running.url}/ollama", headers={"X-Interlock-Session": "async"})
        parts = await sdk.chat(model=MODEL, messages=[{"role": "user", "content": "go"}], stream=True)
        text = "".join([part.message.content or "" async for part in parts])
        await sdk.close()
        return text

    assert asyncio.run(agent()) == "async works"
    (call,) = running.recorded_calls(1, session="async")
    assert (call.stream, call.output_tokens) == (True, 7)


def test_policy_test_cases_build_ollama_requests(tmp_path: Path) -> None:
    passes_policy_test(
        tmp_path,
        "routes:\n  local: {protocol: ollama}\n",
        "rules:\n  - name: no-big\n    deny: {models: [llama3.1:405b], tools: [rm]}\n",
        "cases:\n"
        "  - name: the model named by the case is the body's\n"
        "    request: {route: local, model: llama3.1:405b}\n"
        "    expect: {decision: deny, rule: no-big}\n"
        "  - name: a generate request too\n"
        "    request: {route: local, path: /api/generate, model: llama3.1:405b}\n"
        "    expect: {decision: deny, rule: no-big}\n"
        "  - name: another model passes\n"
        "    request: {route: local, model: llama3.2}\n"
        "    expect: {decision: allow}\n",
    )


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_tool_call_loop_is_denied_at_the_third_repeat(
    running: Running, upstream: ScriptedUpstream, stream: bool
) -> None:
    session = f"loop-{stream}"
    upstream.script(*(Script(tool_calls=[ToolUse("get_weather", {"city": "Paris"})]) for _ in range(3)))

    def turn(n: int) -> httpx.Response:  # each request differs: only the model's tool call repeats
        body = {"model": MODEL, "messages": [{"role": "user", "content": f"weather, turn {n}"}], "tools": TOOLS[:1]}
        headers = {"X-Interlock-Agent": "looper", "X-Interlock-Session": session}
        return httpx.post(f"{running.url}/ollama/api/chat", json={**body, "stream": stream}, headers=headers)

    assert all(b"get_weather" in turn(n).content for n in (1, 2))
    third = turn(3)
    if stream:  # the head went out first: the loop ends the stream with the error line, the call dropped
        *sent, error = lines(third.content)
        assert third.status_code == 200 and not [line for line in sent if line["message"].get("tool_calls")]
    else:
        assert third.status_code == 403
        error = third.json()
    assert error["code"] == "loop_detected"
    newest = running.recorded_calls(3, session=session)[0]
    assert (newest.outcome, newest.error_code) == ("blocked", "loop_detected")
