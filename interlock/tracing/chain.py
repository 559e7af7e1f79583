"""Tamper evidence: every recorded call's rows hashed and chained to the call written before it.

Backend-independent: the writer (`writing.Rows`) digests each call from the very row tuples it
inserts, and a store links the digests inside the write transaction; `verify` walks a chain that a
store reads back. docs/audit.md says what the chain proves and what it does not.

Canonical bytes of one call (its *digest* is their SHA-256), tables in this order, each table's rows
in key order (a call has one `calls` and one `bodies` row; `chunks` by side then seq, `attempts`
and `events` by seq), the parts joined with a newline:

    for each row:   b"T" + len(name) + b":" + name          the table
                    the row as one JSON array, UTF-8: its columns in the INSERT's order (as
                    `rows.CHAINED_TABLES` lists them), NULL as null, JSON as the store writes it
                    (`rows.dumps`: no spaces, non-ASCII as is); a REAL column's value always a
                    float; a raw column's value (BLOBs, and the long texts the table lists) its
                    length in bytes
                    then each non-NULL raw column's bytes (text as UTF-8), in column order
                    then, if a later schema added columns to the table and any is not NULL in
                    this row, one JSON object of those (name: value)

REAL columns are floats so that the same stored row gives the same bytes whatever number the writer
handed over; columns a later schema adds are hashed by name and only when not NULL, so rows written
before them keep their digests. Not covered: `calls.seq` (a local row number) and the full-text
index (derived from the bodies, which are).

A link: `hash = SHA-256(b"interlock-chain-1\\0" + previous hash + writer-field + pos-field + digest)`,
kept as hex with the writer (one chain per writer: a fleet's instances each keep their own) and the
position (1, 2, ... per writer). The first link's previous hash is `GENESIS`, or the checkpoint's
hash once retention pruned the chain's start.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from interlock.tracing.rows import dumps

#: The previous hash of a chain's first link.
GENESIS = "0" * 64
#: The writer of a store that does not name one (SQLite: its processes share one chain, serialised
#: by SQLite's write lock).
DEFAULT_WRITER = "local"

_PREFIX = b"interlock-chain-1\0"

#: Most problems one verification lists (the first is the one that matters; the count goes on).
MAX_PROBLEMS = 100


def _field(text: str) -> bytes:
    data = text.encode("utf-8")
    return b"%d:%s" % (len(data), data)


class Table:
    """One table's part of the canonical bytes: its name; its columns in the INSERT's order (hashed
    by position); which of them are REAL (a float whatever number the writer gave: SQLite stores
    1000 in a REAL column as 1000.0 and gives that back) and which are hashed as raw bytes (BLOBs,
    long texts); and the columns a later schema added (hashed by name, only when not NULL)."""

    __slots__ = ("head", "width", "reals", "raw", "added")

    def __init__(
        self,
        name: str,
        columns: Sequence[str],
        reals: Sequence[str] = (),
        raw: Sequence[str] = (),
        added: Sequence[str] = (),
    ) -> None:
        self.head = b"T" + _field(name)
        self.width = len(columns)
        self.reals = tuple(columns.index(c) for c in reals)
        self.raw = tuple(columns.index(c) for c in raw)
        self.added = tuple(added)

    def add(self, row: Sequence[Any], out: list[bytes]) -> None:
        # One C-encoded JSON array a row: a value-by-value encoder in Python, or a JSON object
        # keyed by column name, cost as much as building the rows (measured); BLOBs and long texts
        # go in as they are (base64, or escaping them as JSON again, cost more than hashing them).
        values = list(row[: self.width])
        for i in self.reals:
            value = values[i]
            if value is not None and value.__class__ is not float:
                values[i] = float(value)
        blobs = []
        for i in self.raw:
            value = values[i]
            if value is not None:
                data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
                values[i] = len(data)
                blobs.append(data)
        out.append(self.head)
        out.append(dumps(values).encode("utf-8"))
        out += blobs
        if self.added:
            later = {
                name: value for name, value in zip(self.added, row[self.width :], strict=True) if value is not None
            }
            if later:
                out.append(dumps(later).encode("utf-8"))


def digest(parts: Iterable[bytes]) -> bytes:
    return hashlib.sha256(b"\n".join(parts)).digest()


def link_hash(previous: str, writer: str, pos: int, call_digest: bytes) -> str:
    """The hex hash of link `pos` of `writer`'s chain, after the link whose hash is `previous`."""
    data = b"".join((_PREFIX, bytes.fromhex(previous), _field(writer), b"%d;" % pos, call_digest))
    return hashlib.sha256(data).hexdigest()


def links(head: tuple[int, str], writer: str, digests: Sequence[tuple[str, bytes]]) -> list[tuple[str, int, str, str]]:
    """`(writer, pos, call_id, hash)` rows continuing the chain whose last link is `head` (pos, hash)."""
    pos, previous = head
    out = []
    for call_id, call_digest in digests:
        pos += 1
        previous = link_hash(previous, writer, pos, call_digest)
        out.append((writer, pos, call_id, previous))
    return out


