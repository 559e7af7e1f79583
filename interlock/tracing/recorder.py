"""The record stage: every finished call goes to the store, written off the event loop.

`done` only appends the finished Call to a bounded deque (O(1): no copying, no JSON, no disk; the
Call is final once the agent has its answer, and stages that run after this one only read it).
A writer thread takes what arrived within `store.batch_interval_ms` of the first call (at most
`store.batch_size` at a time), turns each Call into rows (`writing.Rows.add_call`) and writes them
in one transaction with multi-row INSERTs (`writing.write_rows`). It sleeps through the interval
instead of waking for every call: measured, a wake-up per call cost more CPU than writing it. A
crash therefore loses at most the batch being gathered. If the queue is full the call has already
been served; it is counted as overflow and written by a fallback thread in its own transaction:
never dropped. A call SQLite refuses is written again alone with its unstorable text replaced
(`Rows.add_call(salvage=True)`). A call over `store.large_call_bytes` is written by its own thread,
its chunks in pieces, so the writer keeps writing the others. A storage fault (disk full, the file
deleted) holds calls, spills them to a side file and retries with backoff (`faults.py`); a deleted
or replaced file is reopened. `close()` drains the queue before returning, within its timeout
(SIGTERM runs it through `Runtime.stop` with `shutdown_grace`)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from typing import Any

from interlock.config import Settings
from interlock.config import Store as StoreSettings
from interlock.core.call import Call
from interlock.tracing.backend import Store, open_store
from interlock.tracing.faults import Holding, call_size, describe, storage_fault
from interlock.tracing.rows import Indexer
from interlock.tracing.side_file import absent_workers_files, side_file_path
from interlock.tracing.writing import YIELD_EVERY, Rows

log = logging.getLogger("interlock.recorder")

#: Seconds between checks, while idle, that the store file is still the one opened (deleted, replaced).
FILE_CHECK_SECONDS = 1.0


class Recorder:
    """A stage with one hook, `done`; `start()` / `close()` run its writer and retention threads."""

    name = "record"

    def __init__(
        self,
        store: Store,
        settings: StoreSettings,
        *,
        indexer: Indexer | None = None,
        worker: int = 0,
        workers: int = 1,
    ) -> None:
        self.store = store
        #: How many calls are in flight, not yet queued here (the runtime points it at the proxy's
        #: count; `flush` waits for them).
        self.in_flight: Callable[[], int] = lambda: 0
        self.settings = settings
        self.capture = settings.capture
        self.indexer = indexer
        # A deque, not a queue.Queue: `done` appends under no lock (a Queue takes a lock and runs
        # Condition.notify in Python for every call, on the event loop) and the writer takes a
        # whole batch at once. `_arrived` wakes an idle writer; it stays set while the writer is
        # busy, so the loop sets it about once per batch.
        self.queue: deque[Call] = deque()
        self._arrived = threading.Event()
        self._admit = threading.Lock()  # `done`'s check-and-append vs close(): nothing lands after the last drain
        self.batch_size = settings.batch_size
        self.interval = settings.batch_interval_ms / 1000.0
        self.enqueued = 0
        #: Calls really inserted: a call whose id the store already holds (a side file written again
        #: after a failure part-way, a batch spilled at shutdown that committed after all) is skipped by
        #: the store (ON CONFLICT DO NOTHING) and counted in `duplicates_skipped` instead.
        self.written = 0
        self.duplicates_skipped = 0
        self.batches = 0
        self.overflow = 0
        self.write_errors = 0
        self.pruned = 0
        self.last_batch_at: float | None = None
        self.writer_cpu = 0.0  # seconds of CPU the writer thread spent on batches
        self._counting = threading.Lock()  # `written` is bumped by the writer and the fallback thread
        self._fallback = ThreadPoolExecutor(max_workers=1, thread_name_prefix="interlock-record-overflow")
        # Calls over `large_call_bytes` are written here, their chunks in pieces, so the writer
        # keeps writing the others meanwhile (one 128 MB stream held it for over a minute).
        self._large = ThreadPoolExecutor(max_workers=1, thread_name_prefix="interlock-record-large")
        self.large_calls = 0
        self._large_pending: dict[Future[None], Call] = {}
        #: Set by close() when shutdown_grace ran out with a large call still being written: that
        #: call stops between two pieces and goes to the side file, and close() waits for the piece
        #: in hand (one transaction of about large_call_bytes) before the store is closed under it.
        self._abandon = threading.Event()
        # While the store cannot be written: held calls, the side file, the episode (faults.py).
        # A database server's side file is a local one, beside where the SQLite file would be. Worker
        # `worker` of `serve --workers` has one of its own; worker 0 also writes those of the workers an
        # earlier run had and this one has not (side_file.py).
        spill = settings.spill_path or (settings.path if settings.url else store.path) + ".spill"
        adopt = absent_workers_files(spill, workers) if worker == 0 else []
        spill_path = side_file_path(spill, worker)
        self.holding = Holding(
            store.path,
            settings.retry_max_bytes,
            spill_path,
            settings.spill_max_bytes,
            adopt=adopt,
            lock_wait=settings.spill_lock_timeout,
        )
        self._writer: threading.Thread | None = None
        self._pruner: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()  # ends the writer's gathering sleep early, on close
        #: The batch the writer thread is writing now (what close() spills if it cannot wait for it).
        self._in_flight: list[Call] = []
        self._closed = False

    # -- the stage -------------------------------------------------------------------------------

    async def done(self, call: Call) -> None:
        """The call is final: queue it for the writer thread."""
        with self._admit:
            closed = self._closed
            queued = not closed and len(self.queue) < self.settings.queue_size
            if queued:
                self.queue.append(call)
                self.enqueued += 1
        if queued:
            if not self._arrived.is_set():
                self._arrived.set()
            return
        if closed:
            # Shutdown already drained the queue: write this straggler directly, off the loop.
            await asyncio.get_running_loop().run_in_executor(self._fallback, self._write_now, [call])
            return
        # The queue is full.
        self.overflow += 1
        if self.overflow == 1 or self.overflow % 1000 == 0:
            log.warning(
                "record queue full (%d): %d calls written by the fallback thread so far; raise store.queue_size"
                " or store.batch_size",
                self.settings.queue_size,
                self.overflow,
            )
        await asyncio.get_running_loop().run_in_executor(self._fallback, self._write_now, [call])

    # -- threads ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self._writer is not None:
            return
        self._writer = threading.Thread(target=self._run_writer, name="interlock-record-writer", daemon=True)
        self._writer.start()
        if self.settings.max_age is not None or self.settings.max_size is not None:
            self._pruner = threading.Thread(target=self._run_pruner, name="interlock-record-retention", daemon=True)
            self._pruner.start()

    def close(self, timeout: float | None = None) -> None:
        """Write everything queued, then stop the threads (blocking: call it off the event loop).
        With `timeout` (shutdown_grace), it returns by then whatever the store does: calls it could
        not write by then go to the side file (faults.py)."""
        if self._closed:
            return
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        self._stopping.set()
        if self._writer is not None:
            self._wake.set()
            self._arrived.set()
            self._writer.join(left())
            if self._writer.is_alive():
                # Out of time with a batch still being written (a slow store catching up): the process
                # may exit before it commits, so it goes to the side file too. If it commits after all,
                # the next start skips the ids already stored: spilled twice, never lost.
                in_flight = list(self._in_flight)
                log.warning(
                    "recording: shutdown_grace ran out while %d calls were being written; they are also in %s",
                    len(in_flight),
                    self.holding.spill_path,
                )
                self.holding.spill(in_flight)
        # From here `done` writes directly; then nothing can be left in the queue.
        with self._admit:
            self._closed = True
        self._write_all_queued()
        if self.holding.fault is not None:
            self._retry_held()  # one last try, then what is still held goes to the side file
            self.holding.spill_all()
        self._fallback.shutdown(wait=True)
        pending = dict(self._large_pending)
        if pending:
            _, unfinished = wait_for_futures(pending, timeout=left())
            for future in unfinished:
                if future.cancel():  # not started: spilled
                    self.holding.spill([pending[future]])
                else:  # being written: it stops at its next piece and spills itself
                    self._abandon.set()
        # Waits at most for the piece being written: closing the store under a running write crashes SQLite.
        self._large.shutdown(wait=True, cancel_futures=True)
        if self._pruner is not None:
            self._pruner.join(left())

    async def aclose(self, timeout: float | None = None) -> None:
        await asyncio.to_thread(self.close, timeout)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every call in flight is queued (`in_flight`) and everything queued is written
        (tests and tools). True if it was. A call's answer reaches the agent before the call is
        queued (its record is sealed after the last byte), so "queued so far" alone raced an agent
        that flushed as soon as it had its answer."""
        deadline = time.monotonic() + timeout
        while self.in_flight():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        target = self.enqueued + self.overflow
        while self.written + self.duplicates_skipped + self.write_errors + self.holding.lost < target:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def _run_writer(self) -> None:
        pending, arrived, holding = self.queue, self._arrived, self.holding
        # Counted first (here, not on the event loop: it reads the files), so /api/stats shows the
        # calls at risk while they are written, or while the store cannot take them yet.
        holding.count_side_files()
        self._write_side_file(left_by_earlier_run=True)
        while not self._stopping.is_set():
            if holding.due():
                self._retry_held()
            if not pending:
                # Idle: sleep until a call arrives (or a retry is due, or the file is checked).
                # Cleared before the emptiness check, so an append that lands in between sets it
                # again and the wait returns at once.
                arrived.clear()
                if not pending and not self._stopping.is_set():
                    wait = holding.wait_seconds()
                    if not arrived.wait(FILE_CHECK_SECONDS if wait is None else min(wait, FILE_CHECK_SECONDS)):
                        self._check_file()
                continue
            # Gather for one interval without waking up for each call, then write what is there.
            self._wake.wait(self.interval)
            self._write_all_queued()
        self._write_all_queued()

    def _write_all_queued(self) -> None:
        """Write the queue's contents in batches of `batch_size`."""
        pending, popleft = self.queue, self.queue.popleft
        while True:
            # What is queued now; calls that arrive meanwhile wait for the next interval (a busy
            # proxy must not keep the writer in one endless run of small batches).
            batch: list[Call] = []
            try:
                for _ in range(min(len(pending), self.batch_size)):
                    batch.append(popleft())
            except IndexError:  # close() after a timed-out join drains alongside the writer
                pass
            if not batch:
                return
            gathered = len(batch)
            large = self.settings.large_call_bytes
            sizes = [call_size(call) for call in batch]
            if max(sizes) > large:
                for call, size in zip(batch, sizes, strict=True):
                    if size > large:
                        future = self._large.submit(self._write_large, call)
                        self._large_pending[future] = call
                        future.add_done_callback(self._large_pending.pop)
                batch = [call for call, size in zip(batch, sizes, strict=True) if size <= large]
            if batch:
                self._write_batch(batch)
            if gathered < self.batch_size:
                return

    def _rows(self, calls: list[Call]) -> tuple[Rows, list[Call]]:
        """The batch's rows, and the calls they hold (a call whose rows cannot be built is counted
        as a write error and left out: it must not cost its batch)."""
        rows = Rows()
        built: list[Call] = []
        for i, call in enumerate(calls, 1):
            mark = rows.mark()
            try:
                if self.indexer is None:
                    rows.add_call(call, self.capture, limit=self.settings.record_max_bytes)
                else:
                    rows.add_record(call.to_record(), self.capture, self.indexer)
                built.append(call)
            except Exception:
                rows.rewind(mark)
                if self.indexer is None and self._salvage(rows, call):
                    built.append(call)
                else:
                    with self._counting:
                        self.write_errors += 1
                    log.exception("could not record call %s", getattr(call, "id", "?"))
            if i % YIELD_EVERY == 0:
                # Building rows is pure Python and holds the GIL; without a pause the event loop
                # can wait a whole switch interval (5 ms) for it. sleep(0) lets it run now.
                time.sleep(0)
        return rows, built

    def _write_batch(self, batch: list[Call]) -> None:
        cpu = time.thread_time()
        if threading.current_thread() is self._writer:
            self._in_flight = batch
        try:
            written = self._write_now(batch)
        finally:
            if threading.current_thread() is self._writer:
                self._in_flight = []
        if written:
            with self._counting:
                self.batches += 1
                self.last_batch_at = time.time()
                self.writer_cpu += time.thread_time() - cpu

    def _write_now(self, calls: list[Call], *, retrying: bool = False) -> bool:
        """Write the calls in one transaction; True when that worked. A storage fault holds them for
        a retry (`faults.Holding`). Otherwise one bad call must not cost the others: they are written
        one by one (a warning, not a traceback: nothing is lost yet), and a call SQLite still refuses
        is salvaged or logged with its traceback."""
        holding = self.holding
        if holding.fault is not None and not retrying:
            for call in calls:  # the episode goes on: straight to the held calls
                holding.hold(call)
            return False
        problem = self.store.file_problem()
        if problem is not None and not self._reopen(problem):
            holding.failed(problem, calls)
            return False
        rows, built = self._rows(calls)
        if not built:
            return False
        try:
            self._count(self.store.write_rows(rows), len(built))
            return True
        except Exception as exc:
            if storage_fault(exc):
                holding.failed(describe(exc), built)
                return False
            if len(built) > 1:
                log.warning("writing %d calls failed (%s); retrying one by one", len(built), exc)
                for call in built:
                    self._write_now([call], retrying=retrying)
                return False
        # One call that SQLite refused: once more with its text made safe to store.
        call = built[0]
        salvaged = Rows()
        try:
            if not self._salvage(salvaged, call):
                raise ValueError("its rows cannot be built")
            self._count(self.store.write_rows(salvaged), 1)
        except Exception as exc:
            if storage_fault(exc):
                holding.failed(describe(exc), [call])
                return False
            with self._counting:
                self.write_errors += 1
            log.exception("could not record call %s", call.id)
        return False

    def _write_large(self, call: Call) -> None:
        """One large call: its chunks in transactions of about `large_call_bytes`, then the rest of
        its rows in one (the call appears whole, at that last commit). Runs beside the writer; the
        two take SQLite's write lock in turn, each for one short transaction."""
        if self.holding.fault is not None:
            self.holding.hold(call)
            return
        try:
            rows, built = self._rows([call])
            if not built:
                return
            piece = self.settings.large_call_bytes
            chunks, rows.chunks = rows.chunks, []
            start = 0
            while start < len(chunks):
                if self._abandon.is_set():  # shutdown_grace ran out (close): the side file has it whole
                    self.holding.spill([call])
                    return
                end, size = start, 0
                while end < len(chunks) and (size < piece or end == start):
                    size += len(chunks[end][4])
                    end += 1
                part = Rows()
                part.chunks = chunks[start:end]
                self.store.write_chunks(part)
                start = end
            self._count(self.store.write_rows(rows), 1)
            with self._counting:
                self.large_calls += 1
        except Exception as exc:
            if storage_fault(exc):
                # Its chunks written so far are skipped when written again (ON CONFLICT DO NOTHING).
                self.holding.failed(describe(exc), [call])
                return
            with self._counting:
                self.write_errors += 1
            log.exception("could not record large call %s", call.id)

    # -- storage faults (faults.py) ---------------------------------------------------------------

    def _reopen(self, problem: str) -> bool:
        """The store file was deleted or replaced: say so loudly and open the file at its path again."""
        log.error("recording: %s; reopening it (what was written to the old file since is gone with it)", problem)
        try:
            self.store.reopen()
        except Exception as exc:  # noqa: BLE001 - the episode's reason, retried with backoff
            log.error("recording: cannot reopen %s: %s", self.store.path, describe(exc))
            return False
        return True

    def _check_file(self) -> None:
        """The idle writer's check that the file is still there (so /ready knows without traffic)."""
        if self.holding.fault is not None:
            return
        problem = self.store.file_problem()
        if problem is not None and not self._reopen(problem):
            self.holding.failed(problem, [])

    def _retry_held(self) -> None:
        """A retry during an episode: the held calls, then the side file; the episode ends when all are written."""
        holding = self.holding
        problem = self.store.file_problem()
        if problem is not None and not self._reopen(problem):
            holding.retry_failed(problem)
            return
        moved = 0
        while holding.calls:
            batch = holding.take(self.batch_size)
            failures = holding.failures
            self._write_now(batch, retrying=True)
            if holding.failures != failures:
                holding.retry_failed(holding.fault or "unknown")
                return
            moved += len(batch)
        from_side_file = self._write_side_file()
        if from_side_file is None:
            return
        holding.recovered(moved, from_side_file)

    def _write_side_file(self, *, left_by_earlier_run: bool = False) -> int | None:
        """Write the side files' calls into the store and remove them; how many (None: it failed)."""
        holding = self.holding
        try:
            # A retry after a failure part-way rewrites the first batches: ids already stored are skipped.
            # `_write_records` counts what each batch inserted as it commits.
            count = holding.replay(self._write_records, self.batch_size, at_start=left_by_earlier_run)
        except Exception as exc:  # noqa: BLE001 - kept on disk for the next retry (or start)
            if left_by_earlier_run:
                holding.failed(describe(exc), [])
            else:
                holding.retry_failed(describe(exc))
            return None
        return count

    def _write_records(self, records: list[dict[str, Any]]) -> None:
        """Records from the side file: a storage fault is raised (the file stays for the next try);
        a record SQLite refuses is counted and logged, and must not keep the others out."""
        try:
            self._count(self.store.write(records, capture=self.capture), len(records))
            return
        except Exception as exc:
            if storage_fault(exc):
                raise
        for record in records:
            try:
                self._count(self.store.write([record], capture=self.capture), 1)
            except Exception as exc:
                if storage_fault(exc):
                    raise
                with self._counting:
                    self.write_errors += 1
                log.exception("could not record call %s from the side file", record.get("id"))

    def _count(self, added: int, calls: int) -> None:
        """A committed write of `calls` calls, `added` of them new: the others were already stored."""
        with self._counting:
            self.written += added
            self.duplicates_skipped += calls - added

    def _salvage(self, rows: Rows, call: Call) -> bool:
        """Add the call's rows with unstorable text replaced (`Rows.add_call(salvage=True)`)."""
        mark = rows.mark()
        try:
            rows.add_call(call, self.capture, salvage=True, limit=self.settings.record_max_bytes)
        except Exception:
            rows.rewind(mark)
            return False
        log.warning("call %s: text that could not be indexed or stored as it was is stored replaced", call.id)
        return True

    def _run_pruner(self) -> None:
        max_age, max_size = self.settings.max_age, self.settings.max_size
        # Often enough that the store never runs far past its limits, rarely enough to cost nothing.
        period = min(60.0, max_age / 10) if max_age else 60.0
        period = max(period, 0.05)
        while not self._stopping.is_set():
            try:
                self.pruned += self.store.prune(max_age=max_age, max_size=max_size)
            except Exception:
                log.exception("retention pruning failed")
            self._stopping.wait(period)

    def counters(self) -> dict[str, Any]:
        """What `/api/stats` reports about recording."""
        return {
            "capture": self.capture,
            "queue": len(self.queue),
            "queue_size": self.settings.queue_size,
            "enqueued": self.enqueued,
            "written": self.written,
            "duplicates_skipped": self.duplicates_skipped,
            "batches": self.batches,
            "overflow": self.overflow,
            "large_calls": self.large_calls,
            # While the store cannot be written (faults.py): why, and the calls not in it.
            "fault": self.holding.fault,
            "faults": self.holding.episodes,  # episodes since start (an outage of the store is one)
            "fault_seconds": round(
                self.holding.fault_seconds
                + (time.monotonic() - self.holding.since if self.holding.since is not None else 0.0),
                3,
            ),
            "unrecorded": self.holding.unrecorded,
            "held": len(self.holding.calls),
            "spilled": self.holding.in_side_files,
            "lost": self.holding.lost,
            "write_errors": self.write_errors,
            "pruned": self.pruned,
            "last_batch_at": self.last_batch_at,
            "writer_cpu_us_per_call": round(self.writer_cpu / self.written * 1e6, 1) if self.written else None,
        }


def open_recording(settings: Settings) -> tuple[Store | None, Recorder | None]:
    """The store and its recorder as configured (both None when `store.enabled` is false)."""
    if not settings.store.enabled:
        return None, None
    store = open_store(settings.store)
    return store, Recorder(store, settings.store, worker=settings.worker, workers=settings.workers)
