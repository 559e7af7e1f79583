"""Every call through interlock is recorded: each outcome, streams with their timings, no secrets."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from interlock.core.call import Call, Decision
from interlock.protocols import ADAPTERS
from interlock.scripted import Script, ScriptedUpstream
from interlock.testing import Running, free_port, recorded_answer, wait_for
from interlock.tracing.store import Store
from tests.conftest import closed_after_test


def recorded(running: Running, count: int = 1, timeout: float = 60.0, **filters: Any) -> list[dict[str, Any]]:
    """Wait until the store holds `count` calls matching `filters`; newest first."""
    store: Store = running.runtime.store
    deadline = time.monotonic() + timeout
    while True:
        rows = store.list_calls(limit=1000, **filters)
        if len(rows) >= count or time.monotonic() > deadline:
            assert len(rows) == count, rows
            return rows
        time.sleep(0.01)


def full(running: Running, row: dict[str, Any]) -> Call:
    call = running.runtime.store.get_call(row["id"])
    assert call is not None
    return call  # type: ignore[no-any-return]


def openai_client(running: Running, **kwargs: Any) -> openai.OpenAI:
    kwargs.setdefault("api_key", "sk-agent-key")
    client = openai.OpenAI(base_url=running.url + "/openai", max_retries=0, **kwargs)
    return closed_after_test(client)


def test_an_ok_call_is_recorded_as_sent_and_received(interlock: Running) -> None:
    client = openai_client(interlock)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hello recorder"}],
        extra_headers={"x-interlock-agent": "planner", "x-interlock-session": "sess-42"},
    )
    (row,) = recorded(interlock)
    assert row["outcome"] == "ok" and row["status"] == 200 and row["route"] == "openai"
    assert (row["agent"], row["session"], row["model"], row["protocol"]) == (
        "planner",
        "sess-42",
        "gpt-4o-mini",
        "openai",
    )
    assert (row["input_tokens"], row["output_tokens"]) == (11, 7)
    assert row["trace_id"] and row["span_id"] and row["duration_ms"] > 0 and row["ttfb_ms"] is not None
    call = full(interlock, row)
    assert json.loads(call.request_body)["messages"] == [{"role": "user", "content": "hello recorder"}]
    assert call.response_body == raw.http_response.content
    assert call.agent_body() == raw.http_response.content
    assert len(call.attempts) == 1 and call.attempts[0].status == 200
    assert row["attempt_count"] == 1 and row["upstream"] == call.upstream


def test_a_stream_is_kept_as_timed_chunks_and_reassembled(interlock: Running, upstream: ScriptedUpstream) -> None:
    upstream.script(Script(text="the stream arrives in pieces", chunk_size=5, chunk_delay=0.01))
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "go"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    # Read to the end of the body. (The openai SDK closes the connection as soon as it sees
    # `data: [DONE]`, which can race interlock's last send and record the call as aborted.)
    with httpx.stream("POST", interlock.url + "/openai/chat/completions", json=body) as response:
        received = b"".join(response.iter_raw())
    assert b"data: [DONE]" in received
    (row,) = recorded(interlock)
    assert row["stream"] is True and row["outcome"] == "ok" and row["truncated"] is False
    call = full(interlock, row)
    times = [c.t_ms for c in call.chunks]
    assert len(times) > 3 and times == sorted(times) and times[-1] > times[0]
    assert call.ttfb_ms == times[0]
    assert b"".join(c.data for c in call.chunks).count(b"data: ") >= 7
    message = recorded_answer(interlock.runtime.store, row["id"]).message
    assert message["choices"][0]["message"]["content"] == "the stream arrives in pieces"
    assert message["usage"]["completion_tokens"] == 7
    assert [r["id"] for r in interlock.runtime.store.list_calls(q="arrives pieces")] == [row["id"]]


def test_an_anthropic_stream_is_reassembled(interlock: Running, upstream: ScriptedUpstream) -> None:
    upstream.script(Script(text="bonjour tout le monde", chunk_size=4))
    client = anthropic.Anthropic(base_url=interlock.url + "/anthropic", api_key="sk-ant-agent", max_retries=0)
    closed_after_test(client)
    with client.messages.stream(
        model="claude-test-model", max_tokens=50, messages=[{"role": "user", "content": "salut"}]
    ) as stream:
        assert stream.get_final_text() == "bonjour tout le monde"
    (row,) = recorded(interlock)
    message = recorded_answer(interlock.runtime.store, row["id"]).message
    assert message["content"][0]["text"] == "bonjour tout le monde"
    assert [r["id"] for r in interlock.runtime.store.list_calls(q="monde")] == [row["id"]]


def test_secret_headers_never_reach_the_database_file(interlock: Running, tmp_path: Path) -> None:
    client = openai_client(
        interlock,
        api_key="sk-proj-AUTHORIZATION-VALUE-123",
        default_headers={"x-api-key": "XAPIKEY-VALUE-456", "cookie": "session=COOKIE-VALUE-789"},
    )
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True).close()
    rows = recorded(interlock, 2)
    headers = dict(full(interlock, rows[0]).request_headers)
    assert "authorization" not in headers and "x-api-key" not in headers and "cookie" not in headers
    assert headers["content-type"] == "application/json"  # the rest is kept
    for when in ("while running", "after shutdown"):
        data = b"".join(p.read_bytes() for p in Path(interlock.settings.store.path).parent.glob("interlock.db*"))
        assert len(data) > 10000, when
        for secret in (b"AUTHORIZATION-VALUE-123", b"XAPIKEY-VALUE-456", b"COOKIE-VALUE-789", b"sk-real-openai"):
            assert secret not in data, (when, secret)
        interlock.runtime.recorder.close()
        interlock.runtime.store.close()


def test_an_unreachable_upstream_is_recorded_as_upstream_error(make_interlock: Any) -> None:
    dead = {"protocol": "openai", "upstream": f"http://127.0.0.1:{free_port()}/v1", "retry": {"attempts": 1}}
    running = make_interlock(routes={"dead": dead})
    response = httpx.post(running.url + "/dead/chat/completions", json={"model": "m", "messages": []})
    assert response.status_code >= 500
    (row,) = recorded(running)
    assert row["outcome"] == "upstream_error" and row["status"] == response.status_code and row["error_code"]
    call = full(running, row)
    assert call.response_body == response.content
    assert call.attempts and call.attempts[0].error


class DenyForbidden:
    """A test-only policy: the model "forbidden" is denied before anything goes upstream."""

    name = "deny-forbidden"

    async def request(self, call: Call) -> None:
        if call.model == "forbidden":
            call.decide(Decision("policy", "deny", "no-forbidden-model", "that model is not allowed"))
            reply = ADAPTERS[call.protocol].error_reply(403, "policy_denied", "that model is not allowed")
            call.answer(reply, "denied", "policy_denied", "that model is not allowed")


class BlockSecrets:
    """A test-only output guardrail: a response that mentions "classified" is blocked."""

    name = "block-secrets"

    async def response(self, call: Call) -> None:
        if call.response_body and b"classified" in call.response_body:
            call.decide(Decision("guardrails", "deny", "no-classified", "the answer mentions classified data"))
            reply = ADAPTERS[call.protocol].error_reply(403, "blocked", "blocked by a guardrail")
            call.answer(reply, "blocked", "guardrail_blocked", "the answer mentions classified data")


@pytest.fixture
def guarded(make_interlock: Any) -> Running:
    return make_interlock(stages=[DenyForbidden(), BlockSecrets()])  # type: ignore[no-any-return]


def test_denied_and_blocked_calls_are_recorded_with_their_decisions(
    guarded: Running, upstream: ScriptedUpstream
) -> None:
    client = openai_client(guarded)
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="forbidden", messages=[{"role": "user", "content": "x"}])
    upstream.script(Script(text="this is classified"))
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "tell me"}])
    (denied,) = recorded(guarded, outcome="denied")
    (blocked,) = recorded(guarded, outcome="blocked")
    call = full(guarded, denied)
    assert denied["status"] == 403 and denied["error_code"] == "policy_denied" and call.attempts == []
    assert [(d.stage, d.action, d.rule) for d in call.decisions] == [("policy", "deny", "no-forbidden-model")]
    call = full(guarded, blocked)
    assert blocked["error_code"] == "guardrail_blocked" and call.decisions[0].rule == "no-classified"
    assert b"this is classified" in (call.response_body or b"")  # what the upstream said stays on record
    assert b"blocked by a guardrail" in (call.agent_body() or b"")  # and what the agent got instead
    detail = httpx.get(guarded.admin_url + f"/api/calls/{blocked['id']}").json()
    assert detail["decisions"][0]["reason"] == "the answer mentions classified data"


def test_a_client_that_leaves_mid_stream_is_recorded_as_aborted(interlock: Running, upstream: ScriptedUpstream) -> None:
    upstream.script(Script(text="a long answer that takes a while to arrive", chunk_size=2, chunk_delay=0.1))
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "stream": True}
    with httpx.Client() as client:
        with client.stream("POST", interlock.url + "/openai/chat/completions", json=body) as response:
            first = next(response.iter_raw())
            assert first.startswith(b"data: ")
    (row,) = recorded(interlock)
    assert row["outcome"] == "aborted" and row["truncated"] is True and row["stream"] is True
    call = full(interlock, row)
    assert 1 <= len(call.chunks) < 20


def test_bad_requests_are_recorded(make_interlock: Any) -> None:
    running = make_interlock(max_body_bytes=2000)
    url = running.url
    assert httpx.post(url + "/openai/chat/completions", content=b"{not json").status_code == 400
    assert httpx.post(url + "/nowhere/chat/completions", json={}).status_code == 404
    big = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]})
    assert httpx.post(url + "/openai/chat/completions", content=big).status_code == 413
    rows = recorded(running, 3, outcome="bad_request")
    by_code = {r["error_code"]: r for r in rows}
    assert set(by_code) == {"invalid_json", "unknown_route", "body_too_large"}
    assert full(running, by_code["invalid_json"]).request_body == b"{not json"
    assert by_code["unknown_route"]["route"] == "nowhere" and by_code["unknown_route"]["status"] == 404
    assert by_code["body_too_large"]["status"] == 413


def test_metadata_capture_records_calls_without_bodies(make_interlock: Any) -> None:
    running = make_interlock(store={"capture": "metadata"})
    openai_client(running).chat.completions.create(model="m", messages=[{"role": "user", "content": "private words"}])
    (row,) = recorded(running)
    assert row["capture"] == "metadata" and row["size"] == 0 and row["input_tokens"] == 11
    call = full(running, row)
    assert call.request_body == b"" and call.response_body is None
    running.runtime.recorder.close()
    data = Path(running.settings.store.path).read_bytes() + Path(running.settings.store.path + "-wal").read_bytes()
    assert b"private words" not in data


def test_recording_off_records_nothing(make_interlock: Any) -> None:
    running = make_interlock(store={"enabled": False})
    openai_client(running).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert running.runtime.store is None and running.runtime.recorder is None
    assert httpx.get(running.admin_url + "/api/calls").status_code == 503
    assert not Path(running.settings.store.path).exists()


def test_retention_prunes_in_the_background(make_interlock: Any) -> None:
    running = make_interlock(store={"max_age": 0.5})
    client = openai_client(running)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "old"}])
    recorded(running)
    wait_for(lambda: running.runtime.store.count_calls() == 0)
    wait_for(lambda: running.runtime.recorder.counters()["pruned"] == 1)


def test_sessions_come_from_the_header_the_virtual_key_or_the_trace(make_interlock: Any) -> None:
    running = make_interlock(virtual_keys={"vk-team-a": {"agent": "team-a-bot", "session": "team-a-day"}})
    url = running.url + "/openai/chat/completions"
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    trace = "0af7651916cd43dd8448eb211c80319c"
    httpx.post(url, json=body, headers={"authorization": "Bearer vk-team-a"}).raise_for_status()
    httpx.post(url, json=body, headers={"traceparent": f"00-{trace}-b7ad6b7169203331-01"}).raise_for_status()
    httpx.post(
        url, json=body, headers={"x-interlock-session": "explicit", "x-interlock-agent": "a2"}
    ).raise_for_status()
    recorded(running, 3)
    sessions = {s["session"]: s["agents"] for s in running.runtime.store.sessions()}
    assert sessions == {"team-a-day": ["team-a-bot"], trace: ["default"], "explicit": ["a2"]}
    data = b"".join(p.read_bytes() for p in Path(running.settings.store.path).parent.glob("interlock.db*"))
    assert b"vk-team-a" not in data
