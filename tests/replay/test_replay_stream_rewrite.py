"""Replay's placeholder restorer (the playback stage's, on the proxy's events) and the guardrails'
StreamGuard share one event-rewriting core: a stream comes out of both alike, whatever the chunking."""

from __future__ import annotations

import json
from typing import Any

import pytest

from interlock.config import Settings
from interlock.core.call import Call
from interlock.guardrails.guardstream import StreamGuard
from interlock.guardrails.redaction import SessionVault
from interlock.guardrails.stage import Guardrails
from interlock.guardrails.streamrewrite import StreamTextRewriter
from interlock.protocols import ADAPTERS
from interlock.protocols.sse import last_events
from interlock.replay.playback import _Restorer
from interlock.scripted.anthropic_replies import anthropic_reply
from interlock.scripted.openai_replies import chat_reply
from interlock.scripted.replies import Script


def rechunked(events: list[bytes], size: int) -> list[bytes]:
    body = b"".join(events)
    return [body[i : i + size] for i in range(0, len(body), size)]


def through_both(protocol: str, events: list[bytes], size: int) -> tuple[bytes, bytes]:
    vault = SessionVault(10)
    placeholder = vault.placeholder("EMAIL_ADDRESS", "ann@example.com")
    assert placeholder == "<EMAIL_ADDRESS_1>"
    call = Call(id="c1", route=protocol, protocol=protocol, method="POST", path="/x")
    guard = StreamGuard(Guardrails(Settings()), call, None, vault)
    replay = _Restorer(ADAPTERS[protocol], {placeholder: "ann@example.com"})
    chunks = rechunked(events, size)
    splitter, guarded, replayed = ADAPTERS[protocol].event_splitter(), b"", b""
    for i, chunk in enumerate(chunks):  # split as the proxy splits a stream for its stages
        last = i == len(chunks) - 1
        events = list(splitter.feed(chunk)) + (last_events(splitter) if last else [])
        guarded += b"".join(e.raw for e in guard.feed(events, last))
        restored = [out for event in events for out in replay.event(event)] + (replay.flush() if last else [])
        replayed += b"".join(e.raw for e in restored)
    return guarded, replayed


@pytest.mark.parametrize(
    "protocol, reply",
    [
        ("openai", lambda s: chat_reply(s.text, s, "gpt-4o-mini", {})),
        ("anthropic", lambda s: anthropic_reply(s.text, s, "claude")),
    ],
)
@pytest.mark.parametrize("size", [7, 64, 100_000])
def test_replay_restores_a_stream_as_the_guardrails_do(protocol: str, reply: Any, size: int) -> None:
    # Deltas of 3 characters: the placeholder arrives in pieces and is held until whole.
    events, _ = reply(Script(text="mail <EMAIL_ADDRESS_1> today, <EMAIL_ADDRESS_1>!", chunk_size=3))
    guarded, replayed = through_both(protocol, events, size)
    assert replayed == guarded
    text = "".join(
        (d.get("choices") or [{}])[0].get("delta", {}).get("content") or (d.get("delta") or {}).get("text") or ""
        for line in replayed.split(b"\n")
        if line.startswith(b"data: {")
        for d in [json.loads(line[6:])]
    )
    assert text == "mail ann@example.com today, ann@example.com!"


def test_both_are_the_one_core() -> None:
    assert issubclass(StreamGuard, StreamTextRewriter) and issubclass(_Restorer, StreamTextRewriter)
    assert "event" not in vars(StreamGuard) and "event" not in vars(_Restorer)
    assert "flush" not in vars(StreamGuard) and "flush" not in vars(_Restorer)
