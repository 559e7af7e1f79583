"""Streamed responses: long secrets (JWTs, PEM keys) are held back and scanned whole, and keep-alives
between two deltas do not release held text early. Real detectors; real SDKs through the proxy."""

from __future__ import annotations

import base64
import hashlib
import json
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from interlock.config import Guardrails as GuardrailSettings
from interlock.guardrails.redaction import MAX_HOLD, Applied, StreamScrubber, holdback, replacement, rewrite
from interlock.guardrails.scanner import detector_for
from interlock.guardrails.streamrewrite import StreamTextRewriter
from interlock.protocols import ADAPTERS
from interlock.protocols.sse import iter_events
from interlock.scripted import Script, ScriptedUpstream
from interlock.scripted.anthropic_replies import anthropic_reply
from interlock.scripted.openai_replies import chat_reply
from interlock.scripted.replies import with_keepalives
from interlock.testing import Running
from tests.policies.conftest import anthropic_client, openai_client
from tests.sdk_errors import protocol_error

CARD = "4539 1488 0343 6467"  # Luhn-valid


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_like(length: int = 600) -> str:
    """A JWT (HS256) about `length` characters long: no spaces, far over the short hold-back."""
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"sub": "1234567890", "name": "Jane Roe", "iat": 1516239022, "scope": ""}
    while True:
        payload = b64url(json.dumps(claims).encode())
        signature = b64url(hashlib.sha256(payload.encode()).digest())
        token = f"{header}.{payload}.{signature}"
        if len(token) >= length:
            return token
        claims["scope"] += "admin:write "


def pem_private_key() -> str:
    body = base64.b64encode(hashlib.shake_256(b"not a real key").digest(1190)).decode()
    lines = "\n".join(textwrap.wrap(body, 64))
    return f"-----BEGIN RSA PRIVATE KEY-----\n{lines}\n-----END RSA PRIVATE KEY-----"


JWT = jwt_like()
PEM = pem_private_key()
JWT_TEXT = f"Here is the token you asked for: {JWT} and keep it safe."
PEM_TEXT = f"Sure, the deploy key is:\n{PEM}\nRotate it after use."


@pytest.fixture(scope="module")
def detector() -> Any:
    return detector_for(GuardrailSettings())


def redactor(detector: Any) -> Callable[[str], str]:
    """What a response guardrail with `SECRET: redact` makes of a released segment."""

    def process(segment: str) -> str:
        applied = [Applied(d, "redact") for d in detector.detect(segment) if d.entity == "SECRET"]
        return rewrite(
            segment, applied, lambda a, v: replacement(a.detection.entity, v, "redact", None, None, reversible=False)
        )  # type: ignore[arg-type]

    return process


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


# -- the hold-back alone --------------------------------------------------------------------------


def test_an_unbroken_token_is_held_up_to_the_cap() -> None:
    text = "token: " + "a" * 1000
    assert holdback(text, True, 4096) == len("token: ")
    assert holdback(text, True) == len(text) - MAX_HOLD  # the short hold alone lets it go in pieces
    assert holdback("hello there wor", True, 4096) == len("hello there ")  # prose still goes per word
    assert holdback("done. ", True, 4096) == len("done. ")
    cjk = "这是一段没有空格的中文文本" * 40  # no spaces, but not a token a secret is made of
    assert holdback(cjk, True, 4096) == len(cjk) - MAX_HOLD
    assert holdback('{"to":"<EMAIL_AD', True, 4096) == 0
    assert holdback("x " + "a" * 4096, True, 4096) == 2
    over = "x " + "a" * 4097
    assert holdback(over, True, 4096) == len(over)  # past the cap: released whole, scanned as it is
    assert holdback(over + "<EMAIL_", True, 4096) == len(over)  # a placeholder still waits


