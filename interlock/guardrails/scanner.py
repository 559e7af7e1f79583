"""What a text holds and what becomes of it: the detector (PII recognizers and the secret scanner), and
the cached analysis and rewriting of texts the guardrails stage (`stage.py`) inherits.

Two caches keep an agent's history, re-sent every turn, from being analysed or rewritten again: the
detections by content hash (`cache_texts`), and what became of each request text under one action
table (`SEEN_CHARS`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from interlock.core.actions import GuardrailActions
from interlock.guardrails.pii import Detection, PiiAnalyzer
from interlock.guardrails.redaction import (
    Applied,
    Hasher,
    SessionVault,
    actions_for,
    replacement,
    resolve_overlaps,
    rewrite,
)
from interlock.guardrails.secrets import SecretScanner

if TYPE_CHECKING:
    from interlock.config import Guardrails as GuardrailSettings

log = logging.getLogger("interlock.guardrails")

#: Uncached text longer than this is analysed in a worker thread. Measured: about 0.15 ms per KB of
#: plain prose, more per candidate entity (docs/guardrails.md); a thread hop costs ~0.1 ms.
THREAD_CHARS = 4096
#: Characters of request texts (and their rewritten forms) remembered with what became of them, so
#: that history re-sent every turn is neither hashed nor rewritten again: a dict lookup by the text
#: (Python's own string hash, 0.6 µs a 2 KB turn) instead of BLAKE2b (3.3 µs) and the rewriting
#: (~10 µs a turn with two entities). Texts that fell out are found in the detection cache.
SEEN_CHARS = 8_000_000


class Detector:
    """PII recognizers and the secret scanner behind one call: non-overlapping detections."""

    def __init__(self, settings: GuardrailSettings) -> None:

        # No PII entity configured (the embedded default scans for secrets only): presidio is not even loaded.
        wants_pii = bool(settings.entities or settings.recognizers or settings.spacy_model)
        self.pii = PiiAnalyzer(settings) if wants_pii else None
        self.secrets = SecretScanner(settings) if settings.secrets else None

    def detect(self, text: str, before: str = "", secrets: bool = True) -> tuple[Detection, ...]:
        """Detections in `text`. `before`: the text just before it, already released (a stream), in
        which secret rules may find the words they need (`heroku api key: <uuid>`); a secret that
        starts there and ends in `text` is reported from the start of `text`. `secrets=False`: the
        PII alone (the caller scans for secrets itself, several texts in one call)."""
        # The analyzer skips what cannot hold an entity itself (its triggers, pii.py).
        found = [] if self.pii is None else self.pii.analyze(text)
        if self.secrets is not None and secrets:
            if before:
                n = len(before)
                found += [
                    Detection(d.entity, max(0, d.start - n), d.end - n, d.score, d.rule)
                    for d in self.secrets.scan(before + text)
                    if d.end > n
                ]
            else:
                found += self.secrets.scan(text)
        return tuple(resolve_overlaps(found))

    def detect_many(self, texts: Sequence[str]) -> list[tuple[Detection, ...]]:
        """`[detect(t) for t in texts]`, the secret rules run in one kingfisher call for all of them
        (a call costs ~15-37 µs whatever its length; `SecretScanner.scan_many`)."""
        secrets = self.secrets.scan_many(texts) if self.secrets is not None else [[] for _ in texts]
        pii = self.pii
        return [
            tuple(resolve_overlaps([*(pii.analyze(text) if pii is not None else ()), *found]))
            for text, found in zip(texts, secrets, strict=True)
        ]


_DETECTORS: dict[str, Detector] = {}
_DETECTORS_LOCK = threading.Lock()


def detector_for(settings: GuardrailSettings) -> Detector:
    """One detector per engine configuration per process (building one takes about a second)."""
    key = settings.model_dump_json(
        include={"entities", "recognizers", "score_threshold", "spacy_model", "language", "secrets"}
        | {"secrets_confidence", "secrets_cache_dir"}
    )
    with _DETECTORS_LOCK:
        detector = _DETECTORS.get(key)
        if detector is None:
            detector = _DETECTORS[key] = Detector(settings)
        return detector


@dataclass(slots=True)
class _Seen:
    """What became of a request text under one action table: the actions applied and, once it was
    redacted, its upstream and stored forms and the placeholders it was given."""

    applied: tuple[Applied, ...]
    upstream: str | None = None
    stored: str = ""
    placeholders: tuple[tuple[str, str, str], ...] = ()  # (entity, value, placeholder), in text order


class Scanner:
    """The guardrails' analysis: one detector (built off the loop), the detection cache and the seen
    cache. The stage (`stage.Guardrails`) extends it with the hooks, so the stream guard and the
    scrub stage ask one object for the detector, the hold-back and the replacements."""

    def __init__(self, config: GuardrailSettings) -> None:
        self.config = config
        self.hasher = Hasher(config.hash_key)
        self._cache: OrderedDict[bytes, tuple[Detection, ...]] = OrderedDict()
        self._seen: OrderedDict[tuple[str, tuple[tuple[str, str], ...]], _Seen] = OrderedDict()
        self._seen_chars = 0
        self._detector: Detector | None = None
        #: Set once the engine the configuration asks for is built (or failed to build): `/ready` waits on it.
        self.warmed = threading.Event()

    def _warm(self) -> None:
        try:
            self._detector = detector_for(self.config)
        except Exception:  # noqa: BLE001 - reported again, and failed closed, on the first call
            log.exception("building the guardrails engine failed")
        finally:
            self.warmed.set()

    async def detector(self) -> Detector:
        if self._detector is None:
            self._detector = await asyncio.to_thread(detector_for, self.config)
        return self._detector

    def detector_now(self) -> Detector | None:
        return self._detector

    async def analyze(self, texts: Sequence[str]) -> list[tuple[Detection, ...]]:
        """Detections per text; texts seen before (by content hash) are not analysed again."""
        results: list[tuple[Detection, ...] | None] = [None] * len(texts)
        missing: list[tuple[int, bytes, str]] = []
        cache = self._cache
        for i, text in enumerate(texts):
            key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
            hit = cache.get(key)
            if hit is None:
                missing.append((i, key, text))
            else:
                cache.move_to_end(key)
                results[i] = hit
        if missing:
            detector = await self.detector()
            pending = [text for _, _, text in missing]
            if sum(len(t) for t in pending) > THREAD_CHARS:
                found = await asyncio.to_thread(detector.detect_many, pending)
            else:
                found = detector.detect_many(pending)
            for (i, key, _), detections in zip(missing, found, strict=True):
                results[i] = detections
                if self.config.cache_texts:
                    cache[key] = detections
            while len(cache) > self.config.cache_texts:
                cache.popitem(last=False)
        return [r or () for r in results]

    async def request_texts(self, texts: Sequence[str], actions: GuardrailActions) -> list[_Seen]:
        """What becomes of each request text under these actions; texts seen before are looked up by
        the text itself (the seen cache), others analysed (or found in the detection cache)."""
        table = tuple(sorted(actions.request.items()))
        seen = self._seen
        entries: list[_Seen | None] = []
        for text in texts:
            entry = seen.get((text, table))
            if entry is not None:
                seen.move_to_end((text, table))
            entries.append(entry)
        missing = [i for i, entry in enumerate(entries) if entry is None]
        if missing:
            found = await self.analyze([texts[i] for i in missing])
            action = lambda entity: actions.action_for(entity, "request")  # noqa: E731
            for i, detections in zip(missing, found, strict=True):
                entry = entries[i] = _Seen(tuple(actions_for(detections, action)) if detections else ())
                if self.config.cache_texts:
                    seen[(texts[i], table)] = entry
                    self._seen_chars += len(texts[i])
            self._trim_seen()
        return [e for e in entries if e is not None]

    def rewritten(self, entry: _Seen, text: str, vault: SessionVault | None) -> _Seen:
        """`entry` with the text's upstream and stored forms: rewritten once, then reused as long as
        the session's vault gives its values the same placeholders (asking it also keeps them
        recently used, as rewriting would)."""
        if entry.upstream is not None:
            placeholders = entry.placeholders  # none: the text's rewriting does not depend on the vault
            if not placeholders or (
                vault is not None and all(vault.placeholder(e, v) == p for e, v, p in placeholders)
            ):
                return entry
            self._seen_chars -= len(entry.upstream) + len(entry.stored)
        issued: list[tuple[str, str, str]] = []
        hasher = self.hasher

        def upstream(item: Applied, value: str) -> str | None:
            new = replacement(item.detection.entity, value, item.action, vault, hasher, reversible=True)
            if item.action == "redact" and new is not None:
                issued.append((item.detection.entity, value, new))
            return new

        entry.upstream = rewrite(text, entry.applied, upstream)
        entry.stored = rewrite(text, entry.applied, self.stored(vault, True))
        entry.placeholders = tuple(issued)
        self._seen_chars += len(entry.upstream) + len(entry.stored)
        self._trim_seen()
        return entry

    def _trim_seen(self) -> None:
        seen = self._seen
        while self._seen_chars > SEEN_CHARS and seen:
            (text, _), old = seen.popitem(last=False)
            self._seen_chars -= len(text) + (len(old.upstream) + len(old.stored) if old.upstream is not None else 0)

    def replace(self, vault: SessionVault | None, reversible: bool) -> Any:
        def upstream(item: Applied, value: str) -> str | None:
            return replacement(item.detection.entity, value, item.action, vault, self.hasher, reversible=reversible)

        return upstream

    def stored(self, vault: SessionVault | None, reversible: bool) -> Any:
        """Replacement for the stored copy: as upstream, and blocked or logged values masked too."""

        def store(item: Applied, value: str) -> str:
            new = replacement(item.detection.entity, value, item.action, vault, self.hasher, reversible=reversible)
            return f"<{item.detection.entity}>" if new is None else new

        return store


__all__ = ["SEEN_CHARS", "THREAD_CHARS", "Detector", "Scanner", "detector_for"]
