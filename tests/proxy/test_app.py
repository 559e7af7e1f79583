"""The proxy's contract with agents: routes, bad input, headers, compression, disconnects, shutdown."""

from __future__ import annotations

import gzip
import json
import threading
from typing import Any

import httpx
import pytest

from interlock.scripted import Script, ScriptedUpstream
from interlock.testing import Running, run_interlock, settings_for_test
from tests.conftest import routes_for
from tests.proxy.routing_support import collect_calls, wait_for


def test_unknown_route_is_a_404_listing_the_routes(interlock: Running) -> None:
    response = httpx.post(interlock.url + "/nope/chat/completions", json={})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "unknown_route"
    assert "/openai/" in error["message"] and "/anthropic/" in error["message"]


@pytest.mark.parametrize(
    ("route", "shape"),
    [("openai", lambda b: b["error"]["code"]), ("anthropic", lambda b: b["type"] == "error" and b["error"]["code"])],
)
def test_invalid_json_gets_a_400_in_the_protocols_shape(
    interlock: Running, upstream: ScriptedUpstream, route: str, shape: Any
) -> None:
    path = "/chat/completions" if route == "openai" else "/v1/messages"
    response = httpx.post(
        interlock.url + f"/{route}{path}", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert shape(response.json()) == "invalid_json"
    assert upstream.requests == []


def test_body_over_the_limit_is_a_413(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    running = make_interlock(max_body_bytes=1000)
    big = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]})
    response = httpx.post(running.url + "/openai/chat/completions", content=big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    # Chunked uploads (no content-length) are cut off too.
    response = httpx.post(
        running.url + "/openai/chat/completions", content=iter([big.encode()[:600], big.encode()[600:]])
    )
    assert response.status_code == 413
    assert upstream.requests == []


def test_wrong_shape_json_is_a_400_not_a_500(interlock: Running) -> None:
    for body in (
        [1, 2],
        {"model": 5, "messages": []},
        {"model": "m", "messages": "hi"},
        {"model": "m", "messages": [3]},
    ):
        response = httpx.post(interlock.url + "/openai/chat/completions", json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] in ("invalid_json", "invalid_request")


def test_hop_by_hop_and_interlock_headers_stay_here(interlock: Running, upstream: ScriptedUpstream) -> None:
    httpx.post(
        interlock.url + "/openai/chat/completions?api-version=2024-01&x=a%20b",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "secret-hop",
            "TE": "trailers",
            "X-Interlock-Agent": "bot",
            "X-Interlock-Session": "s1",
            "X-Custom": "kept",
            "Authorization": "Bearer sk-agent",
        },
    )
    received = upstream.requests[-1]
    assert received.query == "api-version=2024-01&x=a%20b"
    assert received.headers["x-custom"] == "kept"
    for name in ("x-hop", "te", "x-interlock-agent", "x-interlock-session"):
        assert name not in received.headers
    assert received.headers["host"] == upstream.url.removeprefix("http://")
    assert received.headers["authorization"] == "Bearer sk-real-openai"  # the route's own key