def test_a_pem_block_is_held_until_its_end_line() -> None:
    begin = "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAIBAAK"
    assert holdback(begin, True, 4096) == len("key:\n")
    assert holdback(begin + "\n-----END RSA PRIV", True, 4096) == len("key:\n")
    closed = begin + "\n-----END RSA PRIVATE KEY-----"
    assert holdback(closed, True, 4096) == len(closed)
    assert holdback(closed + "\nThanks", True, 4096) == len(closed) + 1
    assert holdback("key:\n-----BEG", True, 4096) == len("key:\n")
    long = "key:\n-----BEGIN RSA PRIVATE KEY-----\n" + "QUJD\n" * 900
    assert holdback(long, True, 4096) == len(long)  # an open block past the cap is released
    assert holdback(begin, True) == len(begin) - len("AIBAAK")  # without the long hold: per line


@pytest.mark.parametrize("size", [4, 5, 7, 8])
@pytest.mark.parametrize("text", [JWT_TEXT, PEM_TEXT], ids=["jwt", "pem"])
def test_long_secrets_streamed_in_pieces_are_found_as_in_one_piece(detector: Any, text: str, size: int) -> None:
    process = redactor(detector)
    whole = process(text)
    assert "<SECRET>" in whole and JWT not in whole and "PRIVATE KEY" not in whole.replace("<SECRET>", "")
    scrubber = StreamScrubber(process, True, 4096)
    released = [scrubber.feed(p) for p in pieces(text, size)] + [scrubber.flush()]
    assert "".join(released) == whole
    first = next(i for i, r in enumerate(released) if r)
    assert released[first] and "<SECRET>" not in released[first]  # the text before went out first
    short = StreamScrubber(process, True)
    assert "<SECRET>" not in "".join([short.feed(p) for p in pieces(text, size)] + [short.flush()])


# -- keep-alives ------------------------------------------------------------------------------------


def test_keepalives_are_told_from_events_that_end_a_text() -> None:
    openai_keepalive, anthropic_keepalive = ADAPTERS["openai"].stream_keepalive, ADAPTERS["anthropic"].stream_keepalive
    assert anthropic_keepalive("ping", {"type": "ping"})
    assert openai_keepalive(None, {"choices": [{"index": 0, "delta": {}, "finish_reason": None}]})
    assert openai_keepalive(None, {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
    assert not openai_keepalive(None, {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    assert not openai_keepalive(None, {"choices": [], "usage": {"total_tokens": 3}})
    assert not openai_keepalive(None, {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "id": "c"}]}}]})
    assert not anthropic_keepalive("content_block_stop", {"type": "content_block_stop", "index": 0})


class Recorder(StreamTextRewriter):
    """The shared core with a processor that only records what it is given."""

    def __init__(self, protocol: str) -> None:
        super().__init__(ADAPTERS[protocol], entities=True)
        self.segments: list[str] = []

    def processor(self, key: str, json_text: bool, record: bool = True) -> Callable[[str], str]:
        def process(segment: str) -> str:
            self.segments.append(segment)
            return segment

        return process


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_a_keepalive_between_deltas_does_not_release_held_text(protocol: str) -> None:
    script = Script(text=f"card {CARD} ok", chunk_size=4)
    events, _ = (
        chat_reply(script.text or "", script, "m", {})
        if protocol == "openai"
        else anthropic_reply(script.text or "", script, "m")
    )
    events = with_keepalives(events, 1, "chat" if protocol == "openai" else "anthropic")
    body = b"".join(events)
    assert body.count(b": keep-alive") >= 5 and (b'"delta": {}' in body or b'"type": "ping"' in body)
    rewriter = Recorder(protocol)
    out = b"".join(o.raw for e in iter_events(body) for o in rewriter.event(e))
    out += b"".join(o.raw for o in rewriter.flush())
    assert any(CARD in s for s in rewriter.segments)  # the card's digit groups waited across every keep-alive
    keepalive = ADAPTERS[protocol].stream_keepalive
    keepalives = [
        e.raw for e in iter_events(body) if not e.data or (e.data[0] == "{" and keepalive(e.event, json.loads(e.data)))
    ]
    assert len(keepalives) >= 10
    assert [e.raw for e in iter_events(out) if e.raw in keepalives] == keepalives  # relayed as they came


