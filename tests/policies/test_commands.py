"""`interlock policy check | test | whatif | schema` through click's CliRunner."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from interlock.cli import main
from interlock.core.call import Call, Decision
from interlock.policies.model import PolicyFile
from interlock.testing import make_call
from interlock.tracing.store import Store

EXAMPLES = Path(__file__).parents[2] / "examples" / "policies"


def run(*args: str) -> Any:
    return CliRunner().invoke(main, ["policy", *args], catch_exceptions=False)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def test_check_reports_every_error_as_file_line_col(tmp_path: Path) -> None:
    bad = write(
        tmp_path / "bad.yaml",
        """
        version: 1
        rules:
          - name: typo
            match: {agnt: "support-*"}
            deny: {}
          - name: cel-syntax
            when: 'agent +'
            deny: {}
          - name: cel-type
            when: 'request.input_chars > "big"'
            deny: {}
          - name: no-effect
            match: {agent: x}
          - name: unknown-route
            match: {route: opnai}
            deny: {}
          - name: never
            match: {model: []}
            deny: {}
        """,
    )
    config = write(
        tmp_path / "interlock.yaml",
        """
        routes:
          openai: {protocol: openai, upstream: "http://127.0.0.1:9/v1"}
        """,
    )
    result = run("check", str(bad), "--config", str(config))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert f"{bad}:4:13: unknown field 'agnt'; did you mean 'agent'?" in lines
    assert any(line.startswith(f"{bad}:7:5: CEL syntax error at column 8") for line in lines)
    assert any(line.startswith(f"{bad}:10:5: type error in condition: No such overload") for line in lines)
    assert any(line.startswith(f"{bad}:12:5: rule has no effect") for line in lines)
    assert any(
        line.startswith(f"{bad}:15:13: unknown route 'opnai'") and "did you mean 'openai'" in line for line in lines
    )
    assert any(line.startswith(f"{bad}:18:13: match.model is an empty list") for line in lines)
    assert lines[-1] == "6 errors in 1 files"


def test_check_passes_the_examples_and_reports_malformed_yaml(tmp_path: Path) -> None:
    result = run("check", str(EXAMPLES / "rules"), "--config", str(EXAMPLES / "interlock.yaml"))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: ")
    broken = write(tmp_path / "broken.yaml", "rules:\n  - name: x\n    deny: {models: [a, b}\n")
    result = run("check", str(broken))
    assert result.exit_code == 1
    assert result.output.startswith(f"{broken}:3:") and "invalid YAML" in result.output


def test_check_json_output(tmp_path: Path) -> None:
    bad = write(tmp_path / "p.yaml", "rules:\n  - name: x\n")
    result = run("check", str(bad), "--json")
    records = [json.loads(line) for line in result.output.splitlines()]
    assert records[0] == {
        "type": "problem",
        "file": str(bad),
        "line": 2,
        "col": 5,
        "severity": "error",
        "message": "rule has no effect: give allow, deny, limits, set, pii, pii_response, secrets or loop",
    }
    assert records[-1] == {"type": "summary", "files": 1, "rules": 0, "errors": 1}


def test_the_example_cases_pass() -> None:
    result = run(
        "test", str(EXAMPLES / "rules"), "--cases", str(EXAMPLES / "cases.yaml"), "-c", str(EXAMPLES / "interlock.yaml")
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("PASS: ") and "FAIL" not in result.output


def test_failing_cases_are_reported_like_opa_test(tmp_path: Path) -> None:
    policy = write(
        tmp_path / "p.yaml",
        """
        rules:
          - name: no-gpt-4o
            deny: {models: [gpt-4o]}
          - name: strip
            deny: {tools: [rm]}
        """,
    )
    cases = write(
        tmp_path / "cases.yaml",
        """
        cases:
          - name: gpt-4o is denied
            request: {model: gpt-4o}
            expect: {decision: deny, rule: no-gpt-4o}
          - name: wrong expectation
            request: {model: gpt-4o-mini}
            expect: {decision: deny}
          - name: tools are stripped
            request: {model: m, tools: [rm, ls]}
            expect: {decision: modify, stripped: [rm]}
        """,
    )
    result = run("test", str(policy), "--cases", str(cases))
    assert result.exit_code == 1
    assert f"FAIL: {cases}:5: wrong expectation" in result.output
    assert "expected decision deny, got allow" in result.output
    assert result.output.rstrip().endswith("PASS: 2/3\nFAIL: 1/3")
    verbose = run("test", str(policy), "--cases", str(cases), "-v")
    assert f"PASS: {cases}:2: gpt-4o is denied" in verbose.output


def test_cases_express_loops_by_repeating_a_request(tmp_path: Path) -> None:
    policy = write(
        tmp_path / "p.yaml",
        """
        rules:
          - name: no-loops
            loop: {tool_calls: 3, requests: 4}
        """,
    )
    cases = write(
        tmp_path / "cases.yaml",
        """
        cases:
          - name: the third identical tool call is a loop
            request: {model: m, tools: [search]}
            response: {tool_calls: [search]}
            repeat: 3
            expect: {decision: deny, rule: no-loops, message: "tool call 'search'"}
          - name: two are not
            request: {model: m, tools: [search]}
            response: {tool_calls: [search]}
            repeat: 2
            expect: {decision: allow}
          - name: the fourth identical request is a loop
            request: {model: m}
            repeat: 4
            expect: {decision: deny, rule: no-loops}
        """,
    )
    result = run("test", str(policy), "--cases", str(cases))
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith("PASS: 3/3")


def test_a_malformed_cases_file_is_located(tmp_path: Path) -> None:
    policy = write(tmp_path / "p.yaml", "rules:\n  - name: x\n    deny: {}\n")
    cases = write(tmp_path / "cases.yaml", "cases:\n  - name: a\n    expect: {decison: deny}\n")
    result = run("test", str(policy), "--cases", str(cases))
    assert result.exit_code == 1
    assert result.output.startswith(f"{cases}:3:14:") and "unknown field" in result.output


def test_schema_is_a_valid_json_schema_that_describes_the_examples() -> None:
    import jsonschema
    import yaml

    schema = json.loads(run("schema").output)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted((EXAMPLES / "rules").glob("*.yaml")):
        validator.validate(yaml.safe_load(path.read_text()))
    errors = list(validator.iter_errors({"rules": [{"name": "x", "match": {"agnt": "y"}}]}))
    assert errors  # unknown fields are flagged in editors too
    assert set(schema["properties"]) == set(PolicyFile.model_fields)


def _call(model: str, agent: str = "support-bot", decision: str | None = None, tools: list[str] | None = None) -> Call:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if tools:
        body["tools"] = [{"type": "function", "function": {"name": t}} for t in tools]
    call = make_call(agent=agent, request_body=json.dumps(body).encode(), model=model, response_body=b'{"choices": []}')
    if decision:
        call.meta["policy"] = {"decision": decision, "rules": []}
        call.decisions.append(Decision("policy", decision))
    return call


def test_whatif_lists_the_calls_whose_decision_changes(tmp_path: Path) -> None:
    from interlock.policies.loader import load_policies
    from interlock.policies.whatif import whatif

    calls = [_call("gpt-4o"), _call("gpt-4o-mini"), _call("gpt-4o", agent="research"), _call("m", tools=["rm", "ls"])]
    policy = write(
        tmp_path / "p.yaml",
        """
        rules:
          - name: small-models
            match: {agent: "support-*"}
            allow: {models: [gpt-4o-mini, m]}
          - name: no-rm
            deny: {tools: [rm]}
        """,
    )
    report = whatif(load_policies([policy]), calls)
    assert report.evaluated == 4
    assert [(c.id, c.before, c.after, c.rule) for c in report.changes] == [
        (calls[0].id, "allow", "deny", "small-models"),
        (calls[3].id, "allow", "modify", "no-rm"),
    ]
    assert report.changed_by_rule == {"small-models": 1, "no-rm": 1}
    assert report.fired["small-models"] == 3


def test_whatif_command_reads_the_store(tmp_path: Path) -> None:
    store_path = tmp_path / "interlock.db"
    store = Store(store_path)
    try:
        recorder_calls = [_call("gpt-4o"), _call("gpt-4o-mini", decision="allow")]
        for call in recorder_calls:
            store.add(call)
    finally:
        store.close()
    policy = write(tmp_path / "p.yaml", "rules:\n  - name: no-gpt-4o\n    deny: {models: [gpt-4o]}\n")
    result = run("whatif", "--policy", str(policy), "--store", str(store_path), "--since", "1h")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("2 calls evaluated")
    assert "1 would change" in result.output and "allow → deny: 1" in result.output
    as_json = [
        json.loads(line)
        for line in run("whatif", "--policy", str(policy), "--store", str(store_path), "--json").output.splitlines()
    ]
    assert as_json[0]["type"] == "change" and as_json[0]["id"] == recorder_calls[0].id
    assert as_json[-1]["rules"] == {"no-gpt-4o": {"fired": 2, "changed": 1}}


def test_policy_commands_and_the_proxy_build_the_route_map_one_way(tmp_path: Path, monkeypatch: Any) -> None:
    from interlock.config import load_settings
    from interlock.policies import stage

    config = write(
        tmp_path / "interlock.yaml",
        """
        routes:
          openai: {protocol: openai, upstream: "http://127.0.0.1:9/v1"}
          tools: {protocol: mcp, upstream: "http://127.0.0.1:9/mcp"}
        policies: [rules.yaml]
        store: {path: ":memory:"}
        """,
    )
    rules = write(tmp_path / "rules.yaml", "version: 1\nrules:\n  - {name: r, match: {route: tools}, deny: {}}\n")
    settings = load_settings(str(config))
    assert stage.route_protocols(settings) == {"openai": "openai", "tools": "mcp"}
    built: list[dict[str, str]] = []
    real = stage.route_protocols
    monkeypatch.setattr(stage, "route_protocols", lambda s: built.append(real(s)) or built[-1])
    assert run("check", str(rules), "--config", str(config)).exit_code == 0
    runtime, _ = stage.policy_stages_for(settings)
    assert runtime is not None
    runtime.stop()
    assert built == [{"openai": "openai", "tools": "mcp"}] * 2  # `policy check` and the proxy alike


def _timed(agent: str, at: float, seconds: float, tokens: int = 0, model: str = "m") -> Call:
    call = _call(model, agent=agent)
    call.started_at, call.duration_ms = at, seconds * 1000
    call.input_tokens, call.output_tokens = tokens, 0
    return call


def test_whatif_replays_the_candidates_limits_on_the_recorded_clock(tmp_path: Path) -> None:
    from interlock.policies.loader import load_policies
    from interlock.policies.whatif import whatif

    t = 1_700_000_000.0
    calls = [
        _timed("a", t, 1),
        _timed("a", t + 10, 1),
        _timed("a", t + 20, 1),  # the third in a minute: refused
        _timed("b", t + 21, 1),  # another agent has its own counters
        _timed("a", t + 61, 1),  # the first has left the window: admitted again
    ]
    policy = write(tmp_path / "p.yaml", "rules:\n  - name: rpm\n    limits: {requests_per_minute: 2}\n")
    report = whatif(load_policies([policy]), calls)
    assert [(c.id, c.before, c.after, c.rule) for c in report.changes] == [(calls[2].id, "allow", "deny", "rpm")]
    assert report.changes[0].reason == "rate limited by policy rule 'rpm': over 2 requests per minute for agent a"
    assert report.changed_by_rule == {"rpm": 1}


def test_whatif_limits_count_tokens_of_ended_calls_and_overlap_by_duration(tmp_path: Path) -> None:
    from interlock.policies.loader import load_policies
    from interlock.policies.whatif import whatif

    t = 1_700_000_000.0
    policy = write(
        tmp_path / "p.yaml",
        """
        rules:
          - name: one-at-a-time
            limits: {concurrent: 1}
          - name: tokens
            limits: {tokens_per_minute: 1000}
          - name: watch-budget
            mode: monitor
            limits: {budget_usd_per_day: 0.000001}
        """,
    )
    calls = [
        _timed("a", t, 5, tokens=600),
        _timed("a", t + 1, 1),  # the first is still running: refused (and so never counted)
        _timed("a", t + 6, 1, tokens=600),  # the first ended: 600 tokens in the minute, below 1000
        _timed("a", t + 8, 1),  # 1,200 tokens within the minute now
        _timed("a", t + 70, 1),  # the first call's tokens left the window at t + 65; t + 7's stay
    ]
    report = whatif(load_policies([policy]), calls, prices={"m": {"input": 1.0}})
    refused = [(c.id, c.rule) for c in report.changes]
    assert refused == [(calls[1].id, "one-at-a-time"), (calls[3].id, "tokens")]
    assert "1000 tokens per minute for agent a" in report.changes[1].reason
    assert report.fired["watch-budget"] == 5  # monitor-mode limits never refuse


def test_whatif_command_passes_the_configs_prices_to_budgets(tmp_path: Path) -> None:
    store_path = tmp_path / "interlock.db"
    t = time.time() - 600
    store = Store(store_path)
    try:
        calls = [_timed("a", t, 1, tokens=1_000_000, model="gpt-4o"), _timed("a", t + 5, 1, model="gpt-4o")]
        for call in calls:
            store.add(call)
    finally:
        store.close()
    config = write(
        tmp_path / "interlock.yaml",
        f"""
        routes:
          openai: {{protocol: openai, upstream: "http://127.0.0.1:9/v1"}}
        store: {{path: "{store_path}"}}
        prices: {{gpt-4o: {{input: 2.5, output: 10}}}}
        """,
    )
    policy = write(tmp_path / "p.yaml", "rules:\n  - name: budget\n    limits: {budget_usd_per_day: 2}\n")
    result = run("whatif", "--policy", str(policy), "--config", str(config), "--since", "1h", "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    changes = [line for line in lines if line["type"] == "change"]
    assert [(c["id"], c["rule"]) for c in changes] == [(calls[1].id, "budget")]
    assert "budget exceeded under policy rule 'budget': over a budget of $2 per day for agent a" in changes[0]["reason"]


def test_a_match_field_that_is_not_a_glob_says_what_it_wants(tmp_path: Path) -> None:
    policy = write(tmp_path / "p.yaml", "rules:\n  - name: r\n    match: {agent: 5}\n    deny: {}\n")
    result = run("check", str(policy))
    assert result.exit_code == 1
    assert f"{policy}:3:" in result.output and "a glob or a list of globs" in result.output
