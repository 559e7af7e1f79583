"""The engine's semantics, rule by rule, without a server: how rules combine, match and fail."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import anthropic
import pytest

from interlock.core.call import Call
from interlock.policies.cases import CaseRequest, build_call, decide
from interlock.policies.engine import Engine
from interlock.policies.loader import load_policies
from interlock.policies.subject import Subject
from interlock.scripted import Script, ScriptedUpstream, ToolUse
from tests.sdk_errors import protocol_error


def engine_for(tmp_path: Path, text: str) -> Engine:
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(text))
    return load_policies([path])


def decision(engine: Engine, **request: Any) -> tuple[str, str | None, list[str]]:
    outcome = decide(engine, build_call(CaseRequest(**request)))
    return outcome.decision, outcome.rule, outcome.fired


def test_nothing_matches_means_allow(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, "rules:\n  - name: only-x\n    match: {agent: x}\n    deny: {}\n")
    assert decision(engine, agent="y", model="m") == ("allow", None, [])


def test_deny_wins_over_an_earlier_allow_and_stops_evaluation(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        """
        rules:
          - name: allow-gpt
            allow: {models: ["gpt-*"]}
          - name: deny-gpt-4o
            deny: {models: [gpt-4o]}
          - name: later
            set: {max_tokens: 10}
        """,
    )
    assert decision(engine, model="gpt-4o") == ("deny", "deny-gpt-4o", ["allow-gpt", "deny-gpt-4o"])
    assert decision(engine, model="gpt-4o-mini", params={"max_tokens": 5})[0] == "allow"


def test_allow_lists_intersect(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        """
        rules:
          - name: a
            allow: {models: [m1, m2]}
          - name: b
            allow: {models: [m2, m3]}
        """,
    )
    assert decision(engine, model="m2")[0] == "allow"
    assert decision(engine, model="m1")[:2] == ("deny", "b")
    assert decision(engine, model="m3")[:2] == ("deny", "a")
    assert decision(engine, model=None, method="GET", path="/models")[0] == "allow"  # no model: not constrained


def test_match_fields_are_anded_and_lists_ored(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        """
        rules:
          - name: r
            match: {agent: ["a-*", b], model: "gpt-*", session: "s?"}
            deny: {}
        """,
    )
    assert decision(engine, agent="a-1", model="gpt-4o", session="s1")[0] == "deny"
    assert decision(engine, agent="b", model="gpt-4o", session="s2")[0] == "deny"
    assert decision(engine, agent="c", model="gpt-4o", session="s1")[0] == "allow"
    assert decision(engine, agent="b", model="o3", session="s1")[0] == "allow"
    assert decision(engine, agent="b", model="gpt-4o", session=None)[0] == "allow"


def test_monitor_rules_never_change_the_call(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        """
        rules:
          - name: watch
            deny: {models: [gpt-4o], tools: [rm]}
            set: {max_tokens: 1}
            mode: monitor
        """,
    )
    call = build_call(CaseRequest(model="gpt-4o", tools=("rm",), params={"max_tokens": 100}))
    outcome = decide(engine, call)
    assert outcome.decision == "allow" and outcome.fired == ["watch"]
    assert call.request_json["max_tokens"] == 100 and len(call.request_json["tools"]) == 1
    evaluation = engine.evaluate(Subject.from_call(call))
    assert [(d.action, d.reason) for d in evaluation.decisions] == [("monitor", "would deny: model 'gpt-4o' is denied")]


def test_a_condition_error_is_recorded_and_on_error_decides(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        """
        rules:
          - name: fail-closed
            match: {agent: closed}
            when: 'request.params.seed > 1'
            deny: {}
          - name: fail-open
            match: {agent: open}
            when: 'request.params.seed > 1'
            deny: {}
            on_error: allow
        """,
    )
    closed = engine.evaluate(Subject.from_call(build_call(CaseRequest(agent="closed", model="m"))))
    assert closed.denied_by is not None and closed.denied_by.name == "fail-closed"
    assert closed.decisions[0].action == "error" and "condition failed" in closed.decisions[0].reason
    opened = engine.evaluate(Subject.from_call(build_call(CaseRequest(agent="open", model="m"))))
    assert opened.denied_by is None and [d.action for d in opened.decisions] == ["error"]
    seeded = engine.evaluate(Subject.from_call(build_call(CaseRequest(agent="open", model="m", params={"seed": 5}))))
    assert seeded.denied_by is not None


def test_the_tightest_clamp_wins_and_guardrails_merge(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        """
        rules:
          - name: loose
            set: {max_tokens: 4096}
            pii: {EMAIL_ADDRESS: log}
          - name: tight
            set: {max_tokens: 1000}
            pii: {EMAIL_ADDRESS: redact, "*": log}
            secrets: block
        """,
    )
    call = build_call(CaseRequest(model="m", params={"max_tokens": 9999}))
    evaluation = engine.evaluate(Subject.from_call(call))
    assert evaluation.params["max_tokens"] == (1000, "tight")
    actions = evaluation.guardrails
    assert actions is not None
    assert actions.action_for("EMAIL_ADDRESS", "request") == "redact"
    assert actions.action_for("SECRET", "response") == "block"
    assert actions.action_for("PERSON", "request") == "log"
    assert actions.rules == ("loose", "tight")


def test_mcp_tool_calls_and_http_methods(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        """
        rules:
          - name: no-shell
            match: {route: tools, tool: "shell*"}
            deny: {}
          - name: read-only
            match: {route: github}
            allow: {methods: [GET]}
        """,
    )
    mcp = {"route": "tools", "protocol": "mcp", "tool": {"name": "shell_exec", "arguments": {"cmd": "ls"}}}
    assert decision(engine, **mcp)[:2] == ("deny", "no-shell")
    assert decision(engine, **{**mcp, "tool": {"name": "search"}})[0] == "allow"
    assert decision(engine, route="github", protocol="http", method="GET", path="/x")[0] == "allow"
    assert decision(engine, route="github", protocol="http", method="delete", path="/x")[:2] == ("deny", "read-only")


def test_the_route_and_agent_index_gives_the_same_answers_as_a_scan(tmp_path: Path) -> None:
    lines = ["rules:"]
    for i in range(200):
        lines += [
            f"  - name: r{i}",
            f"    match: {{agent: agent-{i % 20}, route: {['openai', 'anthropic', 'o*'][i % 3]}}}",
        ]
        lines += [f"    deny: {{models: [m{i}]}}"]
    engine = engine_for(tmp_path, "\n".join(lines) + "\n")
    for agent in ("agent-3", "agent-7", "nobody"):
        for route in ("openai", "anthropic"):
            found = engine.candidates(route, agent)
            expected = [r for r in engine.rules if r.route(route) and r.agent(agent)]  # type: ignore[misc]
            assert list(found) == expected
    assert decision(engine, agent="agent-3", model="m3")[:2] == ("deny", "r3")
    assert decision(engine, agent="agent-4", model="m3")[0] == "allow"


def test_anthropic_stream_is_cut_at_the_tool_use_block(with_policy: Any, upstream: ScriptedUpstream) -> None:
    running = with_policy("rules:\n  - name: no-rm\n    deny: {tools: [rm]}\n")
    upstream.script(Script(tool_calls=[ToolUse("rm", {"path": "Q" * 40})]))
    client = anthropic.Anthropic(base_url=running.url + "/anthropic", api_key="sk-agent", max_retries=0)
    received: list[str] = []
    with pytest.raises(anthropic.APIError) as caught:
        with client.messages.stream(
            model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "go"}]
        ) as stream:
            for event in stream:
                received.append(event.model_dump_json())
    client.close()
    assert "no-rm" in protocol_error(caught.value)["message"]
    assert "QQ" not in "".join(received) and received  # message_start got through, the tool block did not


async def test_the_limiter_forgets_ended_sessions_and_past_days(tmp_path: Path) -> None:
    from interlock.policies.counters import EmbeddedCounters
    from interlock.policies.limits import Limiter

    engine = engine_for(
        tmp_path,
        """
        version: 1
        rules:
          - name: per-session
            limits: {requests_per_minute: 3, tokens_per_minute: 100, tokens_per_day: 1000, per: session}
        """,
    )
    rule = engine.by_name["per-session"]
    counters = EmbeddedCounters()
    limiter = Limiter(counters)

    async def run(call: Call, t: float) -> None:
        admission = await limiter.admit([rule], call, t)
        assert admission.refused is None
        await limiter.finish([rule], admission.keys, call, t)

    calls = [build_call(CaseRequest(session=f"s{i}")) for i in range(3)]
    for call in calls:
        call.input_tokens = 60
        await run(call, 1000.0)
    calls[0].input_tokens = 0
    for t in (1001.0, 1001.5):
        await run(calls[0], t)
    # Within the minute the limits hold, per session.
    exceeded = (await limiter.admit([rule], calls[0], 1002.0)).refused
    assert exceeded is not None and "3 requests per minute for session s0" in exceeded.message
    await run(calls[1], 1002.0)  # 120 tokens this minute
    tokens = (await limiter.admit([rule], calls[1], 1003.0)).refused
    assert tokens is not None and "100 tokens per minute for session s1" in tokens.message
    assert len(counters.minute) == 6  # requests and tokens, per session
    counters.sweep(1000.0 + 2 * 86400)  # two days later: every window is empty, yesterday is saved
    assert counters.minute == {}
    assert counters.daily == {}


def test_policy_test_tells_a_refused_tool_call_as_the_proxy_does(tmp_path: Path) -> None:
    from interlock.policies.engine import tool_denial_message

    engine = engine_for(
        tmp_path,
        """
        version: 1
        rules:
          - name: no-shell
            deny: {tools: [run_shell]}
            message: shell access is not for this agent
        """,
    )
    outcome = decide(engine, build_call(CaseRequest()), response_tools=("run_shell",))
    assert (outcome.decision, outcome.rule) == ("deny", "no-shell")
    rule = engine.by_name["no-shell"]
    assert outcome.message == tool_denial_message(rule, rule.tool_refusal("run_shell") or "")
    assert outcome.message.startswith("denied by policy rule 'no-shell': shell access is not for this agent (")