# -- through the proxy, with the real SDKs -----------------------------------------------------


def stored_bytes(running: Running, calls: int) -> bytes:
    """Everything the store wrote to disk, once `calls` calls are recorded."""
    recorder = running.runtime.recorder
    assert recorder is not None
    deadline = time.monotonic() + 60
    while True:
        assert recorder.flush()
        if len(running.runtime.store.list_calls(limit=1000)) >= calls:
            break
        assert time.monotonic() < deadline, "calls were not recorded in time"
        time.sleep(0.01)
    path = Path(running.settings.store.path)
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def chat_pieces(stream: Any) -> list[str]:
    """Each SSE event's text, in order ('' for an event without text)."""
    return [(c.choices[0].delta.content or "") if c.choices else "" for c in stream]


@pytest.mark.parametrize("size", [4, 8])
def test_a_streamed_jwt_is_redacted_as_when_not_streamed(
    make_interlock: Any, upstream: ScriptedUpstream, size: int
) -> None:
    running = make_interlock(guardrails={"response": {"SECRET": "redact"}})
    client = openai_client(running)
    upstream.script(Script(text=JWT_TEXT), Script(text=JWT_TEXT, chunk_size=size))
    whole = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "token?"}])
    expected = whole.choices[0].message.content
    assert expected == "Here is the token you asked for: <SECRET> and keep it safe."
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "token?"}], stream=True)
    events = chat_pieces(stream)
    assert "".join(events) == expected
    before = next(i for i, e in enumerate(events) if "token" in e)
    secret = next(i for i, e in enumerate(events) if "<SECRET>" in e)
    assert before < secret < len(events) - 1  # the text before the token streamed ahead of it
    assert JWT.encode() not in stored_bytes(running, calls=2)


def test_a_streamed_pem_key_is_blocked_openai(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    running = make_interlock(guardrails={"response": {"SECRET": "block"}})
    client = openai_client(running)
    upstream.script(Script(text=PEM_TEXT), Script(text=PEM_TEXT, chunk_size=4))
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "key?"}])
    assert protocol_error(denied.value)["code"] == "pii_blocked"
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "key?"}], stream=True)
    received: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append((chunk.choices[0].delta.content or "") if chunk.choices else "")
    assert "SECRET" in protocol_error(caught.value)["message"]
    assert "".join(received) == "Sure, the deploy key is:\n"
    assert sum(1 for r in received if r) >= 2  # released per word before the block, not in one go
    data = stored_bytes(running, calls=2)
    assert PEM.splitlines()[1].encode() not in data and PEM.splitlines()[-2].encode() not in data


def test_a_streamed_pem_key_is_blocked_anthropic(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    running = make_interlock(guardrails={"response": {"SECRET": "block"}})
    upstream.script(Script(text=PEM_TEXT, chunk_size=7))
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        with anthropic_client(running).messages.stream(
            model="claude-test", max_tokens=100, messages=[{"role": "user", "content": "key?"}]
        ) as stream:
            for text in stream.text_stream:
                received.append(text)
    assert "SECRET" in protocol_error(caught.value)["message"]
    assert "".join(received) == "Sure, the deploy key is:\n"
    assert PEM.splitlines()[1].encode() not in stored_bytes(running, calls=1)


def test_keepalives_do_not_split_a_streamed_card_openai(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    running = make_interlock(guardrails={"response": {"CREDIT_CARD": "block"}})
    upstream.script(Script(text=f"your card is {CARD}, ok", chunk_size=4, keepalive_every=1))
    with httpx.Client(base_url=running.url, timeout=10) as raw:
        body = raw.post(
            "/openai/chat/completions",
            json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]},
        ).content
    assert body.count(b": keep-alive") >= 5 and b'"delta":{}' in body.replace(b" ", b"")  # relayed as they came
    assert b"pii_blocked" in body
    assert not any(d in body for d in (b"4539", b"1488", b"0343", b"6467"))
    upstream.script(Script(text=f"your card is {CARD}, ok", chunk_size=4, keepalive_every=1))
    stream = openai_client(running).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], stream=True
    )
    received = ""
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received += (chunk.choices[0].delta.content or "") if chunk.choices else ""
    assert "CREDIT_CARD" in protocol_error(caught.value)["message"] and received == "your card is "


