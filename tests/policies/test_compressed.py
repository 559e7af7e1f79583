"""Compressed responses are read decoded by every stage (issue 16): real compressed streams, made by
the scripted provider compressing its real-format events as the real APIs do (each event flushed),
through interlock with the anthropic SDK, which asks for gzip, deflate, br and zstd by default.

Each test names the one thing the compressed body must not get past: token usage and limits, a
denied tool call, a response guardrail, placeholder restore, search, replay; and a body interlock
cannot decode while a rule must read it ends in `unreadable_response`, never passes unread.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from click.testing import CliRunner

from interlock.cli import main
from interlock.scripted import Script, ScriptedUpstream, ToolUse
from interlock.testing import Running, replay_server, run_interlock, settings_for_test
from interlock.tracing.store import Store
from tests.conftest import routes_for
from tests.policies.conftest import anthropic_client
from tests.proxy.raw_upstream import RawUpstream, fixed
from tests.proxy.routing_support import collect_calls, finished
from tests.sdk_errors import protocol_error

CODINGS = ["gzip", "br", "zstd", "deflate"]
HI = [{"role": "user", "content": "hi"}]


def stream_text(running: Running, content: str = "hi", **kwargs: Any) -> str:
    with anthropic_client(running).messages.stream(
        model="claude-test", max_tokens=100, messages=[{"role": "user", "content": content}], **kwargs
    ) as stream:
        return "".join(stream.text_stream)


def stored(running: Running, count: int) -> list[dict[str, Any]]:
    recorder = running.runtime.recorder
    store = running.runtime.store
    assert recorder is not None and store is not None
    finished_rows: list[dict[str, Any]] = []

    def recorded() -> bool:
        assert recorder.flush()
        finished_rows[:] = store.list_calls(limit=100)
        return len(finished_rows) >= count

    from tests.proxy.routing_support import wait_for

    wait_for(recorded)
    return finished_rows


@pytest.mark.parametrize("coding", CODINGS)
def test_usage_of_a_compressed_stream_is_counted_by_a_token_limit(
    with_policy: Any, upstream: ScriptedUpstream, coding: str
) -> None:
    running = with_policy("rules:\n  - name: small\n    limits: {tokens_per_minute: 30}\n")
    calls = collect_calls(running)
    upstream.set_default(Script(text="compressed words", encoding=coding))  # 11 + 7 tokens a call
    ask = {"extra_headers": {"accept-encoding": coding}}  # the SDK asks for gzip, deflate, br: zstd too
    assert stream_text(running, **ask) == "compressed words"
    assert stream_text(running, **ask) == "compressed words"  # 18 tokens counted: still below 30
    with pytest.raises(anthropic.RateLimitError) as refused:
        stream_text(running, **ask)
    assert protocol_error(refused.value)["code"] == "rate_limited"
    first, second, third = finished(calls, 3)
    for call in (first, second):
        assert call.meta["content_encoding"] == coding  # it came compressed, and was read decoded
        assert (call.input_tokens, call.output_tokens) == (11, 7)
        assert b"event: message_stop" in b"".join(c.data for c in call.chunks)  # recorded plain
    assert third.error_code == "rate_limited"


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_a_denied_tool_call_in_a_compressed_stream_is_cut(
    with_policy: Any, upstream: ScriptedUpstream, coding: str
) -> None:
    running = with_policy('rules:\n  - name: no-shell\n    deny: {tools: ["run_shell"]}\n')
    calls = collect_calls(running)
    upstream.script(Script(tool_calls=[ToolUse("run_shell", {"cmd": "rm -rf /tmp/x"})], encoding=coding))
    body = {"model": "claude-test", "max_tokens": 100, "messages": HI, "stream": True}
    with httpx.stream(
        "POST", running.url + "/anthropic/v1/messages", json=body, headers={"accept-encoding": coding}, timeout=20
    ) as response:
        assert "content-encoding" not in response.headers  # what the agent gets is one plain stream
        received = b"".join(response.iter_raw())
    assert b"policy_denied" in received and b"rm -rf" not in received
    (call,) = finished(calls)
    assert call.meta["content_encoding"] == coding
    assert (call.outcome, call.error_code, call.truncated) == ("blocked", "policy_denied", True)
    upstream.script(Script(tool_calls=[ToolUse("run_shell", {"cmd": "ls"})], encoding=coding))
    with pytest.raises(anthropic.APIStatusError) as caught:
        stream_text(running)
    assert protocol_error(caught.value)["code"] == "policy_denied"


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_pii_in_a_compressed_stream_is_redacted(make_interlock: Any, upstream: ScriptedUpstream, coding: str) -> None:
    running = make_interlock(guardrails={"response": {"EMAIL_ADDRESS": "mask"}})
    calls = collect_calls(running)
    upstream.script(Script(text="write to jane.roe@acme-corp.io today", encoding=coding))
    text = stream_text(running)
    assert "jane.roe@acme-corp.io" not in text and text.startswith("write to ") and text.endswith(" today")
    (call,) = finished(calls)
    assert call.meta["content_encoding"] == coding
    assert [f.entity for f in call.findings] == ["EMAIL_ADDRESS"]
    assert b"jane.roe" not in b"".join(c.data for c in call.chunks)  # the record holds it masked too


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_placeholders_in_a_compressed_stream_are_restored(
    make_interlock: Any, upstream: ScriptedUpstream, coding: str
) -> None:
    email = "jane.roe@acme-corp.io"
    running = make_interlock(guardrails={"request": {"EMAIL_ADDRESS": "redact"}})
    upstream.script(Script(chunk_size=3, encoding=coding))  # echoes the placeholder it was sent
    assert stream_text(running, f"hi {email}!") == f"echo: hi {email}!"
    assert upstream.requests[-1].json()["messages"][0]["content"] == "hi <EMAIL_ADDRESS_1>!"


@pytest.mark.parametrize("stream", [True, False])
def test_a_compressed_response_is_found_by_search(
    make_interlock: Any, upstream: ScriptedUpstream, stream: bool
) -> None:
    running = make_interlock()
    upstream.script(Script(text="the zebracorn grazes", encoding="br"))
    client = anthropic_client(running)
    if stream:
        assert stream_text(running) == "the zebracorn grazes"
    else:
        reply = client.messages.create(model="claude-test", max_tokens=100, messages=HI)  # type: ignore[arg-type]
        assert reply.content[0].text == "the zebracorn grazes"  # type: ignore[union-attr]
    stored(running, 1)
    store = running.runtime.store
    [row] = store.list_calls(q="zebracorn")
    call = store.get_call(row["id"])
    assert call is not None and call.meta["content_encoding"] == "br"
    assert not any(k == "content-encoding" for k, _ in call.response_headers)  # the record is plain


def test_a_compressed_stream_replays(tmp_path: Path) -> None:
    path = tmp_path / "interlock.db"

    def ask(base_url: str) -> str:
        client = anthropic.Anthropic(
            base_url=base_url, api_key="x", max_retries=0, default_headers={"X-Interlock-Session": "z"}
        )
        with client.messages.stream(model="claude-test", max_tokens=100, messages=HI) as stream:  # type: ignore[arg-type]
            return "".join(stream.text_stream)

    with ScriptedUpstream() as provider:
        provider.script(Script(text="replayed from gzip", chunk_size=3, encoding="gzip"))
        settings = settings_for_test(
            {"routes": routes_for(provider), "store": {"path": str(path)}, "shutdown_grace": 1}
        )
        with run_interlock(settings) as running:
            recorded = ask(running.url + "/anthropic")
    bundle = tmp_path / "bundle.db"
    with Store(path) as opened:
        assert opened.export(bundle, session="z") == 1
    with replay_server(bundle) as replay:
        assert ask(replay.base_url("anthropic")) == recorded == "replayed from gzip"
    replay.assert_no_divergence(all_used=True)


# -- what cannot be read -----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
def test_an_unknown_encoding_with_a_response_rule_is_unreadable_response(
    make_interlock: Any, upstream: ScriptedUpstream, stream: bool
) -> None:
    running = make_interlock(guardrails={"response": {"EMAIL_ADDRESS": "block"}})
    calls = collect_calls(running)
    upstream.script(Script(text="jane.roe@acme-corp.io", encoding="x-squeeze"))
    body = {"model": "claude-test", "max_tokens": 100, "messages": HI, "stream": stream}
    response = httpx.post(running.url + "/anthropic/v1/messages", json=body, timeout=20)
    assert response.status_code == 502
    assert response.json()["type"] == "error" and response.json()["error"]["code"] == "unreadable_response"
    assert b"jane.roe" not in response.content
    (call,) = finished(calls)
    assert call.error_code == "unreadable_response"
    [decision] = [d for d in call.decisions if d.stage == "proxy"]
    assert decision.action == "deny" and "x-squeeze" in decision.reason and "guardrails" in decision.reason


def test_a_token_limit_reads_the_response_too(with_policy: Any, upstream: ScriptedUpstream) -> None:
    running = with_policy("rules:\n  - name: small\n    limits: {tokens_per_day: 1000}\n")
    upstream.script(Script(encoding="x-squeeze"))
    body = {"model": "claude-test", "max_tokens": 100, "messages": HI, "stream": True}
    response = httpx.post(running.url + "/anthropic/v1/messages", json=body, timeout=20)
    assert response.status_code == 502 and response.json()["error"]["code"] == "unreadable_response"
    assert "limit 'small' (token usage)" in response.json()["error"]["message"]


def test_an_unknown_encoding_nothing_reads_is_relayed_untouched_and_marked(
    make_interlock: Any, upstream: ScriptedUpstream
) -> None:
    running = make_interlock()
    calls = collect_calls(running)
    upstream.script(Script(text="as it came", encoding="x-squeeze"))
    body = {"model": "claude-test", "max_tokens": 100, "messages": HI}
    with httpx.stream("POST", running.url + "/anthropic/v1/messages", json=body, timeout=20) as response:
        raw = b"".join(response.iter_raw())
    assert response.status_code == 200 and response.headers["content-encoding"] == "x-squeeze"
    assert json.loads(raw)["content"][0]["text"] == "as it came"  # the label over a plain body, untouched
    (call,) = finished(calls)
    # No usage read: the prompt is estimated (as for any model answer without usage), marked so.
    assert call.outcome == "ok" and call.meta["usage_estimated"] is True and (call.input_tokens or 0) >= 1
    [decision] = call.decisions
    assert (decision.stage, decision.action) == ("proxy", "skip") and "unread" in decision.reason
    stored(running, 1)  # and `traces show` says so
    shown = CliRunner().invoke(main, ["traces", "show", "--store", running.settings.store.path, call.id])
    assert shown.exit_code == 0 and "[proxy] skip: response relayed unread (" in shown.output


@pytest.mark.parametrize("rule", [True, False])
def test_a_body_that_does_not_decode(make_interlock: Any, upstream: ScriptedUpstream, rule: bool) -> None:
    running = make_interlock(guardrails={"response": {"EMAIL_ADDRESS": "block"}} if rule else {})
    broken = gzip.compress(b'{"type": "message"}')[:-6]
    upstream.script(Script(body=broken, headers={"content-encoding": "gzip"}))
    body = {"model": "claude-test", "max_tokens": 100, "messages": HI}
    with httpx.stream("POST", running.url + "/anthropic/v1/messages", json=body, timeout=20) as response:
        raw = b"".join(response.iter_raw())
    if rule:
        assert response.status_code == 502 and json.loads(raw)["error"]["code"] == "unreadable_response"
    else:  # nothing reads it: the agent gets what the upstream sent, as it sent it
        assert response.status_code == 200 and raw == broken and response.headers["content-encoding"] == "gzip"


def test_a_stream_that_stops_decoding_ends_with_unreadable_response(tmp_path: Path) -> None:
    # Hex noise compresses to about half: the good part is far longer than the first read, so the
    # stream starts (decoded) before the bytes that do not decode arrive.
    events = b"".join(
        b'event: ping\ndata: {"type": "ping", "noise": "%s"}\n\n' % os.urandom(500).hex().encode() for _ in range(600)
    )
    compressed = gzip.compress(events)
    cut = len(compressed) * 3 // 4
    broken = compressed[:cut] + bytes(b ^ 0x5A for b in compressed[cut:])
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: gzip\r\nconnection: close\r\n\r\n"
    with RawUpstream(fixed(head + broken)) as provider:
        routes = {"anthropic": {"protocol": "anthropic", "upstream": provider.url}}
        with run_interlock(settings_for_test({"routes": routes, "shutdown_grace": 1}, tmp_path)) as running:
            calls = collect_calls(running)
            body = {"model": "claude-test", "max_tokens": 100, "messages": HI, "stream": True}
            received = httpx.post(running.url + "/anthropic/v1/messages", json=body, timeout=20)
            (call,) = finished(calls)
    assert received.status_code == 200 and "content-encoding" not in received.headers
    assert received.content.startswith(b"event: ping")  # what decoded went out, plain
    assert b"unreadable_response" in received.content.split(b"\n\n")[-2]  # then the stream's error event
    assert (call.error_code, call.truncated) == ("unreadable_response", True)
