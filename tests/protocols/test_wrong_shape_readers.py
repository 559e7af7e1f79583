"""Every response reader of the Bedrock Converse, Gemini and Ollama adapters over an answer in the wrong
shape: each object, list and value of a well-formed answer replaced in turn by a value of another JSON
type reads as less (or nothing), never raises (which the proxy would turn into its own 500)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from interlock.protocols import ADAPTERS
from interlock.protocols.summary import ResponseSummary

WELL_FORMED: dict[str, dict[str, Any]] = {
    "bedrock": {
        "output": {
            "message": {
                "role": "assistant",
                "content": [{"text": "hi"}, {"toolUse": {"name": "t", "input": {"a": "b"}, "toolUseId": "1"}}],
            }
        },
        "stopReason": "end_turn",
        "usage": {"inputTokens": 1, "outputTokens": 2},
    },
    "gemini": {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"text": "hi"}, {"functionCall": {"name": "t", "args": {"a": "b"}}}],
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {"promptTokenCount": 1},
        "responseId": "r",
    },
    "ollama": {
        "model": "m",
        "message": {
            "role": "assistant",
            "content": "hi",
            "tool_calls": [{"function": {"name": "t", "arguments": {"a": "b"}}}],
        },
        "response": "hi",
        "done": True,
        "done_reason": "stop",
    },
}
WRONG = ([], "x", 3, [1], {"k": 1}, None, True)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        yield from _paths(item, (*path, key))


def _replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    document = copy.deepcopy(document)
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return document


def _readers(protocol: str) -> dict[str, Callable[[Any], object]]:
    adapter = ADAPTERS[protocol]
    return {
        "response_texts": adapter.response_texts,
        "response_tool_calls": adapter.response_tool_calls,
        "read_summary": lambda data: adapter.read_summary(data, ResponseSummary()),
        "conversation": lambda data: adapter.conversation({}, data),
        "stream_texts": lambda data: adapter.stream_texts(None, data),
        "stream_texts (a Converse delta)": lambda data: adapter.stream_texts("contentBlockDelta", data),
    }


@pytest.mark.parametrize("protocol", sorted(WELL_FORMED))
def test_an_answer_in_the_wrong_shape_reads_as_less_never_raises(protocol: str) -> None:
    body = WELL_FORMED[protocol]
    readers = _readers(protocol)
    assert ADAPTERS[protocol].response_texts(body), "the well-formed answer is read"
    failures = []
    for path in _paths(body):
        for wrong in WRONG:
            data = _replaced(body, path, wrong)
            for name, read in readers.items():
                try:
                    read(data)
                except Exception as exc:  # noqa: BLE001 - each failure is listed, then the test fails
                    failures.append(f"{name} with {path} = {wrong!r}: {type(exc).__name__}")
    assert failures == []


@pytest.mark.parametrize(
    ("protocol", "path", "wrong"),
    [
        ("bedrock", ("output",), "x"),
        ("bedrock", ("output", "message"), [1]),
        ("bedrock", ("output", "message", "content"), 3),
        ("gemini", ("candidates",), 3),
        ("gemini", ("candidates", 0, "content", "parts"), {"k": 1}),
    ],
)
def test_an_answer_out_of_shape_where_its_texts_are_says_so(protocol: str, path: tuple[Any, ...], wrong: Any) -> None:
    # The guardrails record it as not fully scanned (`answer_shape_problem`), never as an answer with no text.
    adapter = ADAPTERS[protocol]
    assert adapter.answer_shape_problem(WELL_FORMED[protocol]) is None
    assert adapter.answer_shape_problem(_replaced(WELL_FORMED[protocol], path, wrong))