def test_keepalives_do_not_split_a_streamed_card_anthropic(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    running = make_interlock(guardrails={"response": {"CREDIT_CARD": "mask"}})
    upstream.script(Script(text=f"your card is {CARD}, ok", chunk_size=4, keepalive_every=1))
    with anthropic_client(running).messages.stream(
        model="claude-test", max_tokens=100, messages=[{"role": "user", "content": "x"}]
    ) as stream:
        text = "".join(stream.text_stream)
    assert text == "your card is **** **** **** 6467, ok"


def test_a_placeholder_split_by_pings_is_restored(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    email = "jane.roe@acme-corp.io"
    running = make_interlock(guardrails={"request": {"EMAIL_ADDRESS": "redact"}})
    upstream.script(Script(chunk_size=3, keepalive_every=1))
    with anthropic_client(running).messages.stream(
        model="claude-test", max_tokens=100, messages=[{"role": "user", "content": f"hi {email}!"}]
    ) as stream:
        text = "".join(stream.text_stream)
    assert text == f"echo: hi {email}!"
    assert upstream.requests[-1].json()["messages"][0]["content"] == "hi <EMAIL_ADDRESS_1>!"


def test_a_secret_whose_rule_needs_the_words_before_it_is_found_in_a_stream(
    make_interlock: Any, upstream: ScriptedUpstream
) -> None:
    # kingfisher's Heroku rule needs "heroku ... key" before the UUID; those words stream out first.
    text = "Use the heroku api key: 01234567-89ab-cdef-0123-456789abcdef for deploys."
    running = make_interlock(guardrails={"response": {"SECRET": "redact"}})
    client = openai_client(running)
    upstream.script(Script(text=text), Script(text=text, chunk_size=4))
    whole = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "key?"}])
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "key?"}], stream=True)
    streamed = "".join(chat_pieces(stream))
    assert "01234567-89ab" not in streamed and "<SECRET>" in streamed
    assert streamed == whole.choices[0].message.content == "Use the heroku api key: <SECRET> for deploys."


def test_secrets_in_the_released_text_before_are_context_only(detector: Any) -> None:
    assert detector.detect("and more", "key AKIAQX7Z4KJH2M3N5P6R ") == ()  # scanned when it was released
    found = detector.detect("01234567-89ab-cdef-0123-456789abcdef ok", "heroku api key: ")
    assert [(d.entity, d.start, d.end) for d in found] == [("SECRET", 0, 36)]
    assert detector.detect("01234567-89ab-cdef-0123-456789abcdef ok") == ()


def test_the_long_hold_applies_only_when_a_long_entity_is_acted_on() -> None:
    from pydantic import ValidationError

    from interlock.config import Settings
    from interlock.core.actions import GuardrailActions
    from interlock.guardrails.stage import Guardrails

    def hold(response: dict[str, str], **config: Any) -> int:
        stage = Guardrails(Settings.model_validate({"guardrails": {"stream_holdback_chars": 1000, **config}}))
        return stage.stream_hold(GuardrailActions(response=response))  # type: ignore[arg-type]

    assert hold({"SECRET": "block"}) == 1000
    assert hold({"*": "log"}) == 1000
    assert hold({"PHONE_NUMBER": "mask"}) == MAX_HOLD  # short entities only: per word, as before
    assert hold({"SECRET": "block"}, secrets=False) == MAX_HOLD
    custom = [{"entity": "TICKET", "patterns": [r"TKT-[A-Z0-9]{20,}"]}]
    assert hold({"TICKET": "redact"}, secrets=False, recognizers=custom) == 1000
    with pytest.raises(ValidationError) as invalid:
        Settings.model_validate({"guardrails": {"stream_holdback_chars": 100}})
    assert [error["loc"] for error in invalid.value.errors()] == [("guardrails", "stream_holdback_chars")]
