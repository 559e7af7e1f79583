"""The gated recognizers' windows (phone, e-mail, IP, URL) are remembered by their text: a window seen
before costs a lookup (a phone window python-phonenumbers rejects in all 8 regions costs ~2 ms), and
the findings are exactly those of running the recognizer, at the window's offset in each text."""

from __future__ import annotations

from typing import Any

import pytest

from bench.pii_corpus import corpus
from interlock.config import BUILTIN_RECOGNIZERS, Guardrails
from interlock.guardrails import pii
from interlock.guardrails.pii import PiiAnalyzer

ALL = Guardrails(entities=tuple(BUILTIN_RECOGNIZERS), score_threshold=0)


@pytest.fixture(scope="module")
def analyzer() -> PiiAnalyzer:
    return PiiAnalyzer(ALL)


def test_remembered_windows_find_what_the_recognizers_find(analyzer: PiiAnalyzer) -> None:
    docs = [d.text for d in corpus(40, seed=3)]
    texts = docs + [w for doc in docs for w in doc.split(". ")]  # the same windows in other texts
    texts += [f"iban GB82 WEST 1234 5698 7654 32 and {i}" for i in range(3)]  # a window no region takes
    fresh = []
    for text in texts:
        analyzer._windows.clear()
        fresh.append(sorted(analyzer.analyze(text), key=repr))
    remembered = [sorted(analyzer.analyze(text), key=repr) for text in texts]
    assert remembered == fresh
    assert sum(1 for found in fresh if any(d.entity == "PHONE_NUMBER" for d in found)) >= 20


def test_a_window_seen_before_runs_no_recognizer(analyzer: PiiAnalyzer, monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[str] = []
    run = PiiAnalyzer._run

    def spy(self: PiiAnalyzer, recognizer: Any, text: str, *args: Any) -> Any:
        runs.append(recognizer.name)
        return run(self, recognizer, text, *args)

    monkeypatch.setattr(PiiAnalyzer, "_run", spy)
    analyzer._windows.clear()
    first = analyzer.analyze("Please call +1 415 555 0134 today.")
    assert "PhoneRecognizer" in runs
    runs.clear()
    again = analyzer.analyze("Then, said Ann, call +1 415 555 0134 today.")  # the same window, elsewhere
    assert "PhoneRecognizer" not in runs
    shift = len("Then, said Ann, call ") - len("Please call ")
    phones = [(d.start, d.end) for d in first if d.entity == "PHONE_NUMBER"]
    assert phones and [(d.start - shift, d.end - shift) for d in again if d.entity == "PHONE_NUMBER"] == phones


def test_the_windows_remembered_are_bounded(analyzer: PiiAnalyzer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pii, "WINDOW_CACHE", 5)
    for i in range(20):
        analyzer.analyze(f"call 0{i:02d} 736 5000 or mail a{i}@example.com")
    assert len(analyzer._windows) <= 5
