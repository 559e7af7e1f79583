"""Run caps (issue 22): `limits` with `per: session` and `max_calls`, `max_tokens`, `max_usd` cap a
session's whole life; the call after the cap is refused 403 `session_cap_reached` in the protocol's
shape with `x-should-retry: false`, other sessions go on. (`max_duration` is the `age` life counter:
tests/conformance/test_counters_contract.py drives its clock.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from interlock.policies.model import Limits
from interlock.scripted import ScriptedUpstream
from interlock.scripted.replies import Script
from tests.policies.conftest import anthropic_client, openai_client
from tests.proxy.routing_support import wait_for
from tests.sdk_errors import protocol_error

HI = [{"role": "user", "content": "hi"}]


def cap(limits: str) -> str:
    return f"rules:\n  - name: run-cap\n    limits: {{per: session, {limits}}}\n"


def chat(running: Any, session: str) -> Any:
    client = openai_client(running, **{"X-Interlock-Session": session})
    return client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def hook() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as server:
        yield server


def test_max_calls_refuses_the_call_after_the_cap(with_policy: Any, hook: ScriptedUpstream) -> None:
    running = with_policy(cap("max_calls: 2"), escalation={"webhook": hook.url + "/hook"})
    chat(running, "run-1")
    chat(running, "run-1")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        chat(running, "run-1")
    error = protocol_error(refused.value)
    assert error["code"] == "session_cap_reached" and "'run-cap'" in error["message"]
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert "retry-after" not in refused.value.response.headers
    assert chat(running, "run-2").choices[0].message.content == "echo: hi"  # another run goes on
    with pytest.raises(openai.PermissionDeniedError):
        chat(running, "run-1")
    wait_for(lambda: len(hook.requests) >= 1)
    [event] = [r.json() for r in hook.requests]  # once per rule and session, however often refused
    assert (event["event"], event["session"], event["rule"]) == ("session_cap_reached", "run-1", "run-cap")


def test_max_usd_counts_the_catalogue_cost_of_the_session(with_policy: Any, upstream: ScriptedUpstream) -> None:
    # One call of 2M input tokens to gpt-4o-mini costs far more than $0.10: the next one is refused.
    running = with_policy(cap("max_usd: 0.10"))
    upstream.script(Script(input_tokens=2_000_000, output_tokens=10))
    chat(running, "spender")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        chat(running, "spender")
    assert protocol_error(refused.value)["code"] == "session_cap_reached"
    assert "spent $" in protocol_error(refused.value)["message"]


def test_max_tokens_on_anthropic(with_policy: Any, upstream: ScriptedUpstream) -> None:
    running = with_policy(cap("max_tokens: 100"))
    upstream.script(Script(input_tokens=90, output_tokens=20))
    client = anthropic_client(running)
    headers = {"X-Interlock-Session": "long-run"}
    client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=HI, extra_headers=headers)  # type: ignore[arg-type]
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=HI, extra_headers=headers)  # type: ignore[arg-type]
    assert protocol_error(refused.value)["code"] == "session_cap_reached"


def test_caps_need_per_session() -> None:
    with pytest.raises(ValueError, match="per: session"):
        Limits(max_calls=3)
    assert Limits(max_calls=3, per="session").caps
