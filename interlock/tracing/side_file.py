"""The side file: calls the store could not take, as JSON lines of `Call.to_record()` (faults.py).

Three things make it safe to leave behind and to find again:

- **One writer at a time, one reader once.** Appending and replaying both hold an exclusive `flock`
  on the file. A replay reads it to the end, writes the calls to the store and removes the file
  before it lets go, so an append that waited meanwhile finds the file gone (its inode no longer the
  one at the path), opens the path again and starts a new file: nothing is appended to a removed
  file (lost with it), and a second replayer (another thread, another process) that waited finds
  nothing left to write: no file is written twice. No wait is unbounded: past
  `store.spill_lock_timeout` an append counts its calls lost (logged), and a replay fails like a
  store fault (the file kept for the next try), instead of waiting out a long replay.
- **A torn last line** (a process killed while appending, a disk that filled mid-line) is read as
  what it is: the whole lines before it are written, it is counted as one lost call and logged once
  the file is done. An append that finds the file ending in one ends it first, so its own line stays
  whole; an append that fails part-way cuts what it wrote off again.
- **Files of workers that are gone.** `serve --workers N` gives worker i its own file
  (`<spill path>.w<i>`, worker 0 the configured one): two processes appending to one file would
  interleave their lines. A later run may have fewer workers, so worker 0 (or the only process) also
  writes the files of the worker numbers it does not have (`absent_workers_files`); each of the others
  writes its own. Every file found at start-up is thus written by exactly one process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from typing import Any

from interlock.tracing.rows import _decode_extra

log = logging.getLogger("interlock.recorder")


def side_file_path(base: str, worker: int) -> str:
    """The side file of worker `worker` of `serve --workers` (0, or a single process: `base` itself)."""
    return base if worker == 0 else f"{base}.w{worker}"


def absent_workers_files(base: str, workers: int) -> list[str]:
    """The side files `<base>.w<N>` left by workers an earlier run had and this one (of `workers`
    processes) has not (N >= workers), by worker number."""
    directory, name = os.path.split(base)
    pattern = re.compile(re.escape(name) + r"\.w([0-9]+)")
    try:
        names = os.listdir(directory or ".")
    except OSError:  # no folder yet: nothing was spilled there
        return []
    found = sorted(
        (int(match.group(1)), entry)
        for entry in names
        if (match := pattern.fullmatch(entry)) is not None and int(match.group(1)) >= workers
    )
    return [os.path.join(directory, entry) for _, entry in found]


#: How long `_open_locked` sleeps between two tries of the lock: short at first (an append holds it
#: for one batch of lines), doubling up to the last, so a long replay is polled a few times a second.
_LOCK_POLL_FIRST = 0.005
_LOCK_POLL_MAX = 0.1


def _lock_within(fd: int, deadline: float, path: str, wait: float) -> None:
    """Lock `fd` exclusively by `deadline` (time.monotonic()); TimeoutError (an OSError: what every
    caller already handles as a file it cannot use) past it. A blocking `flock` has no bound: an
    append would wait out a whole replay of a large side file by another thread or process."""
    pause = _LOCK_POLL_FIRST
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"{path} stayed locked by another writer or replay for {wait:g} s (store.spill_lock_timeout)"
                ) from None
            time.sleep(min(pause, left))
            pause = min(pause * 2, _LOCK_POLL_MAX)


def _open_locked(path: str, flags: int, wait: float) -> int | None:
    """`path` opened with `flags` and exclusively locked within `wait` seconds (TimeoutError past
    them), or None when there is no file there (and `flags` create none). The lock is checked against
    the path once it is held: a file another holder removed while this one waited for it is no longer
    the one at `path`, and is opened again (within the same `wait`)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fd = os.open(path, flags, 0o600)  # recorded prompts: readable by interlock's user only
        except FileNotFoundError:
            if flags & os.O_CREAT:
                raise  # its folder is gone: the caller counts the calls lost
            return None
        try:
            _lock_within(fd, deadline, path, wait)
            held = os.fstat(fd)
            try:
                now: os.stat_result | None = os.stat(path)
            except FileNotFoundError:
                now = None
        except BaseException:
            os.close(fd)
            raise
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            return fd
        os.close(fd)


