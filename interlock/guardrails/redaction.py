"""Acting on detections: reversible placeholders, masks and hashes; restoring placeholders, streamed too.

A value redacted in a request becomes `<EMAIL_ADDRESS_1>`; the same value always gets the same
placeholder within a session (a bounded per-session `Vault`), so the history an agent re-sends reads
the same to the model every turn, and placeholders the model writes back are restored for the agent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from interlock.guardrails.pii import Detection
from interlock.guardrails.vault import EmbeddedVault, SessionVault, Vault, VaultConflict

#: A placeholder the vault can restore: `<ENTITY_N>`.
PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*?)_(\d+)>")
#: What the tail of a text looks like while it could still become a placeholder.
_PARTIAL_PLACEHOLDER = re.compile(r"<(?:[A-Z][A-Z0-9_]*)?\Z")
_MAX_PLACEHOLDER = 64
#: The tail of a text that could still be (part of) an entity: a run without spaces, preceded by
#: digit-bearing groups separated by single spaces ("4111 1111 1111 1111", "+44 20 7946 0958",
#: "DE89 3704 0044 0532 0130 00", "(555) 123-4567"), starting where a word starts.
_ENTITY_TAIL = re.compile(r"(?<!\S)(?:(?=[0-9A-Z()+.\-]*\d)[0-9A-Z()+.\-]{1,8} )*\S*\Z")
#: The longest tail held back for the short entities (cards, phones, e-mails, IBANs, IPs).
MAX_HOLD = 256
#: Long entities (secrets: JWTs, API tokens, PEM keys; custom patterns) are held up to a larger cap
#: (`guardrails.stream_holdback_chars`): an unbroken run of printable ASCII, read from the end...
_TOKEN = re.compile(r"[!-~]*")
#: ...and a PEM block (`-----BEGIN RSA PRIVATE KEY-----`) until its END line.
_PEM_BEGIN = "-----BEGIN"
_PEM_END = re.compile(r"-----END[ A-Z0-9]*-----")


@dataclass(slots=True)
class Applied:
    """A detection and the action taken on it."""

    detection: Detection
    action: str


def resolve_overlaps(detections: Iterable[Detection]) -> list[Detection]:
    """Non-overlapping detections, in text order: the higher score, then the longer span, wins."""
    chosen: list[Detection] = []
    for candidate in sorted(detections, key=lambda d: (-d.score, d.start - d.end, d.start)):
        if all(candidate.end <= kept.start or candidate.start >= kept.end for kept in chosen):
            chosen.append(candidate)
    return sorted(chosen, key=lambda d: d.start)


def mask(value: str) -> str:
    """Letters and digits become `*`; long numbers (cards, accounts) keep their last four, like a receipt."""
    keep = 4 if sum(c.isdigit() for c in value) >= 12 else 0
    out: list[str] = []
    for c in reversed(value):
        if c.isalnum() and keep:
            out.append(c)
            keep -= 1
        else:
            out.append("*" if c.isalnum() else c)
    return "".join(reversed(out))


class Hasher:
    """`hash` action: a keyed hash, so equal values can be correlated but not guessed offline."""

    def __init__(self, key: str | None = None) -> None:
        # Key material: os.urandom, never core/randpool (that pool is for ids).
        self.key = key.encode() if key else os.urandom(32)

    def __call__(self, entity: str, value: str) -> str:
        digest = hmac.new(self.key, value.encode(), hashlib.sha256).hexdigest()[:12]
        return f"<{entity}#{digest}>"


def replacement(
    entity: str, value: str, action: str, vault: SessionVault | None, hasher: Hasher, *, reversible: bool = True
) -> str | None:
    """What replaces a value for an action, or None to leave it (`log`, `block`)."""
    if action == "redact":
        # A response's new value gets a placeholder the vault cannot restore: restoring it on the
        # agent's next turn would hand the model what it was kept from.
        return vault.placeholder(entity, value) if reversible and vault is not None else f"<{entity}>"
    if action == "mask":
        return mask(value)
    if action == "hash":
        return hasher(entity, value)
    return None


def rewrite(
    text: str,
    applied: Iterable[Applied],
    replace: Callable[[Applied, str], str | None],
    between: Callable[[str], str] | None = None,
) -> str:
    """`text` with each applied detection replaced (when `replace` says so) and the text between
    detections passed through `between` (placeholder restoration) — never the replacements."""
    out: list[str] = []
    position = 0
    for item in applied:
        d = item.detection
        gap = text[position : d.start]
        out.append(between(gap) if between else gap)
        value = text[d.start : d.end]
        new = replace(item, value)
        out.append(value if new is None else new)
        position = d.end
    tail = text[position:]
    out.append(between(tail) if between else tail)
    return "".join(out)


def restorer(vault: SessionVault | None, json_text: bool = False) -> Callable[[str], str] | None:
    """A function restoring the vault's placeholders in a text (JSON-escaped inside JSON text)."""
    if vault is None or not len(vault):
        return None
    return placeholder_restorer(vault.value, json_text)


