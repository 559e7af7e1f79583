"""`core.views.json_document` is `json.loads` for a document that starts with `{` or `[` (the C
scanner called directly, for a stream's events): same value, and None exactly where json.loads raises."""

from __future__ import annotations

import json
import random
from typing import Any

from interlock.core.views import Event, json_document


def _value(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.randint(-(10**20), 10**20)
    if kind == 3:
        return rng.choice([0.0, -0.0, 1.5, 1e-7, 3.141592653589793, 1e300, rng.random() * 1e6])
    if kind in (4, 5):
        return "".join(rng.choice('ab "\\/\n\t\u00e9\u2028\U0001f600\x00}]{[,:') for _ in range(rng.randrange(8)))
    if kind in (6, 7):
        return {_key(rng): _value(rng, depth + 1) for _ in range(rng.randrange(4))}
    return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]


def _key(rng: random.Random) -> str:
    return "".join(rng.choice('kz"\\\u00e9 ') for _ in range(rng.randrange(1, 4)))


def _texts() -> list[str]:
    rng = random.Random(18)
    texts = [
        "[DONE]",
        "{}",
        "[]",
        "{} ",
        "{}\r\n\t ",
        "{}x",
        "{} {}",
        "{},{}",
        '{"a":1}, {"b":2}',
        "[NaN, Infinity, -Infinity]",
        "[1" + "0" * 5000 + "]",  # past the int-string limit: json.loads raises ValueError
        "[" * 100_000 + "]" * 100_000,  # past the recursion limit: RecursionError
        '{"a": "\\ud800"}',
        '{"a": "\\x"}',
        "{\"a\": 'b'}",
        '{"a":1,}',
        "[1,]",
        "{\u00a0}",
        "[1]\u00a0",
        "[1]\x0b",
        "{",
        "[",
    ]
    for _ in range(400):
        value = rng.choice([{}, []]) if rng.random() < 0.05 else _value(rng, 0)
        if not isinstance(value, dict | list):
            value = [value]
        for options in (
            {},
            {"separators": (",", ":"), "ensure_ascii": False},
            {"indent": 1},
        ):
            text = json.dumps(value, **options)  # type: ignore[arg-type]
            texts.append(text)
            texts.append(text + rng.choice([" ", "\n", "\r\n", "\t", " x", ",", "]", "}", "\x0c"]))
            cut = rng.randrange(1, len(text) + 1)
            texts.append(text[:cut])  # a document cut short (every prefix kind over the run)
            at = rng.randrange(1, len(text))
            texts.append(text[:at] + rng.choice([" ", "\\", '"', "}", "]", ",", "\x01"]) + text[at:])
    return [t for t in texts if t[:1] in ("{", "[")]


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def test_json_document_is_json_loads_for_documents_and_failures_alike() -> None:
    texts = _texts()
    assert len(texts) > 4000
    failures = 0
    for text in texts:
        expected = _loads(text)
        failures += expected is None
        # repr: NaN is not equal to itself, and key order counts.
        assert repr(json_document(text)) == repr(expected), text[:200]
    assert 500 < failures < len(texts) - 1000  # both sides are exercised


def test_an_event_parses_its_data_once_through_it() -> None:
    event = Event(b'data: {"a": [1, 2.5, "x"]}\n\n', None, '{"a": [1, 2.5, "x"]}')
    assert event.json() == {"a": [1, 2.5, "x"]}
    assert event.json() is event.json()
    assert Event(b"data: [DONE]\n\n", None, "[DONE]").json() is None
    assert Event(b"data: {} x\n\n", None, "{} x").json() is None
    assert Event(b"data: hello\n\n", None, "hello").json() is None
