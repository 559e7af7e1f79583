"""The audit trail, end to end: calls recorded through interlock with the real openai SDK (guardrails
finding an e-mail address, function tools called, one denied by a policy), then asked "which agents
saw EMAIL_ADDRESS and through which tools" through `interlock audit` and `GET /api/audit`."""

from __future__ import annotations

import csv
import io
import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from click.testing import CliRunner

from interlock.cli import main
from interlock.scripted import Script, ScriptedUpstream, ToolUse
from interlock.testing import Running, run_interlock, settings_for_test
from tests.conftest import routes_for
from tests.proxy.routing_support import openai_client

EMAIL = "jane.roe@acme-corp.io"
TOKEN = "audit-admin-token"
LOOKUP = {"type": "function", "function": {"name": "lookup_customer", "parameters": {"type": "object"}}}
POLICY = """
version: 1
rules:
  - name: no-destructive-tools
    deny: {tools: ["delete_*"]}
"""


def _client(running: Running, agent: str) -> openai.OpenAI:
    return openai_client(running, default_headers={"X-Interlock-Agent": agent, "X-Interlock-Session": f"{agent}-1"})


def _ask(client: openai.OpenAI, text: str, *, stream: bool = False) -> None:
    messages: Any = [{"role": "user", "content": text}]
    if stream:
        for _ in client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=[LOOKUP], stream=True):
            pass
    else:
        client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=[LOOKUP])