def placeholder_restorer(lookup: Callable[[str], str | None], json_text: bool = False) -> Callable[[str], str]:
    """A function replacing each placeholder that `lookup` knows by its value (JSON-escaped inside
    JSON text); unknown placeholders stay as they are. Used by the proxy and by replay."""

    def restore(text: str) -> str:
        if "<" not in text:
            return text

        def value(match: re.Match[str]) -> str:
            found = lookup(match.group(0))
            if found is None:
                return match.group(0)
            return json.dumps(found, ensure_ascii=False)[1:-1] if json_text else found

        return PLACEHOLDER.sub(value, text)

    return restore


def holdback(text: str, entities: bool, limit: int = MAX_HOLD) -> int:
    """Where the tail that must wait for more text starts: `len(text)` when nothing must wait.

    `limit` above `MAX_HOLD` also holds an unbroken ASCII token (a JWT, an API key) and an open PEM
    block, up to `limit` characters; a longer one is released whole at the cap (the caller's buffer
    then starts afresh), so it is scanned in pieces of about `limit` characters."""
    cut = len(text)
    lt = text.rfind("<", max(0, len(text) - _MAX_PLACEHOLDER))
    if lt >= 0 and _PARTIAL_PLACEHOLDER.match(text, lt):
        cut = lt
    if entities:
        window = max(0, len(text) - MAX_HOLD)
        match = _ENTITY_TAIL.search(text, window)
        # No match: the last word began before the window; hold the window (an entity may end it).
        start = window if match is None else match.start()
        if limit > MAX_HOLD:
            start = _long_hold(text, start, limit)
        cut = min(cut, start)
    return cut


def _long_hold(text: str, start: int, limit: int) -> int:
    """`start` moved back over a token or open PEM block ending the text; `len(text)` past the cap."""
    n = len(text)
    tail = text[max(0, n - limit - 1) :]
    run = _TOKEN.match(tail[::-1]).end()  # type: ignore[union-attr]  # always matches
    if run > limit:
        return n  # a token longer than the cap: released whole, here
    if run > n - start:
        start = n - run
    begin = text.rfind(_PEM_BEGIN)
    if begin >= 0:
        end = _PEM_END.search(text, begin)
        if end is None:
            if n - begin > limit:
                return n  # an open block longer than the cap: released whole, here
            start = min(start, begin)
        elif begin <= start < end.end():
            start = end.end()  # a whole block goes out whole, not without its END line's last word
    return start


class StreamScrubber:
    """One text arriving in pieces (a choice's content, a tool call's arguments): scans and restores
    it without waiting for the whole, holding back only a tail that could still be a placeholder or
    an entity, and releasing everything at `flush`."""

    __slots__ = ("process", "entities", "limit", "buffer")

    def __init__(self, process: Callable[[str], str], entities: bool, limit: int = MAX_HOLD) -> None:
        self.process = process  # scan + act + restore one released segment
        self.entities = entities
        self.limit = limit  # the longest tail held for an entity (see `holdback`)
        self.buffer = ""

    def feed(self, text: str) -> str:
        buffer = self.buffer + text if self.buffer else text
        cut = holdback(buffer, self.entities, self.limit)
        self.buffer = buffer[cut:]
        return self.process(buffer[:cut]) if cut else ""

    def flush(self) -> str:
        buffer, self.buffer = self.buffer, ""
        return self.process(buffer) if buffer else ""


def actions_for(detections: Iterable[Detection], table: Callable[[str], str | None]) -> list[Applied]:
    """Detections that have an action, with it."""
    out: list[Applied] = []
    for d in detections:
        action = table(d.entity)
        if action is not None:
            out.append(Applied(d, action))
    return out


def entity_types(applied: Iterable[Applied], action: str | None = None) -> list[str]:
    return sorted({a.detection.entity for a in applied if action is None or a.action == action})


__all__ = [
    "Applied",
    "EmbeddedVault",
    "Hasher",
    "PLACEHOLDER",
    "SessionVault",
    "StreamScrubber",
    "Vault",
    "VaultConflict",
    "holdback",
    "mask",
    "replacement",
    "resolve_overlaps",
    "restorer",
    "rewrite",
]
