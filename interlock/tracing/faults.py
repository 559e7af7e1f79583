"""What the recorder does while the store cannot be written: nothing is dropped silently.

A write that fails for a storage reason (disk full, I/O error, the file deleted or read-only) starts
an *episode*: the real SQLite error is logged once, the calls are held in memory (up to
`store.retry_max_bytes` of bodies and chunks), then appended to a side file (`store.spill_path`,
JSON lines of `Call.to_record()`, up to `store.spill_max_bytes`); past that a call is lost, counted
and logged. The writer retries with backoff (0.1 s doubling to 5 s); the first write that works
ends the episode: the held calls and the side file are written, and one line says how it went.
`/ready` answers 503 with the reason while an episode lasts (for a shared store, only once calls
are being lost: `ui/admin.readiness` says why). A side file left by a process that
stopped mid-episode is written at the next start, with those of workers the new run does not have
(`side_file.py`: locking, torn lines, workers). A call whose own data SQLite refuses is not a
storage fault (the recorder salvages it, `recorder.py`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from interlock.core.call import Call
from interlock.tracing.rows import dumps
from interlock.tracing.schema import StoreError
from interlock.tracing.side_file import appending, claim

log = logging.getLogger("interlock.recorder")

# SQLite's primary result codes that say the file or the disk is at fault, not the call's data.
_STORAGE_CODES = frozenset(
    {
        3,  # SQLITE_PERM
        5,  # SQLITE_BUSY
        6,  # SQLITE_LOCKED
        7,  # SQLITE_NOMEM
        8,  # SQLITE_READONLY
        10,  # SQLITE_IOERR
        11,  # SQLITE_CORRUPT
        13,  # SQLITE_FULL
        14,  # SQLITE_CANTOPEN
        15,  # SQLITE_PROTOCOL
        26,  # SQLITE_NOTADB
    }
)

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0


def storage_fault(exc: BaseException) -> bool:
    """Whether `exc` is the store failing (retry later) rather than a call SQLite cannot take."""
    if isinstance(exc, StoreError | OSError):
        return True
    psycopg = sys.modules.get("psycopg")  # loaded only with a PostgreSQL store
    if psycopg is not None and isinstance(exc, psycopg.Error):
        # The server gone, restarting, refusing connections or out of resources (SQLSTATE classes
        # 08, 53, 57, 58) is OperationalError; a broken connection object is InterfaceError.
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return isinstance(exc, sqlite3.OperationalError)
    return (code & 0xFF) in _STORAGE_CODES


def describe(exc: BaseException) -> str:
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    return f"{name}: {exc}"


def call_size(call: Call) -> int:
    """Bytes of a call's bodies and chunks (what it costs to hold, and to write)."""
    size = len(call.request_body)
    for body in (call.upstream_body, call.response_body, call.agent_response_body):
        if body is not None:
            size += len(body)
    for chunk in call.chunks:
        size += len(chunk.data)
    for chunk in call.agent_chunks or ():
        size += len(chunk.data)
    return size