class Appender:
    """Whole lines appended to a side file held locked (`appending`)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.end = os.fstat(fd).st_size
        # A line cut short by a process that died appending it: ended here, so the next is whole.
        self.torn = self.end > 0 and os.pread(fd, 1, self.end - 1) != b"\n"

    def write(self, line: bytes) -> int:
        """Append `line` (ending in a newline); the bytes the file grew by. Raises OSError when it
        cannot, with the file as it was."""
        data = b"\n" + line if self.torn else line
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError:
            with contextlib.suppress(OSError):  # a disk full mid-line: no torn line left behind by us
                os.ftruncate(self.fd, self.end)
            raise
        self.end += len(data)
        self.torn = False
        return len(data)


@contextlib.contextmanager
def appending(path: str, wait: float) -> Iterator[Appender]:
    """The side file at `path` (made if missing), locked for appending until the block ends; TimeoutError
    when another holds it for longer than `wait` seconds."""
    fd = _open_locked(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, wait)  # read: its last byte (a torn line?)
    assert fd is not None  # O_CREAT: a file, or an error
    try:
        yield Appender(fd)
    finally:
        os.close(fd)


#: Bytes read at a time to count a side file's lines (`Claimed.calls`).
_COUNT_BLOCK = 1 << 20


class Claimed:
    """A side file held locked for its replay (`claim`): its records, then its removal."""

    def __init__(self, path: str, source: Any) -> None:
        self.path = path
        self.source = source
        self.unreadable: list[tuple[int, str]] = []  # (line number, why), counted lost once it is removed
        self.records = 0

    def batches(self, size: int) -> Iterator[list[dict[str, Any]]]:
        """The records, `size` at a time, read as they are written (the file may hold
        `store.spill_max_bytes`); a line that is not a whole record is kept aside in `unreadable`."""
        self.source.seek(0)
        self.unreadable, self.records = [], 0
        batch: list[dict[str, Any]] = []
        for number, line in enumerate(self.source, 1):
            try:
                batch.append(_decode_extra(json.loads(line.decode("utf-8", "surrogatepass"))))
            except (ValueError, UnicodeDecodeError) as exc:
                if line.endswith(b"\n"):
                    self.unreadable.append((number, f"it cannot be read back ({exc})"))
                else:
                    self.unreadable.append(
                        (number, f"it was cut short ({len(line)} bytes): a process stopped appending it")
                    )
                continue
            self.records += 1
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch

    def calls(self) -> int:
        """How many calls the file holds (its lines, a torn last one included: it is a call not in the
        store either), read in blocks of `_COUNT_BLOCK` bytes: memory stays bounded whatever the size."""
        self.source.seek(0)
        count, last = 0, b"\n"
        while block := self.source.read(_COUNT_BLOCK):
            count += block.count(b"\n")
            last = block[-1:]
        return count + (last != b"\n")

    def remove(self) -> int:
        """Every record is in the store: remove the file (still locked) and log what could not be read;
        how many calls that lost."""
        os.unlink(self.path)
        for number, why in self.unreadable:
            log.error("recording: %s:%d is lost: %s", self.path, number, why)
        return len(self.unreadable)


@contextlib.contextmanager
def claim(path: str, wait: float) -> Iterator[Claimed | None]:
    """The side file at `path`, locked for its replay until the block ends; None when there is none
    (never spilled, or written and removed by another replayer while this one waited); TimeoutError
    when another holds it for longer than `wait` seconds (the file is kept for the next try)."""
    fd = _open_locked(path, os.O_RDONLY, wait)
    if fd is None:
        yield None
        return
    with os.fdopen(fd, "rb") as source:  # closing it lets the lock go
        yield Claimed(path, source)
