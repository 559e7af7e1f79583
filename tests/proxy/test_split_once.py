"""A stream is split into events once, by the proxy, as it is relayed (issue 18 part 3): the usage is
folded from the events as they pass, and the recorder's search text and stored message are
reassembled from those same events, never by splitting the stream again. When the record is not
those events (a guardrail masked what it stores), nothing read from the relayed events reaches it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from interlock.protocols import ADAPTERS
from interlock.protocols.base import Adapter
from interlock.protocols.sse import EventSplitter
from interlock.scripted import ScriptedUpstream
from interlock.scripted.replies import Script
from interlock.testing import Running, recorded_answer
from tests.proxy.routing_support import collect_calls, finished, openai_client

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def splits(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every stream split: a splitter made ("live") or a recorded stream split whole ("again")."""
    made: list[str] = []
    openai_type = type(ADAPTERS["openai"])
    live, again = openai_type.event_splitter, Adapter.iter_events

    def event_splitter(self: Adapter) -> EventSplitter:
        made.append("live")
        return live(self)

    def iter_events(self: Adapter, body: bytes) -> Any:
        made.append("again")
        return again(self, body)

    monkeypatch.setattr(openai_type, "event_splitter", event_splitter)
    monkeypatch.setattr(Adapter, "iter_events", iter_events)
    yield made


def _found(running: Running, text: str) -> list[str]:
    return [c["id"] for c in running.runtime.store.list_calls(q=text)]


def test_a_stream_is_split_once_and_its_usage_and_record_read_from_those_events(
    make_interlock: Any, upstream: ScriptedUpstream, splits: list[str]
) -> None:
    running = make_interlock()
    calls = collect_calls(running)
    upstream.script(Script(text="Hello there, general Kenobi", input_tokens=12, output_tokens=5, chunk_size=5))
    chunks = openai_client(running).chat.completions.create(
        model="gpt-4o-mini", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello there, general Kenobi"
    (call,) = finished(calls)
    assert (call.input_tokens, call.output_tokens) == (12, 5)  # folded as the events passed
    row = running.recorded_row(call.id)
    assert (row["input_tokens"], row["output_tokens"]) == (12, 5)
    message = recorded_answer(running.runtime.store, call.id).message
    assert message["choices"][0]["message"]["content"] == "Hello there, general Kenobi"
    assert _found(running, "Kenobi") == [call.id]
    assert splits == ["live"]  # one splitter, for the relay; the stream was never split whole again


def test_a_record_a_guardrail_masked_is_not_indexed_from_the_relayed_events(
    make_interlock: Any, upstream: ScriptedUpstream, splits: list[str]
) -> None:
    # `log` relays the address as the model wrote it, but the store keeps it masked: the search
    # text and the stored message come from the masked record, not from the events as relayed.
    running = make_interlock(guardrails={"response": {"EMAIL_ADDRESS": "log"}, "entities": ["EMAIL_ADDRESS"]})
    calls = collect_calls(running)
    upstream.script(Script(text="write to ann.lee@example.com today", chunk_size=6))
    chunks = openai_client(running).chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)
    assert "ann.lee@example.com" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    (call,) = finished(calls)
    assert [f.entity for f in call.findings] == ["EMAIL_ADDRESS"]
    running.recorded_row(call.id)
    message = recorded_answer(running.runtime.store, call.id).message
    content = message["choices"][0]["message"]["content"]
    assert "ann.lee@example.com" not in content and "today" in content
    assert _found(running, "today") == [call.id] and _found(running, '"ann.lee@example.com"') == []
    assert "again" in splits  # the masked record, read from its chunks


def test_what_the_relay_keeps_of_a_long_stream_is_bounded_by_the_record(
    make_interlock: Any, upstream: ScriptedUpstream, splits: list[str]
) -> None:
    # A record would keep 1 KiB of this stream (head and tail): the relay keeps no more of its events,
    # and the usage, folded as the events passed, is whole all the same. (Recording off: no writer
    # thread reads the record meanwhile, so every split counted here is the relay's or the usage's.)
    running = make_interlock(store={"record_max_bytes": 1024, "enabled": False})
    calls = collect_calls(running)
    text = "word " * 400
    upstream.script(Script(text=text, input_tokens=12, output_tokens=400, chunk_size=20))
    chunks = openai_client(running).chat.completions.create(
        model="gpt-4o-mini", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    (call,) = finished(calls)
    read = ADAPTERS["openai"].response_view(call).stream_read
    assert read is not None and read.events is None and read.size > 1024
    assert (call.input_tokens, call.output_tokens) == (12, 400)
    assert splits == ["live"]  # the usage was not read by splitting the (cut) record
