"""`interlock demo --exit-after-seed` records the sessions the demo promises."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from interlock.cli import main
from interlock.tracing.store import Store


def test_demo_seeds_retry_denial_redaction_and_tool_loop(tmp_path: Path) -> None:
    store_path = tmp_path / "demo.db"
    result = CliRunner().invoke(
        main, ["demo", "--exit-after-seed", "--port", "0", "--admin-port", "0", "--store", str(store_path)]
    )
    assert result.exit_code == 0, result.output
    assert "open the UI: http://127.0.0.1:" in result.output
    sessions = {}
    for line in result.output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("retry", "denial", "redaction", "tools"):
            sessions[parts[0]] = parts[1]
    assert set(sessions) == {"retry", "denial", "redaction", "tools"}
    with Store(store_path, readonly=True) as store:
        retry = store.list_calls(session=sessions["retry"])
        assert [c["attempt_count"] for c in retry] == [2]
        assert retry[0]["outcome"] == "ok"
        denial = store.list_calls(session=sessions["denial"])
        assert sorted(c["outcome"] for c in denial) == ["denied", "ok"]
        denied = store.get_call(next(c["id"] for c in denial if c["outcome"] == "denied"))
        assert denied is not None and denied.decisions[0].rule == "no-preview-models"
        redaction = store.get_call(store.list_calls(session=sessions["redaction"])[0]["id"])
        assert redaction is not None
        assert [(f.entity, f.action) for f in redaction.findings] == [("EMAIL_ADDRESS", "redact")]
        assert b"jane.doe@example.com" not in redaction.request_body
        tools = store.list_calls(session=sessions["tools"])[::-1]
        assert [c["route"] for c in tools] == ["openai", "tools", "openai"]
        assert all(c["outcome"] == "ok" for c in tools)
        assert tools[0]["stream"] and tools[2]["stream"]
        # The multi-agent workflow: four agents, the risk scorer's timeout retried by interlock.
        assert "workflow onboarding: http://127.0.0.1:" in result.output
        [workflow] = store.workflows()
        assert workflow["agents"] == ["extraction", "orchestrator", "report", "risk-scorer"]
        [risk] = [r for r in store.workflow_calls(workflow["workflow"]) if r["agent"] == "risk-scorer"]
        assert (risk["attempt_count"], risk["outcome"], risk["route"]) == (2, "ok", "risk")
