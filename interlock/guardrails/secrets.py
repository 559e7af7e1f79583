"""Secrets detection (API keys, tokens, private keys, passwords in URLs) with kingfisher's rule set.

kingfisher-secret-scanner (Rust, vectorscan; 488 rules in 1.5.0) was chosen over detect-secrets: on
our corpus it found 50 of 60 realistic keys with no false positive in 0.02 ms per 2 KB, where
detect-secrets found all 60 but flagged every negative (its entropy plugins fire on any long token)
and took 70 ms per 2 KB. The two misses are covered here (see `_SUPPLEMENT`). docs/guardrails.md has
the numbers. kingfisher's scanning never uses the network; its credential *validation* does, and is
never called.
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING, Any

from interlock.guardrails.pii import Detection

if TYPE_CHECKING:
    from interlock.config import Guardrails

#: kingfisher's confidence → a detection score.
_SCORES = {"high": 1.0, "medium": 0.9, "low": 0.6}

#: Keys kingfisher does not report alone. Its AWS access key rule needs the secret key within five
#: lines (to validate the pair); a bare access key ID in a prompt is still a credential leak.
_SUPPLEMENT = (("interlock.aws-access-key-id", re.compile(r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b")),)

_LOCK = threading.Lock()


_SURROGATES = re.compile("[\ud800-\udfff]")


class SecretScanner:
    """Finds secrets in a text as the entity type `SECRET`. Thread-safe after construction."""

    def __init__(self, settings: Guardrails) -> None:
        # Optional dependency: kingfisher is the `guardrails` extra, loaded with the first secret scanner.
        import kingfisher_sdk

        with _LOCK:
            # Compiling the rules takes ~4 s; kingfisher caches the compiled database on disk
            # (0.6 s to load afterwards).
            rules = kingfisher_sdk.Rules(
                confidence=settings.secrets_confidence, cache=True, cache_dir=settings.secrets_cache_dir
            )
        self.rule_count = len(rules)
        self._scanner: Any = kingfisher_sdk.Scanner(rules, base64=False)

    def scan(self, text: str) -> list[Detection]:
        if not text:
            return []
        found: list[Detection] = []
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (JSON allows "\ud800"): U+FFFD keeps the offsets
            text = _SURROGATES.sub("\ufffd", text)
            data = text.encode("utf-8")
        ascii_only = len(data) == len(text)
        for finding in self._scanner.scan(data):
            if not finding.visible:
                continue  # a helper match for another rule (e.g. the AWS secret key for its key ID)
            location = finding.location
            start, end = location["start_offset"], location["end_offset"]
            if not ascii_only:  # kingfisher reports byte offsets
                start, end = len(data[:start].decode("utf-8", "ignore")), len(data[:end].decode("utf-8", "ignore"))
            found.append(Detection("SECRET", start, end, _SCORES.get(finding.confidence, 0.9), finding.rule_id))
        for rule, pattern in _SUPPLEMENT:
            for match in pattern.finditer(text):
                found.append(Detection("SECRET", match.start(), match.end(), 0.9, rule))
        return found


__all__ = ["SecretScanner"]