@dataclass(slots=True)
class Link:
    """One stored link, as a store reads it back. `gone`: the call was deleted through the store
    (retention, `delete`) while links before it were kept; its hash is taken as recorded."""

    pos: int
    call_id: str
    hash: str
    gone: bool = False


@dataclass(slots=True)
class Problem:
    """What verification found wrong, naming the call."""

    kind: str  # "altered", "deleted", "inserted", "rewritten", "truncated"
    call_id: str | None
    writer: str | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "call_id": self.call_id, "writer": self.writer, "message": self.message}


@dataclass(slots=True)
class Report:
    """The outcome of `verify`: `ok` when every link holds and every call is on a chain."""

    writers: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0
    #: Calls recorded before the store had a chain (a store made by an older interlock): not covered.
    unchained: int = 0
    checked: int = 0
    #: Why there is nothing to verify (an old bundle with no chain tables), or None.
    absent: str | None = None
    #: Anchors that could not be checked (pruned into a checkpoint past them).
    unanchored: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem_count == 0 and self.absent is None

    def problem(self, kind: str, call_id: str | None, writer: str | None, message: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(kind, call_id, writer, message))

    def as_dict(self) -> dict[str, Any]:
        first = self.problems[0].as_dict() if self.problems else None
        return {
            "ok": self.ok,
            "checked": self.checked,
            "unchained": self.unchained,
            "problem_count": self.problem_count,
            "first_problem": first,
            "problems": [p.as_dict() for p in self.problems],
            "writers": self.writers,
            "absent": self.absent,
            "unanchored": self.unanchored,
        }


def verify_writer(
    report: Report,
    writer: str,
    checkpoint: tuple[int, str] | None,
    chain: Iterator[list[Link]],
    call_digests: Callable[[list[str]], dict[str, bytes]],
    anchors: Mapping[int, str] | None = None,
) -> None:
    """Walk one writer's links (pages of them, in position order) from its checkpoint, recomputing
    each live call's link from its stored rows (`call_digests`: id → digest of the calls still
    stored). Adds what is wrong to `report`, and the writer's head to `report.writers`.

    `anchors` (position → hash, recorded outside the store) must still be on the chain: a link
    there with another hash means the chain was rewritten from that point; a chain that ends before
    one means calls were cut from its end. Neither shows on the chain alone (docs/audit.md)."""
    anchors = dict(anchors or {})
    pos, previous = checkpoint or (0, GENESIS)
    if checkpoint is not None:
        for anchored in [p for p in anchors if p <= checkpoint[0]]:
            expected = anchors.pop(anchored)
            if anchored == checkpoint[0] and expected != checkpoint[1]:
                report.problem("rewritten", None, writer, _rewritten(writer, anchored, "the checkpoint"))
            elif anchored < checkpoint[0]:
                report.unanchored.append(f"writer {writer!r} link {anchored}: pruned into the checkpoint")
    last_id: str | None = None
    checked = gone = 0
    for page in chain:
        digests = call_digests([link.call_id for link in page if not link.gone])
        for link in page:
            if link.pos != pos + 1:
                after = f"after call {last_id}" if last_id else "at the chain's start"
                report.problem(
                    "deleted",
                    link.call_id,
                    writer,
                    f"{link.pos - pos - 1} call(s) deleted {after}, before call {link.call_id}"
                    f" (links {pos + 1}..{link.pos - 1} of writer {writer!r} are missing)",
                )
            if link.gone:
                gone += 1
            else:
                found = digests.get(link.call_id)
                if found is None:
                    report.problem(
                        "deleted",
                        link.call_id,
                        writer,
                        f"call {link.call_id} was deleted (link {link.pos} of writer {writer!r} remains)",
                    )
                elif link_hash(previous, writer, link.pos, found) != link.hash:
                    report.problem(
                        "altered",
                        link.call_id,
                        writer,
                        f"call {link.call_id} was altered since it was recorded (link {link.pos} of writer"
                        f" {writer!r} does not match its stored rows)",
                    )
                checked += 1
            wanted = anchors.pop(link.pos, None)
            if wanted is not None and wanted != link.hash:
                report.problem("rewritten", link.call_id, writer, _rewritten(writer, link.pos, f"call {link.call_id}"))
            # Go on from the recorded hash: one altered call is reported once, not every call after it.
            pos, previous, last_id = link.pos, link.hash, link.call_id
    for anchored in sorted(anchors):
        report.problem(
            "truncated",
            None,
            writer,
            f"writer {writer!r}'s chain ends at link {pos}, but link {anchored} was anchored: calls were cut"
            " from its end",
        )
    report.checked += checked
    report.writers[writer] = {
        "head_pos": pos,
        "head_hash": previous,
        "checkpoint_pos": checkpoint[0] if checkpoint else 0,
        "checked": checked,
        "gone": gone,
    }


def _rewritten(writer: str, pos: int, what: str) -> str:
    return f"link {pos} of writer {writer!r} ({what}) is not the anchored one: the chain was rewritten from there on"


__all__ = [
    "DEFAULT_WRITER",
    "GENESIS",
    "Link",
    "Problem",
    "Report",
    "Table",
    "digest",
    "link_hash",
    "links",
    "verify_writer",
]
