"""Secrets detection (API keys, tokens, private keys, passwords in URLs) with kingfisher's rule set.

kingfisher-secret-scanner (Rust, vectorscan; 488 rules in 1.5.0) was chosen over detect-secrets: on
our corpus it found 50 of 60 realistic keys with no false positive in 0.02 ms per 2 KB, where
detect-secrets found all 60 but flagged every negative (its entropy plugins fire on any long token)
and took 70 ms per 2 KB. The two misses are covered here (see `_SUPPLEMENT`). docs/guardrails.md has
the numbers. kingfisher's scanning never uses the network; its credential *validation* does, and is
never called.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
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

log = logging.getLogger("interlock.guardrails")


_SURROGATES = re.compile("[\ud800-\udfff]")

#: What `scan_many` puts between texts scanned in one call. Every start or end anchor (`^`, `$`, `\A`,
#: `\z`) in kingfisher's rules is an alternative beside a class that takes a newline (`(?:[\s;]|$)`,
#: `(?:\A|[\x00-,...])`), so a match at a text's edge alone still matches with a newline beside it;
#: rules where that does not hold are found at start-up (`_edge_rules`) and checked on each text.
_SEPARATOR = b"\n"


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
        self._native: Any = self._scanner._native  # scan_bytes without the SDK's per-finding wrappers
        self._edges = _edge_rules(rules)

    def scan(self, text: str) -> list[Detection]:
        if not text:
            return []
        text, data = _encoded(text)
        return self._detections(text, data)

    def scan_many(self, texts: Sequence[str]) -> list[list[Detection]]:
        """`[scan(t) for t in texts]`, in one kingfisher call when none of them holds a secret.

        A kingfisher call costs ~100 k instructions whatever its length (15-37 µs a call on this
        machine, for 5 bytes as for 2 KB): the texts are scanned joined by newlines first; if that
        finds nothing at all (no finding, not even a helper match), neither does any text alone,
        and one call did for all of them. Otherwise each is scanned alone, as `scan` would, so the
        findings (spans, rules, scores) are always those of `scan`. Why nothing is lost: a match
        inside one text is still a match inside the joined texts (the rules' edges take a newline,
        see `_SEPARATOR`; the few that do not are checked on each text here); what the joining
        adds (a keyword in one text, a key in the next) is a finding, which sends every text to
        `scan`. tests/guardrails/test_secret_batches.py holds `scan_many` to `scan` over a corpus."""
        encoded = [_encoded(t) if t else (t, b"") for t in texts]
        present = [data for _, data in encoded if data]
        if len(present) > 1 and self._edges is not None:
            if not any(edge.search(t) for edge in self._edges for t, data in encoded if data):
                if not self._native.scan_bytes(_SEPARATOR.join(present)) and not any(
                    pattern.search(t) for _, pattern in _SUPPLEMENT for t, data in encoded if data
                ):
                    return [[] for _ in texts]
        return [self._detections(t, data) if data else [] for t, data in encoded]

    def _detections(self, text: str, data: bytes) -> list[Detection]:
        found: list[Detection] = []
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


def _encoded(text: str) -> tuple[str, bytes]:
    """The text as kingfisher scans it, and its UTF-8 bytes."""
    try:
        return text, text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (JSON allows "\ud800"): U+FFFD keeps the offsets
        text = _SURROGATES.sub("\ufffd", text)
        return text, text.encode("utf-8")


def _anchor_groups(pattern: str) -> list[str] | None:
    """The innermost group around each start or end anchor of a pattern (the whole pattern for one
    outside any group); None when the pattern cannot be read (unbalanced)."""
    groups: list[str] = []
    stack: list[int] = []
    spans: dict[int, int] = {}
    anchors: list[tuple[int, int]] = []  # (position, innermost open group's start or -1)
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if not in_class and pattern[i + 1 : i + 2] in ("A", "z", "Z"):
                anchors.append((i, stack[-1] if stack else -1))
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "]" or pattern[i + 1 : i + 3] == "^]":
                i += 2 if pattern[i + 1] == "]" else 3  # a class starting with `]` holds it
                continue
        elif c == "(":
            stack.append(i)
        elif c == ")":
            if not stack:
                return None
            spans[stack.pop()] = i
        elif c in "^$":
            anchors.append((i, stack[-1] if stack else -1))
        i += 1
    if stack or in_class:
        return None
    for _, start in anchors:
        groups.append(pattern if start < 0 else pattern[start : spans[start] + 1])
    return groups


def _edge_rules(rules: Any) -> list[Any] | None:
    """The patterns of the rules that an anchor at a text's edge could make match alone and not
    beside a newline (their anchor's group does not take "\\n" another way), compiled to be
    searched in each text of a batch; None when a rule cannot be read so (then nothing is batched).
    Today one rule of 488: `sidekiq-sensitive-url`, `...contribsys.com(?:[\\/|\\#|\\?|:]|$)`."""
    try:
        # presidio's regular expression engine (the `guardrails` extra, as kingfisher): Rust-like syntax.
        import regex
    except ImportError:
        return None
    edges: list[Any] = []
    try:
        for meta in rules.metadata():
            pattern = rules.detail(meta["id"])["detection_regex"]
            groups = _anchor_groups(pattern)
            if groups is None:
                return None
            python = pattern.replace("\\z", "\\Z")
            for group in groups:
                if not regex.fullmatch(group.replace("\\z", "\\Z"), "\n"):
                    edges.append(regex.compile(python))
                    break
    except (regex.error, KeyError, TypeError, ValueError):
        log.warning("secrets: a kingfisher rule could not be read; texts are scanned one call each")
        return None
    return edges


__all__ = ["SecretScanner"]
