"""`interlock demo --exit-after-seed` records the sessions the demo promises."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from interlock import demo
from interlock.cli import main
from interlock.demo import Seeded
from interlock.tracing.store import Store
from tests.servers import free_port


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


def test_ready_waits_for_the_demos_sessions(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # `/ready` is 503 ("warming": the demo seeding) while the demo records its sessions, 200 once
    # they are recorded: whoever waits for ready finds them. (The seeding is stood in for here; the
    # test above runs the real one.)
    admin = free_port()
    seen: dict[str, Any] = {}

    def seeding(proxy_url: str, upstream: Any) -> Seeded:
        answer = httpx.get(f"http://127.0.0.1:{admin}/ready", timeout=30)
        seen["during"] = answer.status_code, answer.json()
        return Seeded()

    def echo(line: str) -> None:
        if line.startswith("open the UI") and "after" not in seen:
            seen["after"] = httpx.get(f"http://127.0.0.1:{admin}/ready", timeout=30).status_code

    monkeypatch.setattr(demo, "seed", seeding)
    demo.run_demo(port=free_port(), admin_port=admin, store=str(tmp_path / "demo.db"), exit_after_seed=True, echo=echo)
    status, body = seen["during"]
    assert status == 503 and body["warming"] == ["demo seeding"]
    assert seen["after"] == 200
