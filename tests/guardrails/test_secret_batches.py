"""`SecretScanner.scan_many` (one kingfisher call for many texts) finds exactly what `scan` finds text
by text: spans, rules and scores, over a corpus of realistic keys, the word-sized segments a stream
releases, slices that cut keys apart, keys at a text's very start or end, and batches where the
joining itself makes a match (a keyword in one text, a key in the next)."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from bench.secrets_eval import CASES, NEGATIVES
from interlock.config import Guardrails
from interlock.guardrails.pii import Detection
from interlock.guardrails.secrets import SecretScanner

PROSE = (
    "Hello team, following up on the renewal we discussed on Tuesday. The customer asked whether the "
    "quarterly invoice can be split across two cost centres, order 4471-22 ships on 2024-05-01. "
)
#: A key that only the rule with a bare end anchor (`...contribsys.com(?:[/#?:]|$)`) reports at a
#: text's end, and one whose rule needs a keyword before it.
SIDEKIQ = "https://a1b2c3d4:e5f6a7b8@gems.contribsys.com"
ADAFRUIT = "adafruit key: a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"


@pytest.fixture(scope="module", params=["medium", "low"])
def scanner(request: pytest.FixtureRequest) -> SecretScanner:
    return SecretScanner(Guardrails(secrets_confidence=request.param))


def key(d: Detection) -> tuple[str, int, int, float, str | None]:
    return (d.entity, d.start, d.end, d.score, d.rule)


def texts() -> list[str]:
    rng = random.Random(5)
    cases = [make(rng) for make in CASES.values() for _ in range(3)]
    cases += [SIDEKIQ, "url " + SIDEKIQ, SIDEKIQ + " ok", ADAFRUIT, "then " + ADAFRUIT + "\n"]
    out = cases + NEGATIVES + [PROSE]
    out += [s for case in cases for s in re.split(r"(?<=\s)(?=\S)", case) if s]  # a stream's segments
    out += [case[i : i + 40] for case in cases[::4] for i in range(0, len(case), 13)]  # keys cut apart
    out += [case.split()[-1] for case in cases] + ["adafruit key:", "=", "", " ", "\n", "é\ud800x"]
    return out


def test_batches_find_what_each_text_finds_alone(scanner: SecretScanner) -> None:
    corpus = texts()
    alone = {t: [key(d) for d in scanner.scan(t)] for t in corpus}
    assert sum(1 for found in alone.values() if found) >= 30  # the comparison is about real findings
    rng = random.Random(9)
    batches = [corpus[i : i + n] for n in (2, 3, 7) for i in range(0, len(corpus), n)]
    batches += [rng.sample(corpus, rng.randint(2, 12)) for _ in range(300)]
    # Prose around them, or only texts without a key: the one-call path is taken and must say nothing.
    batches += [[PROSE, t, PROSE] for t in corpus] + [[t for t in corpus if not alone[t]][i::20] for i in range(20)]
    for batch in batches:
        assert [[key(d) for d in found] for found in scanner.scan_many(batch)] == [alone[t] for t in batch], batch


class Counting:
    def __init__(self, native: Any) -> None:
        self.native, self.calls = native, 0

    def scan_bytes(self, data: bytes) -> Any:
        self.calls += 1
        return self.native.scan_bytes(data)


def test_texts_without_a_secret_take_one_call(scanner: SecretScanner, monkeypatch: pytest.MonkeyPatch) -> None:
    counting = Counting(scanner._native)
    monkeypatch.setattr(scanner, "_native", counting)
    assert scanner.scan_many([f"tok{i} " for i in range(10)] + [PROSE, "", NEGATIVES[0]]) == [[]] * 13
    assert counting.calls == 1


def test_a_joint_finding_sends_every_text_to_its_own_scan(scanner: SecretScanner) -> None:
    # The keyword ends one text and the key starts the next: joined they match, alone neither does.
    batch = ["please use the adafruit key:", "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6 thanks"]
    assert scanner.scan("\n".join(batch))  # joined, they hold a key
    assert scanner.scan_many(batch) == [scanner.scan(t) for t in batch] == [[], []]


def test_a_rule_anchored_at_the_text_end_is_checked_in_each_text(scanner: SecretScanner) -> None:
    # Found from the rules at start-up: today only this one has an edge anchor a newline does not satisfy.
    assert scanner._edges is not None
    assert [e.pattern for e in scanner._edges] == [p for p in (e.pattern for e in scanner._edges) if "contribsys" in p]
    assert len(scanner._edges) == 1
    found = scanner.scan_many(["url " + SIDEKIQ, PROSE])
    assert "betterleaks.sidekiq-sensitive-url" in {d.rule for d in found[0]}
