"""examples/langgraph/workflow.py: the seed's multi-agent workflow as a LangGraph supervisor, through
interlock (the risk scorer's model times out once and interlock retries it; the client's e-mail
address is redacted), seen as one workflow with a lane per agent and its handoffs, then exported as
one bundle and run again offline against it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from interlock.cli import main
from interlock.demo_workflow import BRIEF, risk_route, workflow_scripts
from interlock.scripted import ScriptedUpstream
from interlock.testing import replay_server
from interlock.tracing.backend import open_store
from interlock.tracing.workflow import workflow_view
from tests.conftest import routes_for
from tests.frameworks.conftest import Example
from tests.proxy.routing_support import wait_for

FRAMEWORK = "langgraph"
pytestmark = [pytest.mark.frameworks, pytest.mark.slow]
WORKFLOW = "onboarding-langgraph"


def test_a_supervisor_and_three_agents_are_one_workflow(
    example: Example, make_interlock: Any, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    running = make_interlock(
        routes={**routes_for(upstream), "risk": risk_route(upstream.url)},
        guardrails={"request": {"EMAIL_ADDRESS": "redact"}},
    )
    upstream.script(*workflow_scripts())
    env = {"OPENAI_API_KEY": "sk-placeholder", "INTERLOCK_WORKFLOW": WORKFLOW}
    got = example.run(
        BRIEF,
        script="workflow.py",
        OPENAI_BASE_URL=running.url + "/openai",
        RISK_BASE_URL=running.url + "/risk",
        **env,
    )
    assert got["handoffs"] == ["extract_client_facts", "score_risk", "write_report"]
    assert got["report"].startswith("Onboarding report for Acme Shipping Holdings Ltd")
    assert all(b"jane.doe@example.com" not in r.body for r in upstream.requests)

    store = running.runtime.store
    wait_for(lambda: len(store.workflow_calls(WORKFLOW)) == 7)
    view = workflow_view(store, WORKFLOW)
    assert view is not None
    assert [lane["agent"] for lane in view["lanes"]] == ["orchestrator", "extraction", "risk-scorer", "report"]
    agent_of = {c["id"]: lane["agent"] for lane in view["lanes"] for c in lane["calls"]}
    pairs = {(agent_of[h["from"]], agent_of[h["to"]], h["kind"]) for h in view["handoffs"]}
    assert {
        (o, a, "span")
        for o, a in [("orchestrator", "extraction"), ("orchestrator", "risk-scorer"), ("orchestrator", "report")]
    } <= pairs
    assert {("extraction", "risk-scorer", "text"), ("risk-scorer", "report", "text")} <= pairs
    [risk] = view["lanes"][2]["calls"]
    assert (risk["attempt_count"], risk["outcome"]) == (2, "ok")  # timed out once, retried by interlock
    assert view["lanes"][1]["totals"]["findings"] == 1

    bundle = tmp_path / "onboarding.db"
    result = CliRunner().invoke(
        main, ["export", "--workflow", WORKFLOW, "-o", str(bundle), "--store", running.settings.store.path]
    )
    assert result.exit_code == 0, result.output
    with open_store(bundle, readonly=True) as exported:
        assert {c.agent for c in exported.iter_calls()} == {"orchestrator", "extraction", "risk-scorer", "report"}
    # Offline: the same graph again, every agent answered from the one bundle.
    with replay_server(str(bundle), set_env=False) as replay:
        again = example.run(
            BRIEF,
            script="workflow.py",
            OPENAI_BASE_URL=replay.base_url("openai"),
            RISK_BASE_URL=replay.base_url("risk"),
            **env,
        )
        replay.assert_no_divergence(all_used=True)
    assert again == got
