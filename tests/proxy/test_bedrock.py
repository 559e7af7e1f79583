"""AWS Bedrock Runtime through interlock with boto3's `bedrock-runtime` client: Converse and
ConverseStream, InvokeModel; interlock re-signs every request with the route's credentials (the
scripted provider verifies the SigV4 signature with botocore) and never relays the agent's."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import httpx
import pytest

from interlock.scripted import Script, ScriptedUpstream, ToolUse
from interlock.scripted.bedrock import AwsCredentials
from interlock.testing import Running, replay_server
from interlock.tracing.store import Store
from tests.guardrails.test_guardrails_sdk import stored_bytes
from tests.proxy.routing_support import collect_calls, conversation, wait_for
from tests.proxy.test_gemini import recorded

MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
ROUTE_KEY = AwsCredentials("AKIDROUTEKEY0000", "route-secret-key", "eu-west-1", "route-session-token")
EMAIL = "jane.roe@acme-corp.io"


def bedrock_route(upstream: ScriptedUpstream, **extra: Any) -> dict[str, Any]:
    key = f"{ROUTE_KEY.access_key_id}:{ROUTE_KEY.secret_access_key}:{ROUTE_KEY.session_token}"
    target = {"url": upstream.url, "api_key": key, "region": ROUTE_KEY.region, **extra}
    return {"protocol": "bedrock", "upstreams": [target]}


@contextlib.contextmanager
def client(running: Running, route: str = "bedrock") -> Iterator[Any]:
    """boto3 as an agent uses it: its own (placeholder) credentials, interlock as the endpoint."""
    agent = boto3.client(
        "bedrock-runtime",
        endpoint_url=f"{running.url}/{route}",
        region_name="us-west-2",
        aws_access_key_id="AKIDAGENTKEY0000",
        aws_secret_access_key="agent-secret",
        aws_session_token="agent-session-token",
        config=botocore.config.Config(retries={"max_attempts": 1}),
    )
    try:
        yield agent
    finally:
        agent.close()


@pytest.fixture
def signed(upstream: ScriptedUpstream) -> ScriptedUpstream:
    upstream.aws_credentials = ROUTE_KEY
    return upstream


@pytest.fixture
def running(make_interlock: Any, signed: ScriptedUpstream, tmp_path: Path) -> Running:
    policy = tmp_path / "p.yaml"
    policy.write_text("rules:\n  - name: no-rm\n    deny: {tools: [rm]}\n")
    return make_interlock(  # type: ignore[no-any-return]
        routes={"bedrock": bedrock_route(signed)},
        policies=[str(policy)],
        guardrails={"request": {"EMAIL_ADDRESS": "redact"}},
    )


@pytest.fixture
def agent(running: Running) -> Iterator[Any]:
    with client(running) as boto:
        yield boto


def refused_stream(stream: Any) -> botocore.exceptions.EventStreamError:
    """The error boto3 raises reading a stream that ends in an exception message (the stream closed
    after: boto3 leaves it open)."""
    try:
        with pytest.raises(botocore.exceptions.EventStreamError) as raised:
            list(stream)
    finally:
        stream.close()
    return raised.value


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"text": text}]}]


def test_converse_is_re_signed_with_the_route_credentials_and_usage_recorded(
    running: Running, agent: Any, signed: ScriptedUpstream
) -> None:
    calls = collect_calls(running)
    answer = agent.converse(modelId=MODEL, messages=_user("hello"), system=[{"text": "be brief"}])
    assert answer["output"]["message"]["content"] == [{"text": "echo: hello"}]
    assert answer["usage"]["inputTokens"] == 11 and answer["stopReason"] == "end_turn"
    (sent,) = signed.requests
    assert sent.signature_problem is None and "Credential=AKIDROUTEKEY0000/" in sent.headers["authorization"]
    assert sent.headers["x-amz-security-token"] == "route-session-token"
    assert sent.path == f"/model/{MODEL}/converse"
    wait_for(lambda: len(calls) == 1)
    (call,) = calls
    assert call.protocol == "bedrock" and call.model == MODEL and call.outcome == "ok"
    assert (call.input_tokens, call.output_tokens) == (11, 7)
    stored = stored_bytes(running, 1)
    for secret in (b"agent-session-token", b"agent-secret", b"route-session-token", b"route-secret-key", b"Signature="):
        assert secret not in stored


def test_a_signature_the_provider_rejects_is_a_bedrock_error_for_the_agent(
    make_interlock: Any, signed: ScriptedUpstream
) -> None:
    wrong = bedrock_route(signed, api_key="AKIDROUTEKEY0000:not-the-secret:route-session-token")
    running = make_interlock(routes={"bedrock": wrong})
    with client(running) as agent, pytest.raises(botocore.exceptions.ClientError) as raised:
        agent.converse(modelId=MODEL, messages=_user("hello"))
    error = raised.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert error["Error"]["Code"] == "InvalidSignatureException"
    assert signed.requests[-1].signature_problem is not None


def test_converse_stream_is_relayed_event_by_event_and_recorded_whole(
    running: Running, agent: Any, signed: ScriptedUpstream
) -> None:
    calls = collect_calls(running)
    signed.script(Script(text="streamed answer here", chunk_size=3))
    stream = agent.converse_stream(modelId=MODEL, messages=_user("hi"))["stream"]
    events = list(stream)
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == "streamed answer here"
    assert events[-1]["metadata"]["usage"]["outputTokens"] == 7
    assert signed.requests[-1].signature_problem is None
    wait_for(lambda: len(calls) == 1)
    assert calls[0].stream and calls[0].outcome == "ok" and (calls[0].input_tokens, calls[0].output_tokens) == (11, 7)


def test_email_is_redacted_upstream_and_restored_for_the_agent_streamed_and_not(
    running: Running, agent: Any, signed: ScriptedUpstream
) -> None:
    answer = agent.converse(modelId=MODEL, messages=_user(f"write to {EMAIL}"))
    assert answer["output"]["message"]["content"][0]["text"] == f"echo: write to {EMAIL}"
    assert signed.requests[-1].json()["messages"][0]["content"][0]["text"] == "write to <EMAIL_ADDRESS_1>"
    signed.script(Script(chunk_size=3))
    events = list(agent.converse_stream(modelId=MODEL, messages=_user(f"mail {EMAIL} now"))["stream"])
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == f"echo: mail {EMAIL} now"
    assert EMAIL.encode() not in b"".join(r.body for r in signed.requests)
    assert all(r.signature_problem is None for r in signed.requests)


def test_a_denied_tool_is_stripped_from_the_request_and_refused_in_the_answer(
    running: Running, agent: Any, signed: ScriptedUpstream
) -> None:
    tools = {
        "tools": [{"toolSpec": {"name": name, "inputSchema": {"json": {"type": "object"}}}} for name in ("rm", "ls")]
    }
    signed.script(Script(tool_calls=[ToolUse("ls", {"path": "/tmp"})]))
    answer = agent.converse(modelId=MODEL, messages=_user("list"), toolConfig=tools)
    (block,) = answer["output"]["message"]["content"]
    assert block["toolUse"]["name"] == "ls" and block["toolUse"]["input"] == {"path": "/tmp"}
    assert [t["toolSpec"]["name"] for t in signed.requests[-1].json()["toolConfig"]["tools"]] == ["ls"]
    signed.script(Script(tool_calls=[ToolUse("rm", {"path": "/"})]))
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        agent.converse(modelId=MODEL, messages=_user("delete"), toolConfig=tools)
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    signed.script(Script(tool_calls=[ToolUse("rm", {"path": "/"})]))
    refused_stream(agent.converse_stream(modelId=MODEL, messages=_user("delete"), toolConfig=tools)["stream"])
    assert [c["error_code"] for c in recorded(running, 3)[:2]] == ["policy_denied", "policy_denied"]


def _session(agent: Any, session: str) -> Any:
    """The agent names its session in a header (added before boto3 signs)."""

    def add(request: Any, **_: Any) -> None:
        request.headers["X-Interlock-Session"] = session

    agent.meta.events.register("before-sign.bedrock-runtime.*", add)
    return agent


def test_the_call_page_shows_the_conversation_and_the_cost(
    running: Running, agent: Any, signed: ScriptedUpstream
) -> None:
    signed.script(Script(text="plain answer"), Script(text="streamed answer", chunk_size=4))
    agent.converse(modelId=MODEL, messages=_user("one"), system=[{"text": "be brief"}])
    list(agent.converse_stream(modelId=MODEL, messages=_user("two"))["stream"])
    streamed, plain = recorded(running, 2)[:2]
    assert streamed["stream"] and (streamed["input_tokens"], streamed["output_tokens"]) == (11, 7)
    assert plain["cost_usd"] and plain["cost_usd"] > 0  # priced from the catalogue (aws)
    assert conversation(running, plain["id"]) == [
        ("system", "be brief"),
        ("user", "one"),
        ("assistant response", "plain answer"),
    ]
    assert conversation(running, streamed["id"]) == [("user", "two"), ("assistant response", "streamed answer")]


def test_invoke_model_with_an_anthropic_body_streamed_and_not(
    running: Running, agent: Any, signed: ScriptedUpstream
) -> None:
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": f"to {EMAIL}"}],
    }
    answer = json.loads(agent.invoke_model(modelId=MODEL, body=json.dumps(body))["body"].read())
    assert answer["content"][0]["text"] == f"echo: to {EMAIL}"
    assert signed.requests[-1].json()["messages"][0]["content"] == "to <EMAIL_ADDRESS_1>"
    signed.script(Script(chunk_size=4))
    events = agent.invoke_model_with_response_stream(modelId=MODEL, body=json.dumps(body))["body"]
    chunks = [json.loads(e["chunk"]["bytes"]) for e in events]
    text = "".join(c["delta"]["text"] for c in chunks if c["type"] == "content_block_delta")
    assert text == f"echo: to {EMAIL}" and chunks[-1]["type"] == "message_stop"  # restored in the chunks
    assert EMAIL.encode() not in b"".join(r.body for r in signed.requests)
    assert all(r.signature_problem is None for r in signed.requests)
    streamed, plain = recorded(running, 2)[:2]
    assert (plain["input_tokens"], plain["output_tokens"]) == (11, 7) and plain["outcome"] == "ok"
    assert (streamed["input_tokens"], streamed["output_tokens"]) == (11, 7) and streamed["outcome"] == "ok"


def test_a_budget_refuses_in_bedrocks_error_shape(
    make_interlock: Any, signed: ScriptedUpstream, tmp_path: Path
) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("rules:\n  - name: tiny\n    limits: {budget_usd_per_day: 0.000001}\n")
    running = make_interlock(routes={"bedrock": bedrock_route(signed)}, policies=[str(policy)])
    with client(running) as agent:
        agent.converse(modelId=MODEL, messages=_user("spend"))
        recorded(running, 1)
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            agent.converse(modelId=MODEL, messages=_user("spend again"))
    error = refused.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] in (403, 429)
    assert error["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"].split(":")[0].endswith("Exception")
    assert "tiny" in error["Error"]["Message"]
    assert len(signed.requests) == 1


def test_a_recorded_session_replays_offline(running: Running, signed: ScriptedUpstream, tmp_path: Path) -> None:
    signed.script(Script(text="first answer"), Script(text="second answer", chunk_size=5))

    def ask(agent: Any) -> list[str]:
        first = agent.converse(modelId=MODEL, messages=_user("one"))["output"]["message"]["content"][0]["text"]
        events = agent.converse_stream(modelId=MODEL, messages=_user("two"))["stream"]
        return [first, "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)]

    with client(running) as agent:
        answers = ask(_session(agent, "incident"))
    recorded(running, 2)
    bundle = tmp_path / "incident.db"
    with Store(Path(running.settings.store.path)) as store:
        assert store.export(bundle, session="incident") == 2
    signed.reset()
    with replay_server(bundle) as replay:
        again = boto3.client(
            "bedrock-runtime",
            endpoint_url=replay.base_url("bedrock"),
            region_name="us-west-2",
            aws_access_key_id="AKIDAGENTKEY0000",
            aws_secret_access_key="agent-secret",
            config=botocore.config.Config(retries={"max_attempts": 1}),
        )
        try:
            assert ask(_session(again, "incident")) == answers == ["first answer", "second answer"]
            with pytest.raises(botocore.exceptions.ClientError) as diverged:
                again.converse(modelId=MODEL, messages=_user("three"))
        finally:
            again.close()
    assert diverged.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    assert signed.requests == []  # nothing reached a model


def test_a_denied_tool_in_an_invoke_stream_is_refused(running: Running, agent: Any, signed: ScriptedUpstream) -> None:
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "x"}],
    }
    signed.script(Script(tool_calls=[ToolUse("rm", {"path": "/"})]))
    refused_stream(agent.invoke_model_with_response_stream(modelId=MODEL, body=json.dumps(body))["body"])
    assert recorded(running, 1)[0]["error_code"] == "policy_denied"


def test_without_route_keys_the_aws_credential_chain_signs(
    make_interlock: Any, signed: ScriptedUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    from interlock.protocols import bedrock

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ROUTE_KEY.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ROUTE_KEY.secret_access_key)
    monkeypatch.setenv("AWS_SESSION_TOKEN", str(ROUTE_KEY.session_token))
    bedrock._chain_session.cache_clear()
    route = {"protocol": "bedrock", "upstreams": [{"url": signed.url, "region": ROUTE_KEY.region}]}
    running = make_interlock(routes={"bedrock": route})
    try:
        with client(running) as agent:
            answer = agent.converse(modelId=MODEL, messages=_user("chain"))
    finally:
        bedrock._chain_session.cache_clear()
    assert answer["output"]["message"]["content"][0]["text"] == "echo: chain"
    assert signed.requests[-1].signature_problem is None


def test_a_mid_stream_exception_reaches_the_agent_and_the_call_is_an_error(
    running: Running, agent: Any, signed: ScriptedUpstream
) -> None:
    signed.script(Script(text="partial answer that breaks", chunk_size=3, error_event_after=3))
    raised = refused_stream(agent.converse_stream(modelId=MODEL, messages=_user("go"))["stream"])
    assert raised.response["Error"]["Code"] == "internalServerException"
    (call,) = recorded(running, 1)
    assert call["outcome"] != "ok"


def test_bad_input_is_a_4xx_in_bedrocks_shape(running: Running) -> None:
    bad = httpx.post(f"{running.url}/bedrock/model/{MODEL}/converse", content=b"{not json")
    assert bad.status_code == 400 and bad.headers["x-amzn-errortype"].startswith("ValidationException")
    assert bad.json()["code"] == "invalid_json"
    no_list = httpx.post(f"{running.url}/bedrock/model/{MODEL}/converse", json={"messages": {"role": "user"}})
    assert no_list.status_code == 400 and no_list.json()["code"] == "invalid_request"
