"""PII detection with presidio-analyzer, in-process and offline.

The default engine is presidio's pattern recognizers (email, phone, credit card, US SSN, IBAN, IP,
crypto wallet, and more by name) driven by a lean loop instead of `AnalyzerEngine.analyze`: with the
`no_op` NLP engine there are no tokens for context words anyway, and the loop lets the slow
recognizers run only where they could match. Measured on a 2 KB message: presidio's engine with
these seven recognizers 3.3 ms (phone 2.0 ms, email 0.5 ms, IP 0.3 ms); gated as below, well under
1 ms. When the config names an installed spaCy model, its NER adds PERSON, LOCATION, ...

Every built-in recognizer also has a trigger (`_TRIGGERS`, `_GATES`): a cheap expression that matches
wherever one of its patterns could, so that a text none of them matches costs one scan and a
recognizer runs only on texts it could find something in (a streamed word like `tok3` used to run
four recognizers, ~55 µs; now ~5 µs). Recall is unchanged by construction (each trigger is a part
every one of the recognizer's patterns requires, in presidio's own regex engine and flags), checked
against the patterns' fingerprints at start-up, and by tests/guardrails/test_pii_triggers.py.

Nothing here reaches the network: presidio's email recognizer validates domains with tldextract,
whose default extractor downloads the public suffix list on first use; ours reads the snapshot
bundled with tldextract (tests/guardrails/test_pii.py proves it with sockets blocked).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from interlock.config import BUILTIN_RECOGNIZERS, Guardrails

if TYPE_CHECKING:
    import regex


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

#: Recognizers that run on the whole text only when their trigger matches somewhere in it:
#: (trigger, fingerprint of the patterns it was derived from). Each trigger is a part that every one
#: of the recognizer's patterns requires, with the same classes (or wider ones), and it is compiled
#: with the recognizer's own engine (`regex`) and flags: a text the trigger does not match cannot
#: match any pattern, so skipping the recognizer there loses nothing. Python's `re` would not do:
#: its `\d` (Unicode 14 in Python 3.11) misses 110 digits that presidio's `regex` matches.
#: A recognizer whose patterns no longer have the fingerprint (presidio changed them) runs on every
#: text, with a warning: the trigger has to be derived again (the test of the fingerprints fails too).
_TRIGGERS: dict[str, tuple[str, str]] = {
    # `\d{4}[- ]?\d{3,4}...`: four digits, then three; the Mastercard 2-series pattern added below too.
    "CREDIT_CARD": (r"\d{4}[- ]?\d{3}", "abd3d1bd288ddc23"),
    # `[0-9]{5}-[0-9]{4}`, `[0-9]{3}-[0-9]{6}`, `[0-9]{3}-[0-9]{2}-...`, `[0-9]{9}`, `[0-9]{3}[- .][0-9]{2}...`
    "US_SSN": (r"[0-9]{3}[- .]?[0-9]{2}", "579d95a3ac778964"),
    # `(?<![A-Z0-9])([A-Z]{2}[0-9]{2}(?:[ -]?[A-Z0-9]{4}){2,6})...` (case-sensitive, as the trigger);
    # the look-behind lets the scan start at the digits, ~10x faster over prose than at every letter.
    "IBAN_CODE": (r"(?<=[A-Z]{2})[0-9]{2}[ -]?[A-Z0-9]{4}", "1fdb0622b8bc5622"),
    # `(bc1|[13])[a-zA-HJ-NP-Z0-9]{25,59}`: bc1 ends in 1.
    "CRYPTO": (r"[13][a-zA-HJ-NP-Z0-9]{25}", "cfbc4c3cb6511926"),
    # Every alternative starts `9\d{2}[- ]?` and two digits (`5\d`, `6[0-5]`, ..., `9([0-2]|[4-9])`).
    "US_ITIN": (r"9\d{2}[- ]?\d{2}", "34f262ba34920849"),
    # `([0-9]{3})[- ]?([0-9]{3})[- ]?([0-9]{4})`
    "UK_NHS": (r"[0-9]{3}[- ]?[0-9]{3}", "32ac490f4040e240"),
    # `[0-9]{8,17}`
    "US_BANK_NUMBER": (r"[0-9]{8}", "d8bcdca0010e7246"),
    # `[0-9]{9}` and `[A-Z][0-9]{8}`
    "US_PASSPORT": (r"[0-9]{8}", "c5325fe9ef3ceba1"),
    # `[...]{1}[a-zA-Z]{1}\d{7}` and `[...]{1}9\d{7}`
    "MEDICAL_LICENSE": (r"\d{7}", "d777ca8ccc8bb2ae"),
    # `... ?([0-9]{2}) ?([0-9]{2}) ?([0-9]{2}) ?([a-dA-D]{1})`
    "UK_NINO": (r"[0-9]{2} ?[0-9]{2}", "d5bafd06f66afb5a"),
    # `[0-9A-Fa-f]{2}([:-])(?:[0-9A-Fa-f]{2}\1){4}...` and `[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\....`
    "MAC_ADDRESS": (r"[0-9A-Fa-f]{2}[:-][0-9A-Fa-f]{2}|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}", "f819f996c1923170"),
    # Every one of its 13 patterns has a digit (`\d`, `[0-9]` or `[1-9]`).
    "DATE_TIME": (r"\d", "16eb463de5cb81d5"),
    # Every alternative of both patterns has a `[0-9]`.
    "US_DRIVER_LICENSE": (r"[0-9]", "019cedcc2d6d6779"),
}

#: The gated recognizers' patterns, fingerprinted as the triggers' are (the phone recognizer has
#: none: python-phonenumbers finds numbers, and its gate follows E.164). A changed one runs ungated.
_GATE_FINGERPRINTS = {"EMAIL_ADDRESS": "4367eeb8362477e4", "IP_ADDRESS": "4cc16a622a2c4631", "URL": "7599532c06bca413"}

#: A character one of which every match of a trigger or gate holds: a text with none of them needs
#: no recognizer at all, whatever the configuration (one scan, in the same engine).
_NEEDS = {"EMAIL_ADDRESS": "@", "IP_ADDRESS": r"\d:", "URL": "./", "MAC_ADDRESS": r":\-.", "PHONE_NUMBER": r"\d"}

log = logging.getLogger("interlock.guardrails")


def fingerprint(recognizer: Any) -> str | None:
    """Of a pattern recognizer's flags and patterns (None: it has none)."""
    patterns = getattr(recognizer, "patterns", None)
    if not patterns:
        return None
    parts = [str(int(recognizer.global_regex_flags)), *(p.regex for p in patterns)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


_NOT_PHONE = re.compile(
    r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}$|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}$|\d{1,3}(?:\.\d{1,3}){3}$|\d{3}-\d{2}-\d{4}$"
)

