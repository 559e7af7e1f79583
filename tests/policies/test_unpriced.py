"""A money budget over a model without a price fails closed (issue 16): `limits.unpriced`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner

from interlock.cli import main
from interlock.scripted import ScriptedUpstream
from tests.policies.conftest import openai_client
from tests.proxy.routing_support import collect_calls, finished
from tests.sdk_errors import protocol_error

HI = [{"role": "user", "content": "hi"}]
PRICES = {"gpt-4o*": {"input": 2.5, "output": 10}}


def budget(unpriced: str | None = None) -> str:
    extra = f", unpriced: {unpriced}" if unpriced else ""
    return f"rules:\n  - name: daily\n    limits: {{budget_usd_per_day: 5{extra}}}\n"


def test_an_unpriced_model_is_refused_under_a_money_budget(with_policy: Any, upstream: ScriptedUpstream) -> None:
    running = with_policy(budget(), prices=PRICES)
    client = openai_client(running)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(model="mystery-model", messages=HI)  # type: ignore[arg-type]
    error = protocol_error(refused.value)
    assert error["code"] == "unpriced_model"
    assert "'mystery-model'" in error["message"] and "'daily'" in error["message"]
    assert "retry-after" not in refused.value.response.headers
    assert upstream.requests == []
    reply = client.chat.completions.create(model="gpt-4o", messages=HI)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "echo: hi"


@pytest.mark.parametrize(("unpriced", "action"), [("warn", "monitor"), ("zero", "allow")])
def test_warn_and_zero_count_an_unpriced_model_as_free_visibly(
    with_policy: Any, upstream: ScriptedUpstream, unpriced: str, action: str
) -> None:
    running = with_policy(budget(unpriced), prices=PRICES)
    calls = collect_calls(running)
    reply = openai_client(running).chat.completions.create(model="mystery-model", messages=HI)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "echo: hi"
    (call,) = finished(calls)
    [decision] = [d for d in call.decisions if d.stage == "limits"]
    assert (decision.action, decision.rule) == (action, "daily")
    assert "'mystery-model' has no price" in decision.reason


def test_policy_check_and_config_check_warn_about_unpriced_models(tmp_path: Path) -> None:
    """Models the catalogue prices (gpt-4o) need no `prices:`; an exact name nobody prices is
    warned about; a glob is not (it may name models the catalogue knows and others)."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text(
        textwrap.dedent(
            """\
            rules:
              - name: daily
                match: {model: [gpt-4o, claude-*, mystery-model]}
                limits: {budget_usd_per_day: 5}
            """
        )
    )
    config = tmp_path / "interlock.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            routes:
              openai: {{protocol: openai, upstream: "http://127.0.0.1:9/v1"}}
            policies: ["{policies}"]
            prices: {{local-*: {{input: 0, output: 0}}}}
            """
        )
    )
    runner = CliRunner()
    checked = runner.invoke(main, ["policy", "check", str(policies), "--config", str(config)])
    assert checked.exit_code == 0, checked.output
    assert f"{policies / 'p.yaml'}:3:" in checked.output and "'mystery-model'" in checked.output
    assert "refused (limits.unpriced: deny)" in checked.output
    assert "'gpt-4o'" not in checked.output and "'claude-*'" not in checked.output
    result = runner.invoke(main, ["config", "check", "--json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    [warning] = json.loads(result.output)["warnings"]
    assert "'mystery-model'" in warning
    config.write_text(config.read_text().replace("mystery-model", "local-llama"))
    (policies / "p.yaml").write_text((policies / "p.yaml").read_text().replace("mystery-model", "local-llama"))
    result = runner.invoke(main, ["config", "check", "--json", "--config", str(config)])
    assert json.loads(result.output)["warnings"] == []  # `prices:` prices it