class Holding:
    """Calls waiting for the store to come back: in memory, then in the side file."""

    def __init__(
        self,
        path: str,
        max_bytes: int,
        spill_path: str,
        spill_max_bytes: int,
        *,
        lock_wait: float,
        adopt: Sequence[str] = (),
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.spill_path = spill_path
        #: Side files of workers an earlier run had and this one has not: written with this one's own
        #: (side_file.absent_workers_files), never appended to.
        self.adopted = list(adopt)
        self.spill_max_bytes = spill_max_bytes
        #: Longest wait for the side file's lock (store.spill_lock_timeout): past it an append loses its
        #: calls (counted, logged) and a replay is retried later, rather than a thread stuck for a replay.
        self.lock_wait = lock_wait
        self.calls: deque[Call] = deque()
        self.bytes = 0
        self.spilled = 0  # calls in the side file
        #: Calls in the adopted side files (`count_side_files`), by file, until each is written; and
        #: their sum, read by /api/stats from another thread (the dict changes under `lock`).
        self._waiting: dict[str, int] = {}
        self.waiting = 0
        self.spill_bytes = os.path.getsize(spill_path) if os.path.exists(spill_path) else 0
        self.lost = 0
        self.lost_before = 0  # `lost` when the current episode began: its own losses are the difference
        self.fault: str | None = None
        self.since: float | None = None
        self.failures = 0  # failed writes in this episode
        self.episodes = 0  # episodes since start (the outages metric)
        self.fault_seconds = 0.0  # their length, the current one included once it ends
        self.retry_at = 0.0
        self.backoff = BACKOFF_FIRST
        self.lock = threading.Lock()

    # -- an episode --------------------------------------------------------------------------------

    def failed(self, reason: str, calls: list[Call]) -> None:
        """A write failed for a storage reason: hold `calls`, log the first failure of an episode."""
        with self.lock:
            first = self.fault is None
            self.fault = reason
            self.failures += 1
            if first:
                self.episodes += 1
                self.lost_before = self.lost
                self.since = time.monotonic()
                self.backoff = BACKOFF_FIRST
                self.retry_at = time.monotonic() + self.backoff
        if first:
            log.error(
                "recording: the store %s cannot be written (%s); calls are held in memory (store.retry_max_bytes),"
                " then in %s (store.spill_max_bytes), and retried with backoff",
                self.path,
                reason,
                self.spill_path,
            )
        for call in calls:
            self.hold(call)

    def retry_failed(self, reason: str) -> None:
        with self.lock:
            self.fault = reason
            self.failures += 1
            self.backoff = min(BACKOFF_MAX, self.backoff * 2)
            self.retry_at = time.monotonic() + self.backoff

    def recovered(self, written: int, from_side_file: int) -> None:
        with self.lock:
            since, failures = self.since, self.failures
            self.fault, self.since, self.failures = None, None, 0
            self.fault_seconds += time.monotonic() - since if since is not None else 0.0
        log.warning(
            "recording: the store %s can be written again after %.1f s (%d failed writes); %d held calls and %d"
            " from the side file written, %d lost in all",
            self.path,
            time.monotonic() - since if since is not None else 0.0,
            failures,
            written,
            from_side_file,
            self.lost,
        )

    def due(self) -> bool:
        return self.fault is not None and time.monotonic() >= self.retry_at

    def wait_seconds(self) -> float | None:
        if self.fault is None:
            return None
        return max(0.0, self.retry_at - time.monotonic())

    # -- holding -----------------------------------------------------------------------------------

    def hold(self, call: Call) -> None:
        size = call_size(call)
        with self.lock:
            if self.bytes + size <= self.max_bytes:
                self.calls.append(call)
                self.bytes += size
                return
        self.spill([call])

    def take(self, count: int) -> list[Call]:
        with self.lock:
            taken = [self.calls.popleft() for _ in range(min(count, len(self.calls)))]
            for call in taken:
                self.bytes -= call_size(call)
            return taken

    def spill(self, calls: list[Call]) -> None:
        """Append calls to the side file; one that does not fit or cannot be written is lost (counted)."""
        if not calls:
            return
        done = 0  # calls spilled or counted lost
        try:
            with appending(self.spill_path, self.lock_wait) as side_file:
                for call in calls:
                    try:
                        line = (dumps(call.to_record()) + "\n").encode("utf-8", "surrogatepass")
                        if self.spill_bytes + len(line) > self.spill_max_bytes:
                            raise OSError(f"the side file is full (store.spill_max_bytes = {self.spill_max_bytes})")
                        self.spill_bytes += side_file.write(line)
                        self.spilled += 1
                    except Exception as exc:  # noqa: BLE001 - counted and logged: the one place a call is lost
                        self._lose(call, exc)
                    done += 1
        except OSError as exc:  # cannot be opened (its folder gone, a directory in its place) or locked in time
            for call in calls[done:]:
                self._lose(call, exc)

    def _lose(self, call: Call, exc: BaseException) -> None:
        self.lost += 1
        if self.lost == 1 or self.lost % 1000 == 0:
            log.error(
                "recording: call %s lost (%d so far): it could not be held or spilled: %s", call.id, self.lost, exc
            )

    def spill_all(self) -> None:
        """Shutdown during an episode: everything held goes to the side file."""
        self.spill(self.take(len(self.calls)))

    def count_side_files(self) -> None:
        """Count the calls in the side files found at start (this process's own, left by an earlier
        run, and the adopted ones) so `/api/stats` reports them as at risk until they are written:
        `spilled` and `unrecorded` otherwise said 0 while a start wrote them, or while a store down
        at start could not. Each file is counted under its lock (its appends and its replay wait),
        in the writer thread: it reads the whole file, in bounded blocks. A file that cannot be
        locked in time is not counted (logged): its replay fails the same way and is retried."""
        for path in [self.spill_path, *self.adopted]:
            try:
                with claim(path, self.lock_wait) as side_file:
                    if side_file is None:
                        continue
                    calls = side_file.calls()
                    if path == self.spill_path:  # locked: `spill` adds to it, under the same lock
                        self.spilled = calls
                        continue
                    with self.lock:
                        self._waiting[path] = calls
                        self.waiting = sum(self._waiting.values())
            except OSError as exc:
                log.warning("recording: the calls in %s cannot be counted now: %s", path, exc)

    def _written(self, path: str) -> None:
        """The adopted side file at `path` is written (or gone): its calls are no longer waiting."""
        with self.lock:
            if self._waiting.pop(path, None) is not None:
                self.waiting = sum(self._waiting.values())

    def replay(self, write: Callable[[list[dict[str, Any]]], None], size: int, *, at_start: bool = False) -> int:
        """Write the side file, then those of absent workers, into the store (`write`, `size` records
        at a time), removing each once written; how many calls. A storage fault raised by `write` stops
        it with the file kept for the next try (which skips the ids already written). A line that is
        not a whole record is counted lost and logged once its file is removed."""
        count = 0
        for path in [self.spill_path, *self.adopted]:
            with claim(path, self.lock_wait) as side_file:
                if side_file is not None:
                    for records in side_file.batches(size):
                        write(records)
                    self.lost += side_file.remove()
                    count += side_file.records
                    if path == self.spill_path:  # still locked: no append lands between the removal and this
                        self.spilled = 0
                        self.spill_bytes = 0
                    if side_file.records and (path != self.spill_path or at_start):
                        whose = "an earlier run" if path == self.spill_path else "a worker of an earlier run"
                        log.warning("recording: %d calls from %s (left by %s) written", side_file.records, path, whose)
            if path != self.spill_path:
                self._written(path)
                with contextlib.suppress(ValueError):  # close() out of time may replay beside the writer
                    self.adopted.remove(path)
        return count

    @property
    def losing(self) -> bool:
        """Calls of the current episode could be neither held nor spilled: they are being lost."""
        return self.fault is not None and self.lost > self.lost_before

    @property
    def in_side_files(self) -> int:
        """Calls in side files waiting for the store: this process's own and the adopted ones'."""
        return self.spilled + self.waiting

    @property
    def unrecorded(self) -> int:
        """Calls not in the store: held, in side files, or lost."""
        return len(self.calls) + self.in_side_files + self.lost
