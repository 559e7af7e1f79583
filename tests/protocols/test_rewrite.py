"""The adapters' write side (issue 18, "parse once"): `Adapter.rewrite_response` rewrites a
non-streamed body's texts on the call's one parse of it (the guardrails' restore and redaction),
and `Adapter.rewrite_chunks` re-renders a recorded stream's chunks (the guardrails' masked
record). Bodies follow OpenAI's chat completion reference."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from interlock.core.call import Call, Chunk
from interlock.core.views import Event, TextSlot
from interlock.protocols import ADAPTERS
from interlock.protocols.base import with_paths

OPENAI = ADAPTERS["openai"]

COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1765000000,
    "model": "gpt-4o-mini",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Mail bob@example.com"}, "finish_reason": "stop"},
        {"index": 1, "message": {"role": "assistant", "content": "Nothing here"}, "finish_reason": "stop"},
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
}
JSON = [("content-type", "application/json")]


def answered(body: bytes, *, stream: bool = False) -> Call:
    return Call(
        id="c1",
        route="openai",
        protocol="openai",
        method="POST",
        path="/chat/completions",
        stream=stream,
        response_headers=list(JSON),
        response_body=body,
    )


def placeholder_for_mail(slot: TextSlot) -> str:
    return slot.text.replace("bob@example.com", "<EMAIL_1>")


def test_a_body_whose_texts_do_not_change_is_left_as_it_came() -> None:
    # Spaced and ordered as no serialiser of ours would write it: None means the bytes stay the upstream's.
    body = json.dumps(COMPLETION, indent=3, sort_keys=True).encode()
    call = answered(body)
    assert OPENAI.rewrite_response(call, lambda slot: slot.text) is None
    assert call.response_body is body


def test_a_rewrite_changes_its_texts_only_and_leaves_the_view_as_the_upstream_sent_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[str] = []
    read_body = OPENAI.read_body
    monkeypatch.setattr(OPENAI, "read_body", lambda call: reads.append(call.id) or read_body(call))
    call = answered(json.dumps(COMPLETION).encode())
    view = OPENAI.response_view(call)
    before = copy.deepcopy(view.message)

    agent = OPENAI.rewrite_response(call, placeholder_for_mail)
    stored = OPENAI.rewrite_response(call, lambda slot: "*" * len(slot.text) if "@" in slot.text else slot.text)

    assert agent is not None and stored is not None
    expected = copy.deepcopy(COMPLETION)
    expected["choices"][0]["message"]["content"] = "Mail <EMAIL_1>"
    assert json.loads(agent.body) == agent.message == expected
    expected["choices"][0]["message"]["content"] = "*" * len("Mail bob@example.com")
    assert json.loads(stored.body) == stored.message == expected
    # The view still reads the upstream's answer, and the body was parsed once for all three.
    assert view.message == before and OPENAI.response_view(call) is view
    assert [t.text for t in view.texts] == ["Mail bob@example.com", "Nothing here"]
    assert reads == ["c1"]
    # The store's copy becomes the call's body with a view of its own, read from the document it
    # was written from (the recorder and the exporter read it without parsing it again).
    OPENAI.replace_response(call, stored)
    replaced = OPENAI.response_view(call)
    assert call.response_body is stored.body and replaced is not view and replaced.parsed() is stored.message
    assert [t.text for t in replaced.texts] == ["*" * len("Mail bob@example.com"), "Nothing here"]
    assert reads == ["c1"]


def test_a_body_that_is_not_json_has_nothing_to_rewrite() -> None:
    assert OPENAI.rewrite_response(answered(b"<html>bad gateway</html>"), placeholder_for_mail) is None


def test_a_stream_is_not_rewritten_as_a_body() -> None:
    with pytest.raises(ValueError):
        OPENAI.rewrite_response(answered(b"data: {}\n\n", stream=True), placeholder_for_mail)


def test_with_paths_copies_each_container_once_and_shares_the_rest() -> None:
    document = copy.deepcopy(COMPLETION)
    kept = copy.deepcopy(document)
    changed = with_paths(
        document,
        [(("choices", 0, "message", "content"), "a"), (("choices", 1, "message", "content"), "b"), (("id",), "x")],
    )
    assert document == kept  # the original is untouched
    assert [c["message"]["content"] for c in changed["choices"]] == ["a", "b"]
    assert changed["id"] == "x"
    assert changed["usage"] is document["usage"]  # off every path: shared, not copied
    assert with_paths(document, []) is document


def test_recorded_chunks_are_re_rendered_event_by_event_with_their_times() -> None:
    events = [
        b'data: {"choices":[{"index":0,"delta":{"content":"Mail bob@"}}]}\n\n',
        b'data: {"choices":[{"index":0,"delta":{"content":"example.com"}}]}\n\n',
        b"data: [DONE]\n\n",
    ]
    stream = b"".join(events)
    cut = len(events[0]) + 10  # the second event arrives in two chunks
    chunks = [Chunk(1.0, stream[:cut]), Chunk(2.0, stream[cut:-4]), Chunk(3.0, stream[-4:])]
    seen: list[tuple[list[bytes], bool]] = []

    def rewrite(batch: list[Event], last: bool) -> list[Event]:
        seen.append(([e.raw for e in batch], last))
        return [
            e if e.data == "[DONE]" or "bob@" not in e.data else Event(b"data: masked\n\n", None, "") for e in batch
        ]

    out = OPENAI.rewrite_chunks(chunks, rewrite)
    # Each chunk's whole events, in order; the last chunk completes the [DONE] event.
    assert seen == [([events[0]], False), ([events[1]], False), ([events[2]], True)]
    assert out == [Chunk(1.0, b"data: masked\n\n"), Chunk(2.0, events[1]), Chunk(3.0, events[2])]


def test_a_recorded_stream_keeps_its_unterminated_tail_and_drops_chunks_left_empty() -> None:
    chunks = [Chunk(1.0, b": keep-alive\n\n"), Chunk(2.0, b'data: {"a":1}\n\ndata: {"b"')]
    dropped = OPENAI.rewrite_chunks(chunks, lambda batch, last: [e for e in batch if e.data])
    # The keep-alive made an empty chunk (dropped); the tail that never ended comes out as it came.
    assert dropped == [Chunk(2.0, b'data: {"a":1}\n\ndata: {"b"')]
