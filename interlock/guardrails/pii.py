"""PII detection with presidio-analyzer, in-process and offline.

The default engine is presidio's pattern recognizers (email, phone, credit card, US SSN, IBAN, IP,
crypto wallet, and more by name) driven by a lean loop instead of `AnalyzerEngine.analyze`: with the
`no_op` NLP engine there are no tokens for context words anyway, and the loop lets the slow
recognizers run only where they could match. Measured on a 2 KB message: presidio's engine with
these seven recognizers 3.3 ms (phone 2.0 ms, email 0.5 ms, IP 0.3 ms); gated as below, well under
1 ms. When the config names an installed spaCy model, its NER adds PERSON, LOCATION, ...

Nothing here reaches the network: presidio's email recognizer validates domains with tldextract,
whose default extractor downloads the public suffix list on first use; ours reads the snapshot
bundled with tldextract (tests/guardrails/test_pii.py proves it with sockets blocked).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

from interlock.config import BUILTIN_RECOGNIZERS, Guardrails


@dataclass(frozen=True, slots=True)
class Detection:
    """An entity found in a text: `text[start:end]`. Carries no value, only where it is."""

    entity: str
    start: int
    end: int
    score: float
    rule: str | None = None  # recognizer or secret rule that found it


#: Slow recognizers run only on windows around a cheap trigger: (trigger regex, margin in characters).
#: A window keeps a margin of context so that word boundaries and look-arounds see what they would
#: in the whole text.
_GATES: dict[str, tuple[str, int]] = {
    "EMAIL_ADDRESS": (r"[^\s@]*@[^\s@]+", 1),
    # E.164 numbers have at most 15 digits: longer digit runs (cards, IBANs) are not tried.
    "PHONE_NUMBER": (r"(?<![\w+])[+(]?\d[\d \t().\-/]{5,}\d\)?", 4),
    # An IPv6 address is at most 45 characters (with an embedded IPv4 and a prefix length).
    "IP_ADDRESS": (r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:", 48),
    "URL": (r"\S*[./]\S*", 1),
}

_NOT_PHONE = re.compile(
    r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}$|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}$|\d{1,3}(?:\.\d{1,3}){3}$|\d{3}-\d{2}-\d{4}$"
)

_PRESIDIO_LOCK = threading.Lock()


class PiiAnalyzer:
    """Finds PII in a text. Thread-safe after construction (recognizers hold compiled patterns only)."""

    def __init__(self, settings: Guardrails) -> None:
        with _PRESIDIO_LOCK:  # presidio's first import is not thread-safe (spaCy registries)
            # Optional dependency: presidio (the `guardrails` extra) and what it brings, loaded with the first
            # PII engine.
            from presidio_analyzer import Pattern, PatternRecognizer
            from presidio_analyzer import predefined_recognizers as predefined

        self.language = settings.language
        self.threshold = settings.score_threshold
        self._gated: list[tuple[Any, re.Pattern[str], int]] = []
        self._whole: list[Any] = []
        for entity in settings.entities:
            name = BUILTIN_RECOGNIZERS.get(entity)
            if name is None:
                known = ", ".join(sorted(BUILTIN_RECOGNIZERS))
                raise ValueError(f"guardrails.entities: unknown entity {entity!r}; built in: {known}")
            if entity == "EMAIL_ADDRESS":
                recognizer = _offline_email(predefined)
            elif entity == "PHONE_NUMBER":
                recognizer = _first_region_phone(predefined)
            elif entity == "CREDIT_CARD":
                # presidio's pattern predates Mastercard's 2-series (2221-2720, issued since 2017).
                two_series = Pattern(
                    "Mastercard 2-series (weak)", r"\b2[2-7]\d{2}[- ]?\d{4}[- ]?\d{4}[- ]?\d{4}\b", 0.3
                )
                recognizer = predefined.CreditCardRecognizer(
                    patterns=[*predefined.CreditCardRecognizer.PATTERNS, two_series]
                )
            else:
                recognizer = getattr(predefined, name)()
            gate = _GATES.get(entity)
            if gate is None:
                self._whole.append(recognizer)
            else:
                self._gated.append((recognizer, re.compile(gate[0]), gate[1]))
        for custom in settings.recognizers:
            patterns = [Pattern(f"{custom.entity}_{i}", p, custom.score) for i, p in enumerate(custom.patterns)]
            self._whole.append(
                PatternRecognizer(
                    supported_entity=custom.entity,
                    patterns=patterns or None,  # type: ignore[arg-type]
                    deny_list=list(custom.deny_list) or None,  # type: ignore[arg-type]
                    deny_list_score=custom.score,
                    supported_language=self.language,
                    name=f"custom:{custom.entity}",
                )
            )
        self._nlp: Any = None
        self._ner: Any = None
        if settings.spacy_model:
            self._load_spacy(settings.spacy_model)

    def _load_spacy(self, model: str) -> None:
        # Optional dependency: presidio (the `guardrails` extra) and what it brings, loaded with the first PII
        # engine. spaCy only with `spacy_model`.
        from presidio_analyzer.nlp_engine import SpacyNlpEngine
        from presidio_analyzer.predefined_recognizers import SpacyRecognizer

        # SpacyNlpEngine.load() downloads a model it cannot find; config validation made sure it is
        # installed (a package or a directory), so this only loads.
        engine = SpacyNlpEngine(models=[{"lang_code": self.language, "model_name": model}])
        engine.load()
        self._nlp = engine
        self._ner = SpacyRecognizer(supported_language=self.language)

    @property
    def entities(self) -> list[str]:
        found = [e for r in self._whole for e in r.supported_entities]
        found += [e for r, _, _ in self._gated for e in r.supported_entities]
        if self._ner is not None:
            found += self._ner.supported_entities
        return sorted(set(found))

    def analyze(self, text: str) -> list[Detection]:
        """Every entity found, with overlaps left in (the caller resolves them)."""
        if not text:
            return []
        found: list[Detection] = []
        for recognizer in self._whole:
            found += self._run(recognizer, text, 0)
        for recognizer, trigger, margin in self._gated:
            for start, end in _windows(trigger, text, margin, recognizer.name == "PhoneRecognizer"):
                found += self._run(recognizer, text[start:end], start)
        if self._nlp is not None:
            artifacts = self._nlp.process_text(text, self.language)
            found += self._run(self._ner, text, 0, artifacts)
        return found

    def _run(self, recognizer: Any, text: str, offset: int, artifacts: Any = None) -> list[Detection]:
        results = recognizer.analyze(text, recognizer.supported_entities, artifacts)
        return [
            Detection(r.entity_type, r.start + offset, r.end + offset, round(float(r.score), 3), recognizer.name)
            for r in results or ()
            if r.score >= self.threshold and r.end > r.start
        ]


def _windows(trigger: re.Pattern[str], text: str, margin: int, phone: bool = False) -> list[tuple[int, int]]:
    """Spans of `text` around the trigger's matches, widened by `margin` and merged."""
    spans: list[tuple[int, int]] = []
    for match in trigger.finditer(text):
        if phone and (not 7 <= sum(c.isdigit() for c in match.group()) <= 15 or _NOT_PHONE.match(match.group())):
            # E.164 numbers have 7 to 15 digits: cards and IBANs are not tried as phones, nor are
            # dates, IPv4 addresses and SSNs (each costs ~0.4 ms in python-phonenumbers to reject).
            continue
        start, end = max(0, match.start() - margin), min(len(text), match.end() + margin)
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
        else:
            spans.append((start, end))
    return spans


