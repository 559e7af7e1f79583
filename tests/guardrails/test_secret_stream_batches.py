"""A stream's events handed to the guard several at once (a read that held more than one) have their
segments' secret rules run in one kingfisher call, and come out exactly as when they are handed one
at a time: the same bytes, findings, actions and outcome (blocks, redactions, restored placeholders,
secrets whose rule needs the words before them), whatever the deltas' size and the grouping."""

from __future__ import annotations

from typing import Any

import pytest

from interlock.config import Settings
from interlock.core.call import Call
from interlock.guardrails.guardstream import StreamGuard
from interlock.guardrails.redaction import SessionVault
from interlock.guardrails.stage import Guardrails
from interlock.protocols import ADAPTERS
from interlock.protocols.sse import last_events
from interlock.scripted.anthropic_replies import anthropic_reply
from interlock.scripted.openai_replies import chat_reply
from interlock.scripted.replies import Script

CARD = "4539 1488 0343 6467"  # Luhn-valid
AWS_ID = "AKIAQX7Z4KJH2M3N5P6R"
TEXTS = {
    "prose": "tok0 tok1 tok2 the renewal we discussed on Tuesday, order 4471-22 ships soon. " * 3,
    "secret": f"the key is {AWS_ID} and nothing else, tok3 tok4 tok5",
    "context": "Use the heroku api key: 01234567-89ab-cdef-0123-456789abcdef for deploys.",
    "sidekiq": "gems from https://a1b2c3d4:e5f6a7b8@gems.contribsys.com",
    "email": "write to ann@example.com or to <EMAIL_ADDRESS_1> about it tok6",
    "card": f"pay with {CARD} today tok7 tok8",
}
REPLIES = {
    "openai": lambda s: chat_reply(s.text, s, "gpt-4o-mini", {}),
    "anthropic": lambda s: anthropic_reply(s.text, s, "claude"),
}


@pytest.fixture(scope="module")
def stage() -> Guardrails:
    settings = Settings.model_validate(
        {"guardrails": {"response": {"SECRET": "redact", "EMAIL_ADDRESS": "mask", "CREDIT_CARD": "block", "*": "log"}}}
    )
    stage = Guardrails(settings)
    stage._warm()
    assert stage.detector_now() is not None
    return stage


def through(stage: Guardrails, protocol: str, events: list[bytes], group: int) -> tuple[Any, ...]:
    """The stream through a guard, its events handed over `group` at a time."""
    vault = SessionVault(10)
    vault.placeholder("EMAIL_ADDRESS", "bob@example.com")
    call = Call(id="c1", route=protocol, protocol=protocol, method="POST", path="/x")
    guard = StreamGuard(stage, call, stage.actions(call), vault)
    splitter = ADAPTERS[protocol].event_splitter()
    split = list(splitter.feed(b"".join(events))) + last_events(splitter)
    out = b""
    for i in range(0, len(split), group):
        out += b"".join(e.raw for e in guard.feed(split[i : i + group], i + group >= len(split)))
    findings = [(f.entity, f.where, f.start, f.end, f.action) for f in call.findings]
    return out, findings, call.outcome, call.error_code, guard.found, guard.changed


@pytest.mark.parametrize("protocol", list(REPLIES))
@pytest.mark.parametrize("name", list(TEXTS))
@pytest.mark.parametrize("chunk", [3, 11])
def test_events_handed_over_together_come_out_as_one_at_a_time(
    stage: Guardrails, protocol: str, name: str, chunk: int
) -> None:
    events, _ = REPLIES[protocol](Script(text=TEXTS[name], chunk_size=chunk))
    alone = through(stage, protocol, events, 1)
    for group in (2, 3, 8, len(events) + 2):
        assert through(stage, protocol, events, group) == alone, group
    if name in ("secret", "context", "card", "email"):
        assert alone[1], "the comparison is about a stream where something is found"


def test_a_batch_without_a_secret_takes_one_kingfisher_call(stage: Guardrails, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = stage.detector_now().secrets  # type: ignore[union-attr]
    assert secrets is not None
    calls = []
    native = secrets._native
    monkeypatch.setattr(
        secrets, "_native", type("Counting", (), {"scan_bytes": lambda _, d: calls.append(d) or native.scan_bytes(d)})()
    )
    events, _ = chat_reply(TEXTS["prose"], Script(text=TEXTS["prose"], chunk_size=5), "gpt-4o-mini", {})
    out = through(stage, "openai", events, len(events) + 2)
    assert len(calls) == 1 and not out[1]
