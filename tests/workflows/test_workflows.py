"""A multi-agent workflow recorded through interlock: one workflow in the API with a lane per agent,
its handoffs (span parentage and text flow), the risk scorer's timeout retried by interlock, the
e-mail address redacted; exported as one bundle and replayed offline for every agent."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from interlock.cli import main
from interlock.demo import demo_config, write_demo_policy
from interlock.demo_workflow import seed_workflow, workflow_scripts
from interlock.scripted import Script, ScriptedUpstream
from interlock.testing import Running, replay_server, run_interlock, settings_for_test
from tests.proxy.routing_support import wait_for

WORKFLOW = "onboarding-1"


@dataclass
class Recorded:
    running: Running
    upstream: ScriptedUpstream
    trace: str

    def api(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(self.running.admin_url + path, params=params, timeout=30)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    tmp = tmp_path_factory.mktemp("workflows")
    write_demo_policy(tmp / "policies")
    with ScriptedUpstream() as upstream:
        with run_interlock(settings_for_test(demo_config(upstream.url, tmp / "policies"), tmp)) as running:
            upstream.script(*workflow_scripts())
            trace = seed_workflow(running.url, WORKFLOW)
            store = running.runtime.store
            wait_for(lambda: len(store.workflow_calls(WORKFLOW)) == 7)
            yield Recorded(running, upstream, trace)


def test_the_workflow_is_listed_with_its_agents_and_totals(recorded: Recorded) -> None:
    response = recorded.api("/api/workflows")
    assert response.status_code == 200
    [row] = [w for w in response.json()["workflows"] if w["workflow"] == WORKFLOW]
    assert row["agents"] == ["extraction", "orchestrator", "report", "risk-scorer"]
    assert (row["calls"], row["errors"], row["denials"], row["extra_attempts"]) == (7, 0, 0, 1)
    assert row["findings"] >= 1
    # Filtered by an agent that took part, and by one that did not.
    assert [w["workflow"] for w in recorded.api("/api/workflows", agent="report").json()["workflows"]] == [WORKFLOW]
    assert recorded.api("/api/workflows", agent="nobody").json()["workflows"] == []


def test_one_lane_per_agent_with_handoffs_retry_and_redaction(recorded: Recorded) -> None:
    view = recorded.api(f"/api/workflows/{WORKFLOW}").json()
    lanes = {lane["agent"]: lane for lane in view["lanes"]}
    assert list(lanes) == ["orchestrator", "extraction", "risk-scorer", "report"]
    assert [lane["totals"]["calls"] for lane in view["lanes"]] == [4, 1, 1, 1]
    agent_of = {c["id"]: lane for lane in lanes for c in lanes[lane]["calls"]}
    spans = {(agent_of[h["from"]], agent_of[h["to"]]) for h in view["handoffs"] if h["kind"] == "span"}
    assert spans == {("orchestrator", "extraction"), ("orchestrator", "risk-scorer"), ("orchestrator", "report")}
    texts = {(agent_of[h["from"]], agent_of[h["to"]]) for h in view["handoffs"] if h["kind"] == "text"}
    # The extraction's answer went (through the orchestrator) into the risk scorer's and the report's input.
    assert {("extraction", "orchestrator"), ("extraction", "risk-scorer"), ("extraction", "report")} <= texts
    assert ("risk-scorer", "report") in texts
    # The risk scorer's model timed out once; interlock retried it and the call succeeded.
    [risk] = lanes["risk-scorer"]["calls"]
    assert (risk["attempt_count"], risk["outcome"]) == (2, "ok")
    assert [i["kind"] for i in view["incidents"]] == ["retried"]
    assert view["incidents"][0]["call"] == risk["id"]
    # The client's e-mail address never reached a model.
    assert lanes["extraction"]["totals"]["findings"] == 1
    assert all(b"jane.doe@example.com" not in r.body for r in recorded.upstream.requests)
    assert view["totals"]["tokens"] == sum(lane["totals"]["tokens"] for lane in view["lanes"]) > 0
    # Cost (priced from the bundled catalogue), the workflow's and each agent's.
    assert view["totals"]["cost_usd"] == pytest.approx(sum(lane["totals"]["cost_usd"] for lane in view["lanes"]))
    assert view["totals"]["cost_usd"] == pytest.approx(view["summary"]["cost_usd"]) and view["totals"]["cost_usd"] > 0
    assert view["totals"]["unpriced"] == 0
    assert recorded.api("/api/workflows/no-such-workflow").status_code == 404
    # The calls list filters by workflow too.
    listed = recorded.api("/api/calls", workflow=WORKFLOW, limit=100).json()["calls"]
    assert sorted(c["id"] for c in listed) == sorted(agent_of)
    store = recorded.running.settings.store.path
    result = CliRunner().invoke(main, ["traces", "ls", "--workflow", WORKFLOW, "--json", "--store", store])
    assert result.exit_code == 0, result.output
    assert sorted(json.loads(line)["id"] for line in result.output.splitlines()) == sorted(agent_of)


def test_three_agents_named_by_header_alone_hand_off_by_text(recorded: Recorded) -> None:
    # No traceparent: only the text each agent passes on links them.
    researched = "The Lisbon office lease ends on 30 June; the landlord offers a 3-year renewal at +4 % a year."
    checked = "Checked: the lease ends on 30 June and the renewal is +4 % a year, which is within the budget."
    recorded.upstream.script(Script(text=researched), Script(text=checked), Script(text="Renew the lease."))
    prompts = [("researcher", "What does the lease say?"), ("checker", researched), ("writer", checked)]
    for agent, prompt in prompts:
        response = httpx.post(
            recorded.running.url + "/openai/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]},
            headers={"X-Interlock-Agent": agent, "X-Interlock-Workflow": "lease-1"},
            timeout=30,
        )
        assert response.status_code == 200
    wait_for(lambda: len(recorded.running.runtime.store.workflow_calls("lease-1")) == 3)
    view = recorded.api("/api/workflows/lease-1").json()
    assert [lane["agent"] for lane in view["lanes"]] == ["researcher", "checker", "writer"]
    agent_of = {c["id"]: lane["agent"] for lane in view["lanes"] for c in lane["calls"]}
    assert [(agent_of[h["from"]], agent_of[h["to"]], h["kind"]) for h in view["handoffs"]] == [
        ("researcher", "checker", "text"),
        ("checker", "writer", "text"),
    ]


def test_the_whole_workflow_exports_as_one_bundle_and_replays_offline(recorded: Recorded, tmp_path: Path) -> None:
    bundle = tmp_path / "onboarding.db"
    store = recorded.running.settings.store.path
    result = CliRunner().invoke(main, ["export", "--workflow", WORKFLOW, "-o", str(bundle), "--store", store])
    assert result.exit_code == 0, result.output
    assert "exported 7 calls" in result.output
    with replay_server(str(bundle)) as replay:
        # The same four agents run again against the recording: nothing else is reachable.
        seed_workflow(replay.url, WORKFLOW)
        replay.assert_no_divergence(all_used=True)
    summary = replay.summary()
    assert (summary.served, summary.recorded) == (7, 7)
    assert os.path.getsize(bundle) > 0
