"""Through the real openai SDK: PII is redacted upstream and restored for the agent, or blocked."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from interlock.scripted import Script, ScriptedUpstream, ToolUse
from interlock.testing import Running
from tests.policies.conftest import anthropic_client, openai_client
from tests.sdk_errors import protocol_error

EMAIL = "jane.roe@acme-corp.io"
CARD = "4539 1488 0343 6467"  # Luhn-valid
AWS_KEY = "AKIAQX7Z4KJH2M3N5P6R"

GUARDRAILS = {
    "request": {"EMAIL_ADDRESS": "redact", "PHONE_NUMBER": "redact", "CREDIT_CARD": "block", "SECRET": "block"},
}


def client_for(running: Running, session: str = "s1") -> openai.OpenAI:
    return openai_client(running, **{"X-Interlock-Session": session})


def stored_bytes(running: Running, calls: int | None = None) -> bytes:
    """Everything the store wrote to disk (database and write-ahead log), once `calls` calls are
    recorded (a call reaches the recorder just after the agent got its answer)."""
    recorder = running.runtime.recorder
    assert recorder is not None
    deadline = time.monotonic() + 60
    while True:
        assert recorder.flush()
        if calls is None or len(running.runtime.store.list_calls(limit=1000)) >= calls:
            break
        assert time.monotonic() < deadline, "calls were not recorded in time"
        time.sleep(0.01)
    path = Path(running.settings.store.path)
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def sent_bodies(upstream: ScriptedUpstream) -> bytes:
    return b"".join(r.body for r in upstream.requests)


@pytest.fixture
def guarded(make_interlock: Any) -> Running:
    return make_interlock(guardrails=GUARDRAILS)  # type: ignore[no-any-return]


def test_email_is_redacted_upstream_and_restored_for_the_agent(guarded: Running, upstream: ScriptedUpstream) -> None:
    client = client_for(guarded)
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"write to {EMAIL} today"}]
    )
    assert completion.choices[0].message.content == f"echo: write to {EMAIL} today"
    sent = upstream.requests[-1].json()
    assert sent["messages"][0]["content"] == "write to <EMAIL_ADDRESS_1> today"
    assert EMAIL.encode() not in sent_bodies(upstream)


def test_email_is_restored_in_a_stream(guarded: Running, upstream: ScriptedUpstream) -> None:
    upstream.script(Script(chunk_size=3))
    client = client_for(guarded)
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"mail {EMAIL} and {EMAIL}"}], stream=True
    )
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == f"echo: mail {EMAIL} and {EMAIL}"
    assert upstream.requests[-1].json()["messages"][0]["content"] == "mail <EMAIL_ADDRESS_1> and <EMAIL_ADDRESS_1>"
    assert EMAIL.encode() not in sent_bodies(upstream)


def test_credit_card_blocks_the_call_naming_the_type_not_the_number(
    guarded: Running, upstream: ScriptedUpstream
) -> None:
    client = client_for(guarded)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"charge {CARD} now"}])
    error = protocol_error(caught.value)
    assert error["code"] == "pii_blocked"
    assert "CREDIT_CARD" in error["message"]
    assert CARD not in error["message"] and CARD.replace(" ", "") not in error["message"]
    assert upstream.requests == []


def test_aws_key_is_caught(guarded: Running, upstream: ScriptedUpstream) -> None:
    client = client_for(guarded)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": f"deploy with key {AWS_KEY} please"}]
        )
    assert protocol_error(caught.value)["code"] == "pii_blocked" and "SECRET" in protocol_error(caught.value)["message"]
    assert AWS_KEY not in protocol_error(caught.value)["message"]
    assert upstream.requests == []


def test_a_prompt_of_token_ids_is_refused_under_a_block_action_and_recorded(
    guarded: Running, upstream: ScriptedUpstream
) -> None:
    # No text to scan for the card number GUARDRAILS blocks: fail closed (on_error: deny, the default).
    client = client_for(guarded, session="token-ids")
    with pytest.raises(openai.InternalServerError) as caught:
        client.completions.create(model="gpt-3.5-turbo-instruct", prompt=[1734, 374, 264])
    assert caught.value.status_code == 503 and protocol_error(caught.value)["code"] == "guardrails_error"
    assert upstream.requests == []
    (call,) = guarded.recorded_calls(session="token-ids")
    assert (call.outcome, call.error_code) == ("blocked", "guardrails_error")
    assert [d.action for d in call.decisions if d.stage == "guardrails"] == ["deny"]


def test_tool_arguments_and_results_are_redacted_and_restored(guarded: Running, upstream: ScriptedUpstream) -> None:
    upstream.script(Script(tool_calls=[ToolUse("send_mail", {"to": "<EMAIL_ADDRESS_1>"})]))
    client = client_for(guarded)
    tools = [{"type": "function", "function": {"name": "send_mail", "parameters": {"type": "object"}}}]
    messages: list[dict[str, Any]] = [{"role": "user", "content": f"mail {EMAIL}"}]
    first = client.chat.completions.create(model="gpt-4o", messages=messages, tools=tools)  # type: ignore[arg-type]
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert json.loads(call.function.arguments) == {"to": EMAIL}  # type: ignore[union-attr]
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": f"sent to {EMAIL}"},
    ]
    second = client.chat.completions.create(model="gpt-4o", messages=messages, tools=tools)  # type: ignore[arg-type]
    assert second.choices[0].message.content == f"echo: tool said: sent to {EMAIL}"
    sent = upstream.requests[-1].json()["messages"]
    assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == {"to": "<EMAIL_ADDRESS_1>"}
    assert sent[2]["content"] == "sent to <EMAIL_ADDRESS_1>"
    assert EMAIL.encode() not in sent_bodies(upstream)


def test_responses_api_stream_restores_placeholders(guarded: Running, upstream: ScriptedUpstream) -> None:
    upstream.script(Script(chunk_size=2))
    client = client_for(guarded)
    with client.responses.stream(model="gpt-4.1", input=f"reply to {EMAIL}") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == f"echo: reply to {EMAIL}"
    assert final.output_text == f"echo: reply to {EMAIL}"
    assert upstream.requests[-1].json()["input"] == "reply to <EMAIL_ADDRESS_1>"


def test_anthropic_stream_restores_placeholders(guarded: Running, upstream: ScriptedUpstream) -> None:
    upstream.script(Script(chunk_size=5))
    client = anthropic_client(guarded)
    with client.messages.stream(
        model="claude-test", max_tokens=100, messages=[{"role": "user", "content": f"hi {EMAIL}!"}]
    ) as stream:
        text = "".join(stream.text_stream)
    assert text == f"echo: hi {EMAIL}!"
    assert upstream.requests[-1].json()["messages"][0]["content"] == "hi <EMAIL_ADDRESS_1>!"


def test_the_same_value_keeps_its_placeholder_across_turns(guarded: Running, upstream: ScriptedUpstream) -> None:
    client = client_for(guarded, session="turns")
    other = "sam.poe@acme-corp.io"
    messages: list[dict[str, Any]] = [{"role": "user", "content": f"{EMAIL} and {other}"}]
    first = client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    messages += [{"role": "assistant", "content": first.choices[0].message.content}]
    messages += [{"role": "user", "content": f"again {other}"}]
    client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    sent = [m["content"] for m in upstream.requests[-1].json()["messages"]]
    assert sent == [
        "<EMAIL_ADDRESS_1> and <EMAIL_ADDRESS_2>",
        "echo: <EMAIL_ADDRESS_1> and <EMAIL_ADDRESS_2>",
        "again <EMAIL_ADDRESS_2>",
    ]


def test_a_model_echoing_pii_is_masked_or_blocked(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    running = make_interlock(
        guardrails={"response": {"PHONE_NUMBER": "mask", "CREDIT_CARD": "block"}},
    )
    client = client_for(running)
    upstream.script(Script(text="call 212-555-0187 now"), Script(text="call 212-555-0187 now", chunk_size=3))
    plain = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert plain.choices[0].message.content == "call ***-***-**** now"
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "call ***-***-**** now"
    upstream.script(Script(text=f"your card is {CARD}, ok", chunk_size=4))
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
    received = ""
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received += (chunk.choices[0].delta.content or "") if chunk.choices else ""
    error = protocol_error(caught.value)
    assert "CREDIT_CARD" in error["message"] and CARD not in error["message"]
    assert received == "your card is "
    data = stored_bytes(running, calls=3)
    assert b"212-555-0187" not in data and CARD.encode() not in data


def test_the_store_holds_no_raw_value(guarded: Running, upstream: ScriptedUpstream) -> None:
    client = client_for(guarded)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"mail {EMAIL}"}])
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": f"mail {EMAIL}"}], stream=True
    )
    assert EMAIL in "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"card {CARD} {EMAIL}"}])
    data = stored_bytes(guarded, calls=3)
    assert EMAIL.encode() not in data and CARD.encode() not in data
    assert b"<EMAIL_ADDRESS_1>" in data
    store = guarded.runtime.store
    calls = [store.get_call(row["id"]) for row in store.list_calls()]
    findings = [f for c in calls if c is not None for f in c.findings]
    assert {(f.entity, f.action) for f in findings} >= {("EMAIL_ADDRESS", "redact"), ("CREDIT_CARD", "block")}
    assert all(f.value is None for f in findings)
    blocked = next(c for c in calls if c is not None and c.outcome == "blocked")
    assert blocked.error_code == "pii_blocked"
    assert blocked.request_body.endswith(b'card <CREDIT_CARD> <EMAIL_ADDRESS>"}]}')


def test_a_policy_rule_sets_the_actions(make_interlock: Any, write_policy: Any, upstream: ScriptedUpstream) -> None:
    folder = write_policy(
        """
        version: 1
        rules:
          - name: no-emails-upstream
            pii: {EMAIL_ADDRESS: redact}
            secrets: block
        """
    )
    running = make_interlock(policies=[str(folder)])
    client = client_for(running)
    completion = client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"to {EMAIL}"}])
    assert completion.choices[0].message.content == f"echo: to {EMAIL}"
    assert upstream.requests[-1].json()["messages"][0]["content"] == "to <EMAIL_ADDRESS_1>"
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"key {AWS_KEY}"}])
    error = protocol_error(caught.value)
    assert error["code"] == "pii_blocked" and "no-emails-upstream" in error["message"]


def test_streamed_tool_arguments_are_restored(guarded: Running, upstream: ScriptedUpstream) -> None:
    name = 'Jo "JJ" Roe <jo.roe@acme-corp.io>'
    client = client_for(guarded, session="tools")
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"mail {EMAIL}"}])
    upstream.script(Script(tool_calls=[ToolUse("send_mail", {"to": "<EMAIL_ADDRESS_1>", "cc": name})]))
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": f"mail {EMAIL} again"}], stream=True
    )
    arguments = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or ""  # type: ignore[index,union-attr]
        for c in stream
        if c.choices and c.choices[0].delta.tool_calls
    )
    assert json.loads(arguments) == {"to": EMAIL, "cc": name}


def test_anthropic_streamed_tool_input_is_restored(guarded: Running, upstream: ScriptedUpstream) -> None:
    client = anthropic_client(guarded)
    client.messages.create(model="claude-test", max_tokens=50, messages=[{"role": "user", "content": f"hi {EMAIL}"}])
    upstream.script(Script(tool_calls=[ToolUse("send_mail", {"to": "<EMAIL_ADDRESS_1>"})]))
    with client.messages.stream(
        model="claude-test", max_tokens=50, messages=[{"role": "user", "content": f"mail {EMAIL}"}]
    ) as stream:
        message = stream.get_final_message()
    assert message.content[0].type == "tool_use" and message.content[0].input == {"to": EMAIL}


def test_a_blocked_response_is_not_relayed(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    running = make_interlock(guardrails={"response": {"SECRET": "block"}})
    upstream.script(Script(text="the key is AKIAQX7Z4KJH2M3N5P6R"))
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client_for(running).chat.completions.create(model="m", messages=[{"role": "user", "content": "key?"}])
    assert protocol_error(caught.value)["code"] == "pii_blocked" and "SECRET" in protocol_error(caught.value)["message"]
    assert b"AKIAQX7Z4KJH2M3N5P6R" not in stored_bytes(running, calls=1)


def test_a_lone_surrogate_does_not_switch_the_guardrails_off(guarded: Running, upstream: ScriptedUpstream) -> None:
    # JSON may carry "\ud800", which has no UTF-8 form: the secrets scanner must still run, and the
    # redacted body must still be valid JSON for the upstream
    body = b'{"model": "m", "messages": [{"role": "user", "content": "mail ' + EMAIL.encode() + b' \\ud800"}]}'
    response = httpx.post(
        guarded.url + "/openai/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert EMAIL.encode() not in sent_bodies(upstream)
    sent = upstream.requests[-1].json()
    assert sent["messages"][0]["content"] == "mail <EMAIL_ADDRESS_1> \ud800"