def test_the_agents_key_passes_through_when_the_route_has_none(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    routes = routes_for(upstream)
    routes["openai"].pop("api_key")
    routes["anthropic"].pop("api_key")
    running = make_interlock(routes=routes)
    httpx.post(
        running.url + "/openai/chat/completions",
        json={"model": "m", "messages": []},
        headers={"Authorization": "Bearer sk-agent-own"},
    )
    assert upstream.requests[-1].headers["authorization"] == "Bearer sk-agent-own"
    # Anthropic wants x-api-key: a Bearer key from the agent is sent the way the protocol expects.
    httpx.post(
        running.url + "/anthropic/v1/messages",
        json={"model": "m", "max_tokens": 5, "messages": []},
        headers={"Authorization": "Bearer sk-ant-own"},
    )
    assert upstream.requests[-1].headers["x-api-key"] == "sk-ant-own"
    assert "authorization" not in upstream.requests[-1].headers


def test_virtual_keys_name_the_agent_and_never_leave(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    routes = routes_for(upstream)
    routes["openai"].pop("api_key")
    running = make_interlock(routes=routes, virtual_keys={"vk-support": {"agent": "support-bot", "session": "S9"}})
    agent_seen: list[tuple[str, str | None]] = []

    class Spy:
        async def done(self, call: Any) -> None:
            agent_seen.append((call.agent, call.session))

    running.runtime.pipeline.hooks["done"].append(Spy().done)
    httpx.post(
        running.url + "/openai/chat/completions",
        json={"model": "m", "messages": []},
        headers={"Authorization": "Bearer vk-support"},
    )
    assert "authorization" not in upstream.requests[-1].headers  # no real key configured: nothing sent
    httpx.post(
        running.url + "/anthropic/v1/messages",
        json={"model": "m", "max_tokens": 5, "messages": []},
        headers={"x-api-key": "vk-support"},
    )
    assert upstream.requests[-1].headers["x-api-key"] == "sk-ant-real"
    wait_for(lambda: len(agent_seen) == 2)
    assert agent_seen == [("support-bot", "S9"), ("support-bot", "S9")]


def test_traceparent_is_continued_upstream(interlock: Running, upstream: ScriptedUpstream) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = "00f067aa0ba902b7"
    httpx.post(
        interlock.url + "/openai/chat/completions",
        json={"model": "m", "messages": []},
        headers={"traceparent": f"00-{trace}-{parent}-01"},
    )
    version, trace_id, span_id, flags = upstream.requests[-1].headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", trace, "01")
    assert span_id != parent and len(span_id) == 16
    # Without one, interlock starts a trace of its own.
    httpx.post(interlock.url + "/openai/chat/completions", json={"model": "m", "messages": []})
    assert upstream.requests[-1].headers["traceparent"].split("-")[1] != trace


def test_compressed_responses_reach_the_agent_decoded(interlock: Running, upstream: ScriptedUpstream) -> None:
    # The one decoder (issue 16): the agent, every stage and the record get the plain body, with
    # content-encoding gone and a content-length that fits it; the upstream hop stays compressed.
    plain = json.dumps({"id": "x", "choices": [], "usage": {"prompt_tokens": 1}}).encode()
    upstream.script(Script(body=gzip.compress(plain), headers={"content-encoding": "gzip"}))
    with httpx.Client() as client:
        with client.stream(
            "POST",
            interlock.url + "/openai/chat/completions",
            json={"model": "m", "messages": []},
            headers={"accept-encoding": "gzip"},
        ) as response:
            raw = b"".join(response.iter_raw())
    assert "content-encoding" not in response.headers
    assert raw == plain and response.headers["content-length"] == str(len(plain))
    assert upstream.requests[-1].headers["accept-encoding"] == "gzip"


def test_no_accept_encoding_means_identity_upstream(interlock: Running, upstream: ScriptedUpstream) -> None:
    with httpx.Client() as client:
        request = client.build_request(
            "POST", interlock.url + "/openai/chat/completions", json={"model": "m", "messages": []}
        )
        del request.headers["accept-encoding"]
        client.send(request)
    assert upstream.requests[-1].headers["accept-encoding"] == "identity"


def test_any_method_and_path_on_http_routes(interlock: Running, upstream: ScriptedUpstream) -> None:
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        response = httpx.request(method, interlock.url + "/tools/items/42?full=1")
        assert response.status_code == 200
        assert (upstream.requests[-1].method, upstream.requests[-1].path) == (method, "/tools/items/42")


def test_client_disconnect_cancels_the_upstream_request(interlock: Running, upstream: ScriptedUpstream) -> None:
    upstream.script(Script(text="x" * 400, chunk_size=1, chunk_delay=0.02))
    body = {"model": "m", "messages": [{"role": "user", "content": "long"}], "stream": True}
    with httpx.Client() as client:
        with client.stream("POST", interlock.url + "/openai/chat/completions", json=body) as response:
            next(response.iter_raw())
    wait_for(lambda: upstream.disconnects == 1)


def test_first_bytes_are_not_buffered(interlock: Running, upstream: ScriptedUpstream) -> None:
    # The second chunk is 1 s behind the first: the agent must see the first one long before that.
    upstream.script(Script(text="ab", chunk_size=1, chunk_delay=1.0))
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
    with httpx.Client() as client:
        with client.stream("POST", interlock.url + "/openai/chat/completions", json=body) as response:
            parts = response.iter_raw()
            first = next(parts)
            assert b"chat.completion.chunk" in first
            rest = b"".join(parts)
    assert b"[DONE]" in rest
    assert len(upstream.requests) == 1


def test_graceful_shutdown_lets_streams_in_flight_finish(upstream: ScriptedUpstream, tmp_path: Any) -> None:
    upstream.script(Script(text="0123456789", chunk_size=1, chunk_delay=0.05))
    settings = settings_for_test({"routes": routes_for(upstream), "shutdown_grace": 10}, tmp_path)
    received: list[bytes] = []
    started = threading.Event()

    def agent(url: str) -> None:
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
        with httpx.stream("POST", url + "/openai/chat/completions", json=body, timeout=20) as response:
            for part in response.iter_raw():
                received.append(part)
                started.set()

    with run_interlock(settings) as running:
        thread = threading.Thread(target=agent, args=(running.url,))
        thread.start()
        assert started.wait(10)
    # The context exit asked the server to stop while the stream was still going.
    thread.join(20)
    assert b"data: [DONE]" in b"".join(received)
    with pytest.raises(httpx.ConnectError):
        httpx.get(running.url + "/openai/models")


def test_admin_health_and_ready(interlock: Running) -> None:
    assert httpx.get(interlock.admin_url + "/health").json()["status"] == "ok"
    ready = httpx.get(interlock.admin_url + "/ready").json()
    assert ready["status"] == "ready" and "openai" in ready["routes"]


def test_an_agent_leaving_after_the_end_event_is_not_an_abort(interlock: Running, upstream: ScriptedUpstream) -> None:
    # The openai SDK hangs up as soon as it reads `data: [DONE]`; the upstream may close later.
    outcomes: list[tuple[str, bool]] = []

    async def done(call: Any) -> None:
        outcomes.append((call.outcome, call.truncated))

    interlock.runtime.pipeline.hooks["done"].append(done)
    upstream.script(Script(text="complete", end_delay=1.0))
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
    with httpx.Client() as client:
        with client.stream("POST", interlock.url + "/openai/chat/completions", json=body) as response:
            seen = b""
            for part in response.iter_raw():
                seen += part
                if b"[DONE]" in seen:
                    break
    wait_for(lambda: outcomes)
    assert outcomes == [("ok", False)]


def test_a_broken_policy_file_stops_serve_with_file_line(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from interlock.cli import main

    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "bad.yaml").write_text("version: 1\nrules:\n  - name: x\n    deny: {modelz: [a]}\n")
    config = tmp_path / "interlock.yaml"
    config.write_text(
        f"listen: {{port: 0}}\nadmin: {{port: 0}}\nstore: {{path: {tmp_path / 'i.db'}}}\n"
        f"policies: [{policies}]\nroutes: {{openai: {{upstream: 'http://127.0.0.1:9'}}}}\n"
    )
    result = CliRunner().invoke(main, ["serve", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert f"{policies / 'bad.yaml'}:4:" in result.output and "Traceback" not in result.output


def test_a_failing_stage_is_a_500_in_the_protocols_shape_and_recorded_as_interlocks_error(
    interlock: Running, upstream: ScriptedUpstream
) -> None:
    async def broken(call: Any) -> None:
        raise RuntimeError("a bug in a stage")

    interlock.runtime.pipeline.hooks["request"].append(broken)
    calls = collect_calls(interlock)
    response = httpx.post(interlock.url + "/openai/chat/completions", json={"model": "m", "messages": []})
    assert response.status_code == 500
    error = response.json()["error"]  # the OpenAI SDK's shape, so it raises a clear InternalServerError
    assert error["code"] == "internal_error" and "a bug in a stage" in error["message"]
    assert response.headers["x-should-retry"] == "false"
    assert upstream.requests == []
    wait_for(lambda: calls)
    assert calls[0].outcome == "internal_error" and calls[0].status == 500  # not blamed on the upstream


def test_a_stage_failing_mid_stream_ends_the_stream_with_the_error_event(
    interlock: Running, upstream: ScriptedUpstream
) -> None:
    seen: list[bytes] = []

    async def broken(call: Any, data: bytes, last: bool) -> bytes:
        seen.append(data)
        if len(seen) == 3:
            raise RuntimeError("a bug mid-stream")
        return data

    interlock.runtime.pipeline.hooks["chunk"].append(broken)
    interlock.runtime.pipeline.has_chunk_hooks = True
    calls = collect_calls(interlock)
    upstream.script(Script(text="one two three four five six", chunk_size=3, chunk_delay=0.01))
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", interlock.url + "/openai/chat/completions", json=body) as response:
        assert response.status_code == 200
        received = b"".join(response.iter_raw())
    assert received.rstrip().endswith(b"}")  # the last event is the error, not [DONE]
    assert b'"code": "internal_error"' in received and b"a bug mid-stream" in received
    wait_for(lambda: calls)
    assert calls[0].outcome == "internal_error" and calls[0].truncated
    kept = calls[0].agent_chunks  # what the agent got, error event included, is on record
    assert kept is not None and b"a bug mid-stream" in kept[-1].data


async def test_ready_waits_for_the_guardrails_engine(
    monkeypatch: pytest.MonkeyPatch, upstream: ScriptedUpstream, tmp_path: Any
) -> None:
    # Building presidio takes seconds on a loaded machine: until it is built, the first call would wait
    # for it, so /ready (and run_interlock, which tests use) waits too.
    from interlock.guardrails import scanner as guardrails
    from interlock.runtime import Runtime
    from interlock.ui.admin import create_admin_app

    release = threading.Event()
    build = guardrails.detector_for

    def slow_build(config: Any) -> Any:
        assert release.wait(60)
        return build(config)

    monkeypatch.setattr(guardrails, "detector_for", slow_build)
    settings = settings_for_test(
        {"routes": routes_for(upstream), "guardrails": {"request": {"SECRET": "block"}}}, tmp_path
    )
    runtime = Runtime(settings)
    await runtime.start()
    try:
        transport = httpx.ASGITransport(app=create_admin_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as admin:
            waiting = await admin.get("/ready")
            assert (waiting.status_code, waiting.json()) == (503, {"status": "starting", "warming": ["guardrails"]})
            release.set()
            (stage,) = [s for s in runtime.pipeline.stages if getattr(s, "name", "") == "guardrails"]
            assert stage.warmed.wait(60)
            assert (await admin.get("/ready")).status_code == 200
    finally:
        release.set()
        await runtime.stop()


def test_headers_are_read_as_lower_case_names_and_latin_1_values() -> None:
    from interlock.proxy import app

    raw = [(b"X-Mixed-Case", b"caf\xe9"), (b"x-mixed-case", b"two"), (b"Content-Type", b"application/json")]
    for _ in range(2):  # the second time from the names already seen
        assert app.decoded_headers(raw) == [
            ("x-mixed-case", "café"),
            ("x-mixed-case", "two"),
            ("content-type", "application/json"),
        ]
    many = [(f"X-Name-{i}".encode(), b"v") for i in range(3000)]
    assert app.decoded_headers(many)[-1] == ("x-name-2999", "v")
    assert len(app._HEADER_NAMES) <= 1024  # names come from clients: the memo is bounded
