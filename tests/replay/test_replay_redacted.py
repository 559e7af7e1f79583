"""Recorded with PII redaction on: the bundle holds placeholders, and a replay matches the agent's
real values against them and gives the agent its own values back."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from replay_helpers import routes_for

from interlock.scripted import ScriptedUpstream
from interlock.testing import replay_server, run_interlock, settings_for_test
from interlock.tracing.store import Store

EMAIL = "jane.roe@acme-corp.io"


def ask(base_url: str, text: str, stream: bool) -> str:
    client = openai.OpenAI(
        base_url=base_url, api_key="sk-agent", max_retries=0, default_headers={"X-Interlock-Session": "pii"}
    )
    messages = [{"role": "user", "content": text}]
    if stream:
        chunks = client.chat.completions.create(model="gpt-4o", messages=messages, stream=True)  # type: ignore[arg-type]
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reply = client.chat.completions.create(model="gpt-4o", messages=messages)  # type: ignore[arg-type]
    return reply.choices[0].message.content or ""


@pytest.fixture(scope="module")
def redacted_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("pii")
    store = tmp_path / "interlock.db"
    with ScriptedUpstream() as upstream:  # it answers "echo: <the last user text>"
        settings = settings_for_test(
            {
                "routes": routes_for(upstream),
                "guardrails": {"request": {"EMAIL_ADDRESS": "redact"}},
                "store": {"path": str(store)},
                "shutdown_grace": 1,
            }
        )
        with run_interlock(settings) as running:
            for stream in (False, True):
                answer = ask(running.url + "/openai", f"Write to {EMAIL} about the refund", stream)
                assert answer == f"echo: Write to {EMAIL} about the refund"
        assert EMAIL.encode() not in b"".join(r.body for r in upstream.requests)
    bundle = tmp_path / "pii.db"
    with Store(store) as opened:
        assert opened.export(bundle, session="pii") == 2
    return bundle


def test_the_bundle_holds_no_raw_value(redacted_bundle: Path) -> None:
    data = redacted_bundle.read_bytes()
    assert EMAIL.encode() not in data and b"<EMAIL_ADDRESS_1>" in data


@pytest.mark.parametrize("email", [EMAIL, "other.customer@example.org"])
def test_a_replay_matches_real_values_and_restores_them(redacted_bundle: Path, email: str) -> None:
    with replay_server(redacted_bundle) as replay:
        plain = ask(replay.base_url("openai"), f"Write to {email} about the refund", stream=False)
        streamed = ask(replay.base_url("openai"), f"Write to {email} about the refund", stream=True)
    replay.assert_no_divergence(all_used=True)
    assert plain == streamed == f"echo: Write to {email} about the refund"


def test_other_text_around_the_value_still_diverges(redacted_bundle: Path) -> None:
    with replay_server(redacted_bundle) as replay:
        with pytest.raises(openai.ConflictError):
            ask(replay.base_url("openai"), f"Write to {EMAIL} about the invoice", stream=False)
    [miss] = replay.summary().misses
    assert miss.differences[0].label == "messages[0] (user)"
    assert "<EMAIL_ADDRESS_1>" in miss.differences[0].detail  # the recording's side, as stored
