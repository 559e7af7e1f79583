"""What the agent is sent of a chat stream interlock asked for usage (`OpenAIAdapter.unasked`): each
chunk byte for byte as without the ask (its `"usage": null` taken out, in OpenAI's compact JSON and
in spaced JSON), the usage chunk not at all, everything else as it came."""

from __future__ import annotations

import json
from typing import Any

import pytest

from interlock.core.call import Call
from interlock.core.views import Event
from interlock.protocols import ADAPTERS
from interlock.protocols.base import STREAM_USAGE, USAGE_ASKED

CHUNK = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1741569952,
    "model": "gpt-4o-mini",
    # A text that is the word itself: a value "usage" is not the key.
    "choices": [{"index": 0, "delta": {"content": "usage"}, "logprobs": None, "finish_reason": None}],
}


def event(data: dict[str, Any], separators: tuple[str, str]) -> Event:
    text = json.dumps(data, separators=separators)
    return Event(b"data: " + text.encode() + b"\n\n", None, text)


def unasked() -> Any:
    call = Call(id="c", route="openai", protocol="openai", method="POST", path="/chat/completions")
    assert ADAPTERS["openai"].unasked(call) is None  # not asked: every event relayed as it came
    call.meta[STREAM_USAGE] = USAGE_ASKED
    return ADAPTERS["openai"].unasked(call)


@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")])
def test_each_chunk_is_sent_as_it_would_be_unasked(separators: tuple[str, str]) -> None:
    keep = unasked()
    asked = keep(event({**CHUNK, "usage": None}, separators))
    assert asked.raw == event(CHUNK, separators).raw
    first = keep(event({"usage": None, **CHUNK}, separators))  # the null member first
    assert first.raw == event(CHUNK, separators).raw
    usage = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
    assert keep(event({**CHUNK, "choices": [], "usage": usage}, separators)) is None  # the usage chunk
    # Azure's opening chunk has no choices either, and no usage: relayed as it came.
    opening = event({"choices": [], "id": "", "prompt_filter_results": []}, separators)
    assert keep(opening) is opening
    plain = event(CHUNK, separators)
    assert keep(plain) is plain
    done = Event(b"data: [DONE]\n\n", None, "[DONE]")
    assert keep(done) is done