_TLD: Any = None


def _offline_email(predefined: Any) -> Any:
    """presidio's EmailRecognizer, validating domains against tldextract's bundled suffix list."""
    # Optional dependency: presidio (the `guardrails` extra) and what it brings, loaded with the first PII
    # engine.
    import tldextract

    global _TLD
    if _TLD is None:
        # suffix_list_urls=() never fetches; cache_dir=None never writes; the bundled snapshot is used.
        _TLD = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)
    extract = _TLD

    class OfflineEmailRecognizer(predefined.EmailRecognizer):  # type: ignore[misc]
        def validate_result(self, pattern_text: str) -> bool:
            return bool(extract(pattern_text).fqdn)

    return OfflineEmailRecognizer(name="EmailRecognizer")


def _first_region_phone(predefined: Any) -> Any:
    """presidio's PhoneRecognizer, stopping at the first region that finds a number in a window.

    presidio runs python-phonenumbers' matcher once per region (8 by default), about 0.25 ms each per
    candidate; a number that one region finds is found, with the same span, by the others, so the
    rest add nothing but time.
    """
    # Optional dependency: presidio (the `guardrails` extra) and what it brings, loaded with the first PII
    # engine.
    import phonenumbers

    class FirstRegionPhoneRecognizer(predefined.PhoneRecognizer):  # type: ignore[misc]
        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            for region in self.supported_regions:
                found = [
                    self._get_recognizer_result(match, text, region, nlp_artifacts)
                    for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=self.leniency)
                ]
                if found:
                    return found
            return []

    return FirstRegionPhoneRecognizer(name="PhoneRecognizer")


__all__ = ["Detection", "PiiAnalyzer"]
