"""Policy effects on the other wire formats: MCP tools/call, the Responses API, Anthropic, plain HTTP;
and the policy stage alone, with a made-up Call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from interlock.config import Settings
from interlock.core.actions import GuardrailActions
from interlock.policies.cases import CaseRequest, build_call, decide
from interlock.policies.loader import PolicyRuntime, load_policies
from interlock.policies.stage import PolicyStage
from interlock.scripted import ScriptedUpstream
from tests.conftest import routes_for


def test_an_mcp_tool_call_is_denied_with_a_json_rpc_error(with_policy: Any, upstream: ScriptedUpstream) -> None:
    running = with_policy(
        """
        rules:
          - name: no-shell
            match: {route: mcp, tool: "shell*"}
            deny: {}
            message: no shells
        """,
        routes={**routes_for(upstream), "mcp": {"protocol": "mcp", "upstream": upstream.url + "/mcp"}},
    )
    message = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "shell_exec", "arguments": {}}}
    headers = {"accept": "application/json, text/event-stream", "x-interlock-agent": "a"}
    response = httpx.post(running.url + "/mcp/", json=message, headers=headers)
    body = response.json()
    assert body["id"] == 7 and body["error"]["data"]["code"] == "policy_denied"
    assert "no-shell" in body["error"]["message"] and "no shells" in body["error"]["message"]
    assert upstream.requests == []


def test_http_route_methods(with_policy: Any, upstream: ScriptedUpstream) -> None:
    running = with_policy(
        """
        rules:
          - name: read-only-tools
            match: {route: tools}
            allow: {methods: [GET]}
        """
    )
    assert httpx.get(running.url + "/tools/items").status_code != 403
    denied = httpx.delete(running.url + "/tools/items/1")
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "policy_denied"
    assert [r.method for r in upstream.requests] == ["GET"]


@pytest.mark.parametrize(
    ("route", "path"), [("openai", "/responses"), ("anthropic", "/v1/messages"), ("openai", "/chat/completions")]
)
def test_offered_tools_are_stripped_in_each_format(tmp_path: Path, route: str, path: str) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("rules:\n  - name: no-rm\n    deny: {tools: [rm]}\n")
    engine = load_policies([policy])
    call = build_call(CaseRequest(route=route, path=path, model="m", tools=("rm", "ls")))
    outcome = decide(engine, call)
    assert outcome.decision == "modify" and outcome.stripped == ["rm"]
    sent = json.loads(json.dumps(call.request_json))
    names = [t.get("name") or t.get("function", {}).get("name") for t in sent["tools"]]
    assert names == ["ls"] and call.request_changed


async def test_the_stage_sets_guardrail_actions_and_per_session_counters(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "rules:\n"
        "  - name: pii\n    pii: {EMAIL_ADDRESS: redact}\n    secrets: block\n"
        "  - name: per-session\n    limits: {requests_per_minute: 1, per: session}\n"
    )
    runtime = PolicyRuntime([str(policy)])
    runtime.load()
    stage = PolicyStage(runtime, Settings())
    first = build_call(CaseRequest(model="m", session="s1"))
    await stage.request(first)
    assert first.reply is None
    assert first.guardrails == GuardrailActions(
        {"EMAIL_ADDRESS": "redact", "SECRET": "block"}, {"SECRET": "block"}, "deny", ("pii",)
    )
    again = build_call(CaseRequest(model="m", session="s1"))
    await stage.request(again)
    assert again.reply is not None and again.reply.status == 429 and again.error_code == "rate_limited"
    other = build_call(CaseRequest(model="m", session="s2"))
    await stage.request(other)
    assert other.reply is None
    for call in (first, other):
        await stage.seal(call)
    assert stage._held == {}


def test_json_interlock_writes_survives_a_lone_surrogate() -> None:
    # JSON text may carry "\ud800" (no UTF-8 form): rewritten events and replies stay valid JSON
    from interlock.protocols import ADAPTERS
    from interlock.protocols.mcp import json_rpc_error, rewrite_event, sse_message
    from interlock.protocols.sse import parse_event

    value = {"text": "a\ud800b"}
    for protocol in ("openai", "anthropic"):
        event = ADAPTERS[protocol].stream_event(None, value)
        assert json.loads(parse_event(event).data) == value
    assert json.loads(parse_event(sse_message(value)).data) == value
    assert json.loads(json_rpc_error(1, "invalid_request", "bad \ud800"))["error"]["message"] == "bad \ud800"
    rewritten = rewrite_event(b"event: message\ndata: {}\n\n", value)
    assert json.loads(parse_event(rewritten).data) == value
