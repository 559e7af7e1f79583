"""The PII triggers (pii.py `_TRIGGERS`, `_GATES`, `_NEEDS`) skip only what cannot be found: with them
the analyzer finds exactly what it finds running every recognizer on every text, entity by entity,
on the recall corpus (whole documents, the word-sized segments a stream releases, and slices that
cut entities apart) and on targeted cases per entity."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable

import pytest

from bench.pii_corpus import corpus
from interlock.config import BUILTIN_RECOGNIZERS, Guardrails
from interlock.guardrails import pii
from interlock.guardrails.pii import Detection, PiiAnalyzer

#: Every built-in entity; threshold 0 so that even presidio's "very weak" findings are compared.
ALL = Guardrails(entities=tuple(BUILTIN_RECOGNIZERS), score_threshold=0)


@pytest.fixture(scope="module")
def analyzer() -> PiiAnalyzer:
    return PiiAnalyzer(ALL)


def key(d: Detection) -> tuple[str, int, int, float, str | None]:
    return (d.entity, d.start, d.end, d.score, d.rule)


def differences(analyzer: PiiAnalyzer, texts: Iterable[str]) -> tuple[Counter[str], dict[str, list[str]]]:
    """Findings per entity without the triggers, and per entity what the triggers changed."""
    reference: Counter[str] = Counter()
    changed: dict[str, list[str]] = {}
    for text in texts:
        without = Counter(key(d) for d in analyzer.analyze(text, triggers=False))
        with_ = Counter(key(d) for d in analyzer.analyze(text))
        reference.update(k[0] for k in without.elements())
        for k in (without - with_) + (with_ - without):
            changed.setdefault(k[0], []).append(f"{text[k[1] : k[2]]!r} in {text!r}")
    return reference, changed


def segments(text: str) -> list[str]:
    """About a word each, with its space, as a stream releases them (docs/guardrails.md)."""
    return [s for s in re.split(r"(?<=\s)(?=\S)", text) if s]


def test_the_corpus_finds_the_same_with_and_without_triggers(analyzer: PiiAnalyzer) -> None:
    docs = [d.text for d in corpus(60, seed=11)]
    texts = docs + [s for doc in docs for s in segments(doc)]
    # Slices of 24 characters every 5 cut entities apart: a trigger must not miss what a pattern
    # still finds in a piece (a card's first 13 digits, an IBAN's first groups).
    texts += [doc[i : i + 24] for doc in docs[:15] for i in range(0, len(doc), 5)]
    reference, changed = differences(analyzer, texts)
    assert changed == {}
    # The corpus plants these: the comparison is about real findings, not two empty lists.
    planted = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS", "CRYPTO")
    assert all(reference[e] >= 20 for e in planted), reference
    assert reference["DATE_TIME"] and reference["URL"] and reference["US_BANK_NUMBER"], reference


#: Per entity, texts presidio finds it in (each checked to be found at all, so the case means something).
CASES = {
    "EMAIL_ADDRESS": ["mail jane.roe@acme-corp.io today", "a.b+c@mail.example.co.uk"],
    "PHONE_NUMBER": ["call +1 415 736 5000 now", "ring (020) 7946 0958", "tel 030 901820"],
    "CREDIT_CARD": [
        "pay 4539 1488 0343 6467",
        "card 4539148803436467.",
        "mc 2221-0000-0000-0009",
        "amex 378282246310005",
    ],
    "US_SSN": ["SSN 536-22-1234", "ssn 536 22 1234", "id 536221234"],
    "IBAN_CODE": ["GB82 WEST 1234 5698 7654 32", "to DE89370400440532013000 please", "FR1420041010050500013M02606"],
    "IP_ADDRESS": ["host 10.20.30.40", "v6 2001:db8::8a2e:370:7334", "::ffff:10.0.0.1", "loopback ::1"],
    "CRYPTO": ["wallet 1BoatSLRHtKNngkdXEeobR76b53LETtpyT", "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"],
    "URL": ["see https://intranet.acme-corp.io/x", "www.example.com"],
    "MAC_ADDRESS": ["nic 00:1A:2B:3C:4D:5E", "nic 00-1a-2b-3c-4d-5e", "cisco 001a.2b3c.4d5e"],
    # Kawi digits (Unicode 15): presidio's `regex` takes them as `\d`, Python 3.11's `re` does not.
    "DATE_TIME": [
        "on 2024-01-15",
        "by 15/01/2024",
        "in JAN-2024",
        "2024-01-15T10:30:00Z",
        "in JAN-\U00011f52\U00011f50\U00011f52\U00011f54",
    ],
    "US_PASSPORT": ["passport 912803456", "passport A12345678"],
    "US_DRIVER_LICENSE": ["license A1234567", "dl 123456789"],
    "US_BANK_NUMBER": ["account 12345678901"],
    "US_ITIN": ["itin 912-70-1234", "itin 912701234"],
    "UK_NHS": ["nhs 943 476 5919", "nhs 9434765919"],
    "UK_NINO": ["nino AB 12 34 56 C", "nino AB123456C"],
    "MEDICAL_LICENSE": ["dea AB1234563", "dea A91234563"],
}


def test_every_builtin_entity_has_cases() -> None:
    assert set(CASES) == set(BUILTIN_RECOGNIZERS)


@pytest.mark.parametrize("entity", sorted(CASES))
def test_each_entity_is_found_with_its_trigger(analyzer: PiiAnalyzer, entity: str) -> None:
    # Each case alone, inside words (no boundary), and with non-ASCII digits where presidio's `\d` takes them.
    texts = [t for case in CASES[entity] for t in (case, f"x{case}y", case.translate(ARABIC_INDIC))]
    for case in CASES[entity]:
        assert entity in {d.entity for d in analyzer.analyze(case, triggers=False)}, case
    reference, changed = differences(analyzer, texts)
    assert changed == {}
    assert reference[entity] >= len(CASES[entity])


ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def test_text_without_a_candidate_runs_no_recognizer(monkeypatch: pytest.MonkeyPatch) -> None:
    analyzer = PiiAnalyzer(Guardrails())  # the default entities
    ran: list[str] = []
    real = PiiAnalyzer._run

    def spy(self: PiiAnalyzer, recognizer: object, *args: object) -> list[Detection]:
        ran.append(getattr(recognizer, "name", "?"))
        return real(self, recognizer, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(PiiAnalyzer, "_run", spy)
    # The bench's streamed words: a digit each, but no recognizer's pattern could match.
    for word in ("tok3 ", "tok10 ", "Hello there, ", "v2 "):
        assert analyzer.analyze(word) == []
    assert ran == []
    analyzer.analyze("pay 4539 1488 0343 6467")
    assert "CreditCardRecognizer" in ran and "IbanRecognizer" not in ran


def test_the_triggers_were_derived_from_the_installed_patterns(caplog: pytest.LogCaptureFixture) -> None:
    # A presidio upgrade that changes a recognizer's patterns fails here: derive its trigger again.
    with caplog.at_level(logging.WARNING, logger="interlock.guardrails"):
        PiiAnalyzer(ALL)
    assert [r for r in caplog.records if "trigger" in r.getMessage()] == []


def test_a_recognizer_whose_patterns_changed_runs_on_every_text(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A trigger that never matches, recorded for other patterns: the fingerprint check must not trust it.
    monkeypatch.setitem(pii._TRIGGERS, "CREDIT_CARD", (r"(?!)", "0" * 16))
    monkeypatch.setitem(pii._GATE_FINGERPRINTS, "EMAIL_ADDRESS", "0" * 16)
    with caplog.at_level(logging.WARNING, logger="interlock.guardrails"):
        analyzer = PiiAnalyzer(Guardrails(entities=("CREDIT_CARD", "EMAIL_ADDRESS")))
    assert sum("trigger" in r.getMessage() for r in caplog.records) == 2
    text = "pay 4539 1488 0343 6467, mail jane.roe@acme-corp.io"
    assert sorted(d.entity for d in analyzer.analyze(text)) == ["CREDIT_CARD", "EMAIL_ADDRESS"]


def test_custom_recognizers_run_on_every_text() -> None:
    from interlock.config import CustomRecognizer

    analyzer = PiiAnalyzer(
        Guardrails(
            entities=("CREDIT_CARD",),
            recognizers=(CustomRecognizer(entity="PROJECT", deny_list=("Nightjar",)),),
        )
    )
    assert [d.entity for d in analyzer.analyze("Nightjar ")] == ["PROJECT"]


def test_the_suffix_list_is_loaded_with_the_engine_not_by_the_first_call(monkeypatch: pytest.MonkeyPatch) -> None:
    # Loading it takes ~0.4 s, which the first call holding an e-mail address spent on the event loop.
    import tldextract.tldextract

    monkeypatch.setattr(pii, "_TLD", None)
    analyzer = PiiAnalyzer(Guardrails(entities=("EMAIL_ADDRESS",)))

    def no_more_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the suffix list was loaded by a call, not with the engine")

    monkeypatch.setattr(tldextract.tldextract._PublicSuffixListTLDExtractor, "__init__", no_more_loading)
    assert [d.entity for d in analyzer.analyze("mail jane.roe@acme-corp.io")] == ["EMAIL_ADDRESS"]