@pytest.fixture(scope="module")
def recorded(upstream_server: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One interlock for the module: six calls by three agents, recorded."""
    tmp_path = tmp_path_factory.mktemp("audit")
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "tools.yaml").write_text(textwrap.dedent(POLICY))
    data = {
        "routes": routes_for(upstream_server),
        "shutdown_grace": 2,
        "guardrails": {"request": {"EMAIL_ADDRESS": "redact"}},
        "policies": [str(tmp_path / "policies")],
        "admin": {"host": "127.0.0.1", "port": 0, "token": TOKEN},
    }
    upstream_server.reset()
    lookup = Script(tool_calls=[ToolUse("lookup_customer", {"id": "c-1"})])
    upstream_server.script(
        Script(text="extracted"),  # extraction
        lookup,  # risk-scorer
        lookup,  # risk-scorer, streamed
        Script(tool_calls=[ToolUse("delete_customer", {"id": "c-1"})]),  # risk-scorer: denied by the policy
        lookup,  # report
        Script(text="the report"),  # report
    )
    with run_interlock(settings_for_test(data, tmp_path)) as running:
        _ask(_client(running, "extraction"), f"extract the client from: contact {EMAIL}")
        scorer = _client(running, "risk-scorer")
        _ask(scorer, f"score the client {EMAIL}")
        _ask(scorer, f"score the client {EMAIL} again", stream=True)
        with pytest.raises(openai.PermissionDeniedError):
            _ask(scorer, f"close the account of {EMAIL}")
        report = _client(running, "report")
        _ask(report, "write the report for client c-1")
        _ask(report, "and a summary")
        for client in (scorer, report):
            client.close()
        _wait_recorded(running, 6)
        yield running
    upstream_server.reset()


def _wait_recorded(running: Running, calls: int) -> None:
    recorder, store = running.runtime.recorder, running.runtime.store
    deadline = time.monotonic() + 60
    while store.count_calls() < calls:
        assert recorder.flush()
        assert time.monotonic() < deadline, "calls were not recorded in time"
        time.sleep(0.01)


def _cli(running: Running, *args: str) -> Any:
    result = CliRunner().invoke(main, ["audit", "--store", running.settings.store.path, *args])
    assert result.exit_code == 0, result.output
    return result


def _agents(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["agent"]: a for a in answer["agents"]}


def test_the_cli_says_which_agents_saw_an_email_address_and_through_which_tools(recorded: Running) -> None:
    answer = json.loads(_cli(recorded, "--entity", "EMAIL_ADDRESS", "--json").output)
    agents = _agents(answer)
    assert answer["total"] == 4 and set(agents) == {"risk-scorer", "extraction"}
    scorer = agents["risk-scorer"]
    assert scorer["calls"] == 3
    assert scorer["entities"] == {"EMAIL_ADDRESS": {"calls": 3, "actions": {"redact": 3}}}
    assert scorer["tools"] == {"lookup_customer": 2}
    assert scorer["denied"] == {"delete_customer": 1}
    assert scorer["line"] == (
        "agent risk-scorer: 3 calls, EMAIL_ADDRESS in 3 (redacted), tools: lookup_customer 2, denied: delete_customer 1"
    )
    assert agents["extraction"]["calls"] == 1 and agents["extraction"]["tools"] == {}
    assert answer["chain"]["ok"] and answer["chain"]["checked"] == 6
    assert [r["agent"] for r in answer["rows"]].count("risk-scorer") == 3
    assert EMAIL not in json.dumps(answer)  # entity types, never values
    human = _cli(recorded, "--entity", "EMAIL_ADDRESS").output
    assert "chain verifies" in human and scorer["line"] in human


def test_filters_by_tool_agent_and_decision(recorded: Running) -> None:
    by_tool = json.loads(_cli(recorded, "--tool", "lookup_customer", "--json", "--no-verify").output)
    assert {a: s["calls"] for a, s in _agents(by_tool).items()} == {"risk-scorer": 2, "report": 1}
    assert by_tool["chain"] is None
    denied = json.loads(_cli(recorded, "--decision", "deny", "--json").output)
    assert [(r["agent"], r["denied"], r["outcome"]) for r in denied["rows"]] == [
        ("risk-scorer", ["delete_customer"], "blocked")
    ]
    report = json.loads(_cli(recorded, "--agent", "report", "--rows", "1", "--json").output)
    assert report["total"] == 2 and len(report["rows"]) == 1 and report["rows_truncated"]
    assert json.loads(_cli(recorded, "--since", "1h", "--json").output)["total"] == 6
    assert json.loads(_cli(recorded, "--until", "1h", "--json").output)["total"] == 0


def test_exports_every_matching_row_as_json_lines_and_csv(recorded: Running, tmp_path: Path) -> None:
    lines = _cli(recorded, "--entity", "EMAIL_ADDRESS", "--export", "jsonl").output.splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 4 and {r["agent"] for r in rows} == {"risk-scorer", "extraction"}
    assert all(r["entities"] == [{"entity": "EMAIL_ADDRESS", "action": "redact", "count": 1}] for r in rows)
    out = tmp_path / "audit.csv"
    _cli(recorded, "--export", "csv", "-o", str(out))
    table = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(table) == 6
    assert sorted(r["tools"] for r in table if r["tools"]) == ["function:lookup_customer"] * 3
    assert [r["denied"] for r in table if r["denied"]] == ["delete_customer"]
    assert EMAIL not in out.read_text()


def _api(running: Running, **params: str) -> httpx.Response:
    return httpx.get(
        running.admin_url + "/api/audit", params=params, headers={"authorization": f"Bearer {TOKEN}"}, timeout=30
    )


def test_the_api_gives_the_same_answer_with_the_chain_status(recorded: Running) -> None:
    response = _api(recorded, entity="EMAIL_ADDRESS")
    assert response.status_code == 200
    answer = response.json()
    cli = json.loads(_cli(recorded, "--entity", "EMAIL_ADDRESS", "--json").output)
    assert answer["agents"] == cli["agents"] and answer["total"] == 4
    assert answer["chain"]["ok"] and answer["chain"]["heads"][0]["pos"] == 6
    jsonl = _api(recorded, entity="EMAIL_ADDRESS", format="jsonl")
    assert jsonl.status_code == 200 and jsonl.headers["content-type"].startswith("application/x-ndjson")
    assert len(jsonl.text.splitlines()) == 4
    csv_export = _api(recorded, tool="lookup_customer", format="csv")
    assert csv_export.status_code == 200 and len(list(csv.DictReader(io.StringIO(csv_export.text)))) == 3


def test_the_api_needs_the_admin_token_and_rejects_bad_parameters(recorded: Running) -> None:
    assert httpx.get(recorded.admin_url + "/api/audit").status_code == 401
    for params in ({"since": "yesterday"}, {"rows": "-1"}, {"format": "xml"}):
        response = _api(recorded, **params)
        assert response.status_code == 400 and response.json()["error"]["code"] == "bad_parameter"
