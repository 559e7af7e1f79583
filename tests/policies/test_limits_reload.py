"""Limits that need time or restarts (concurrency, money budgets kept in the store) and hot reload."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from interlock.policies.loader import PolicyError
from interlock.policies.stage import policy_stages_for
from interlock.scripted import Script, ScriptedUpstream
from interlock.testing import run_interlock, settings_for_test, wait_for
from tests.conftest import routes_for
from tests.policies.conftest import openai_client
from tests.sdk_errors import protocol_error

HI: Any = [{"role": "user", "content": "hi"}]


def test_concurrent_limit(with_policy: Any, upstream: ScriptedUpstream) -> None:
    running = with_policy(
        """
        rules:
          - name: one-at-a-time
            limits: {concurrent: 1}
        """
    )
    upstream.script(Script(delay=1.5))  # the first call is held by the provider
    client = openai_client(running)
    results: list[Any] = []
    first = threading.Thread(target=lambda: results.append(client.chat.completions.create(model="m", messages=HI)))
    first.start()
    wait_for(lambda: upstream.requests, what="the first call to reach the provider")
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="m", messages=HI)
    error = protocol_error(caught.value)
    assert error["code"] == "rate_limited" and "concurrent" in error["message"]
    assert caught.value.response.headers["retry-after"] == "1"
    first.join(10)
    assert results and results[0].choices[0].message.content == "echo: hi"
    # The slot is released when the call ends.
    client.chat.completions.create(model="m", messages=HI)
    assert len(upstream.requests) == 2


def _budget_settings(upstream: ScriptedUpstream, tmp_path: Path, folder: Path) -> Any:
    return settings_for_test(
        {
            "routes": routes_for(upstream),
            "shutdown_grace": 2,
            "policies": [str(folder)],
            # $1 per input and per output token: a call of 11 + 7 tokens costs $18.
            "prices": {"gpt-4o*": {"input": 1_000_000, "output": 1_000_000}},
        },
        tmp_path,
    )


def test_a_money_budget_is_enforced_and_survives_a_restart(
    write_policy: Any, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    folder = write_policy(
        """
        rules:
          - name: daily-budget
            match: {agent: "support-*"}
            limits: {budget_usd_per_day: 30}
        """
    )
    settings = _budget_settings(upstream, tmp_path, folder)
    with run_interlock(settings) as running:
        client = openai_client(running)
        client.chat.completions.create(model="gpt-4o", messages=HI)  # $18
        client.chat.completions.create(model="gpt-4o", messages=HI)  # $36: over from now on
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="gpt-4o", messages=HI)
        error = protocol_error(caught.value)
        assert error["code"] == "budget_exceeded" and "daily-budget" in error["message"]
        assert 0 < int(caught.value.response.headers["retry-after"]) <= 86400
        assert caught.value.response.headers.get("x-should-retry") == "false"
        client.close()

    def spent() -> float:
        with sqlite3.connect(settings.store.path) as db:
            row = db.execute("SELECT usd FROM policy_counters WHERE rule = 'daily-budget'").fetchone()
        return float(row[0]) if row else 0.0

    wait_for(lambda: spent() >= 36, what="the budget to be saved")
    assert len(upstream.requests) == 2
    with run_interlock(_budget_settings(upstream, tmp_path, folder)) as running:
        with pytest.raises(openai.RateLimitError) as caught:
            openai_client(running).chat.completions.create(model="gpt-4o", messages=HI)
        assert protocol_error(caught.value)["code"] == "budget_exceeded"
        # Another agent has its own budget.
        openai_client(running, agent="support-2").chat.completions.create(model="gpt-4o", messages=HI)
    assert len(upstream.requests) == 3


def test_hot_reload_keeps_the_old_policy_when_the_new_one_is_invalid(
    with_policy: Any, write_policy: Any, upstream: ScriptedUpstream
) -> None:
    running = with_policy(
        """
        rules:
          - name: no-gpt-4o
            deny: {models: [gpt-4o]}
        """
    )
    policy = running.runtime.policy
    policy.interval = 0.05
    client = openai_client(running)
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="gpt-4o", messages=HI)
    client.chat.completions.create(model="gpt-4o-mini", messages=HI)

    write_policy(
        """
        rules:
          - name: no-mini
            deny: {models: [gpt-4o-mini]}
        """
    )
    wait_for(lambda: policy.reloads == 1, what="the reload")
    client.chat.completions.create(model="gpt-4o", messages=HI)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert "no-mini" in protocol_error(caught.value)["message"]

    write_policy(
        """
        rules:
          - name: broken
            match: {agnt: x}
            deny: {}
        """
    )
    errors = wait_for(lambda: policy.errors, what="the reload error")
    assert "policy.yaml:4:13:" in errors[0] and "unknown field 'agnt'" in errors[0]
    with pytest.raises(openai.PermissionDeniedError) as caught:  # the previous policy still runs
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert "no-mini" in protocol_error(caught.value)["message"]
    api = httpx.get(running.admin_url + "/api/policies").json()
    assert api["errors"] == errors
    assert [r["name"] for r in api["rules"]] == ["no-mini"]
    assert api["rules"][0]["fired"] >= 2 and api["reloads"] == 1 and api["loaded_at"] > 0


def test_a_policy_with_errors_stops_startup(write_policy: Any, upstream: ScriptedUpstream, tmp_path: Path) -> None:
    # What Runtime.policy_stages() calls: a PolicyError (a SourceError) stops startup.
    folder = write_policy("rules:\n  - name: x\n    when: 'agent +'\n    deny: {}\n")
    settings = settings_for_test({"routes": routes_for(upstream), "policies": [str(folder)]}, tmp_path)
    with pytest.raises(PolicyError, match=r"policy.yaml:3:5: CEL syntax error at column 8"):
        policy_stages_for(settings)


def test_decisions_are_recorded_with_the_call(with_policy: Any, upstream: ScriptedUpstream) -> None:
    running = with_policy(
        """
        rules:
          - name: clamp
            set: {max_tokens: 100}
          - name: no-gpt-4o
            deny: {models: [gpt-4o]}
        """
    )
    client = openai_client(running)
    client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=5000)
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="gpt-4o", messages=HI)
    store = running.runtime.store

    def recorded() -> list[Any]:
        return list(store.iter_calls()) if store is not None else []

    calls = wait_for(lambda: len(recorded()) == 2 and recorded(), what="both calls recorded")
    allowed, denied = calls
    assert allowed.meta["policy"]["decision"] == "modify"
    assert [(d.action, d.rule) for d in allowed.decisions if d.stage == "policy"] == [
        ("modify", "clamp"),
        ("allow", "no-gpt-4o"),
    ]
    assert denied.meta["policy"] == {
        "decision": "deny",
        "rules": ["clamp", "no-gpt-4o"],
        "rule": "no-gpt-4o",
        "reason": "model 'gpt-4o' is denied",
    }
    assert denied.outcome == "denied" and denied.error_code == "policy_denied"