_PRESIDIO_LOCK = threading.Lock()

#: Gated recognizers' windows remembered with their findings (`PiiAnalyzer._window`), and the longest
#: one remembered: a window is a candidate and a few characters around it (~20-60 characters).
WINDOW_CACHE = 4096
WINDOW_CACHE_CHARS = 256

#: One of each built-in entity, and a number no phone region takes (so that every region loads).
_WARM_UP = (
    "jane@example.com +1 415 736 5000, 000 000 0000; 4539 1488 0343 6467 GB82 WEST 1234 5698 7654 32 "
    "536-22-1234 10.20.30.40 2001:db8::1 1BoatSLRHtKNngkdXEeobR76b53LETtpyT https://example.com "
    "00:1A:2B:3C:4D:5E 2024-01-15 912-70-1234 943 476 5919 AB123456C"
)


class PiiAnalyzer:
    """Finds PII in a text. Thread-safe after construction (recognizers hold compiled patterns only)."""

    def __init__(self, settings: Guardrails) -> None:
        with _PRESIDIO_LOCK:  # presidio's first import is not thread-safe (spaCy registries)
            # Optional dependency: presidio (the `guardrails` extra) and what it brings, loaded with the first
            # PII engine; `regex` is presidio's regular expression engine (the triggers use it too).
            import regex
            from presidio_analyzer import Pattern, PatternRecognizer
            from presidio_analyzer import predefined_recognizers as predefined

        self.language = settings.language
        self.threshold = settings.score_threshold
        self._gated: list[tuple[Any, re.Pattern[str], int]] = []
        # Run on the whole text: the built-ins when their trigger matches it, the rest (custom
        # recognizers, a built-in whose patterns changed) always.
        self._whole: list[tuple[Any, regex.Pattern[str] | None]] = []
        needs: set[str] = set()
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
            derived = _TRIGGERS[entity][1] if gate is None else _GATE_FINGERPRINTS.get(entity)
            if derived is not None and fingerprint(recognizer) != derived:
                log.warning(
                    "guardrails: presidio's %s patterns are not those its trigger was derived from; "
                    "it runs on every text (slower, nothing missed) until the trigger is derived again",
                    entity,
                )
                self._whole.append((recognizer, None))
                needs.add("")  # every text is analysed
            elif gate is None:
                self._whole.append((recognizer, regex.compile(_TRIGGERS[entity][0], recognizer.global_regex_flags)))
                needs.add(_NEEDS.get(entity, r"\d"))
            else:
                self._gated.append((recognizer, re.compile(gate[0]), gate[1]))
                needs.add(_NEEDS[entity])
        for custom in settings.recognizers:
            # A custom pattern or word can be anything: no trigger, it runs on every text.
            needs.add("")
            patterns = [Pattern(f"{custom.entity}_{i}", p, custom.score) for i, p in enumerate(custom.patterns)]
            self._whole.append(
                (
                    PatternRecognizer(
                        supported_entity=custom.entity,
                        patterns=patterns or None,  # type: ignore[arg-type]
                        deny_list=list(custom.deny_list) or None,  # type: ignore[arg-type]
                        deny_list_score=custom.score,
                        supported_language=self.language,
                        name=f"custom:{custom.entity}",
                    ),
                    None,
                )
            )
        self._nlp: Any = None
        self._ner: Any = None
        self._windows: OrderedDict[tuple[int, str], tuple[Detection, ...]] = OrderedDict()
        self._windows_lock = threading.Lock()  # analysed on the loop and in worker threads
        if settings.spacy_model:
            self._load_spacy(settings.spacy_model)
            needs.add("")  # NER finds names in any text
        #: One scan that every text holding something to find passes (None: every text may).
        self._needs = None if "" in needs or not needs else regex.compile("[" + "".join(sorted(needs)) + "]")
        self._nothing = not needs  # no recognizer at all (an empty entity list)
        # The first use of a recognizer loads what it needs: tldextract's suffix trie (0.4 s),
        # python-phonenumbers' metadata per region (10-30 ms each), presidio's patterns compile.
        # Done here, where the engine is built (off the event loop; `/ready` waits for it), the
        # first call holding an e-mail address no longer stalls every call on the loop.
        self.analyze(_WARM_UP, triggers=False)

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
        found = [e for r, _ in self._whole for e in r.supported_entities]
        found += [e for r, _, _ in self._gated for e in r.supported_entities]
        if self._ner is not None:
            found += self._ner.supported_entities
        return sorted(set(found))

    def analyze(self, text: str, triggers: bool = True) -> list[Detection]:
        """Every entity found, with overlaps left in (the caller resolves them). `triggers=False`:
        every recognizer runs on the whole text, whatever its trigger (the reference the tests
        hold the triggers to: the same findings)."""
        if not text or self._nothing or (triggers and self._needs is not None and self._needs.search(text) is None):
            return []
        found: list[Detection] = []
        for recognizer, trigger in self._whole:
            if trigger is None or not triggers or trigger.search(text) is not None:
                found += self._run(recognizer, text, 0)
        for index, (recognizer, trigger, margin) in enumerate(self._gated):
            for start, end in _windows(trigger, text, margin, recognizer.name == "PhoneRecognizer"):
                found += self._window(index, recognizer, text[start:end], start)
        if self._nlp is not None:
            artifacts = self._nlp.process_text(text, self.language)
            found += self._run(self._ner, text, 0, artifacts)
        return found

    def _window(self, index: int, recognizer: Any, window: str, offset: int) -> list[Detection]:
        """A gated recognizer's findings in one window, remembered by the window's text: a window
        holds a few words around a candidate, and the same one (a phone number, an account number,
        an address in every message) recurs in new texts. A phone window costs 0.25 ms a region in
        python-phonenumbers, 2 ms when no region of 8 takes it. The recognizers are functions of
        the text alone (no context words: the `no_op` NLP engine), so a remembered result is the
        result."""
        if len(window) > WINDOW_CACHE_CHARS:
            return self._run(recognizer, window, offset)
        key = (index, window)
        with self._windows_lock:
            hit = self._windows.get(key)
            if hit is not None:
                self._windows.move_to_end(key)
        if hit is None:
            hit = tuple(self._run(recognizer, window, 0))
            with self._windows_lock:
                self._windows[key] = hit
                if len(self._windows) > WINDOW_CACHE:
                    self._windows.popitem(last=False)
        if not offset:
            return list(hit)
        return [Detection(d.entity, d.start + offset, d.end + offset, d.score, d.rule) for d in hit]

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
