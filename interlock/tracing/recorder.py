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
(`Rows.add_call(salvage=True)`). `close()` drains the queue before returning (SIGTERM runs it
through `Runtime.stop`)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from interlock.config import Settings
from interlock.config import Store as StoreSettings
from interlock.tracing.call import Call
from interlock.tracing.rows import INSERT_CHUNK, Indexer
from interlock.tracing.store import Store
from interlock.tracing.writing import YIELD_EVERY, Rows, insert_rows, write_rows

log = logging.getLogger("interlock.recorder")


class Recorder:
    """A stage with one hook, `done`; `start()` / `close()` run its writer and retention threads."""

    name = "record"

    def __init__(self, store: Store, settings: StoreSettings, *, indexer: Indexer | None = None) -> None:
        self.store = store
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
        self.written = 0
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
        self._writer: threading.Thread | None = None
        self._pruner: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()  # ends the writer's gathering sleep early, on close
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
        """Write everything queued, then stop the threads (blocking: call it off the event loop)."""
        if self._closed:
            return
        self._stopping.set()
        if self._writer is not None:
            self._wake.set()
            self._arrived.set()
            self._writer.join(timeout)
        # From here `done` writes directly; then nothing can be left in the queue.
        with self._admit:
            self._closed = True
        self._write_all_queued()
        self._fallback.shutdown(wait=True)
        self._large.shutdown(wait=True)
        if self._pruner is not None:
            self._pruner.join(timeout)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written (tests and tools). True if it was."""
        target = self.enqueued + self.overflow
        deadline = time.monotonic() + timeout
        while self.written + self.write_errors < target:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def _run_writer(self) -> None:
        pending, arrived = self.queue, self._arrived
        while not self._stopping.is_set():
            if not pending:
                # Idle: sleep until a call arrives. Cleared before the emptiness check, so an
                # append that lands in between sets it again and the wait returns at once.
                arrived.clear()
                if not pending and not self._stopping.is_set():
                    arrived.wait()
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
            sizes = [_size(call) for call in batch]
            if max(sizes) > large:
                for call, size in zip(batch, sizes, strict=True):
                    if size > large:
                        self._large.submit(self._write_large, call)
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
        if self._write_now(batch):
            with self._counting:
                self.batches += 1
                self.last_batch_at = time.time()
                self.writer_cpu += time.thread_time() - cpu

    def _write_now(self, calls: list[Call]) -> bool:
        """Write the calls in one transaction; True when that worked. Otherwise one bad call must not
        cost the others: they are written one by one (a warning, not a traceback: nothing is lost
        yet), and a call SQLite still refuses is salvaged or logged with its traceback."""
        rows, built = self._rows(calls)
        if not built:
            return False
        try:
            write_rows(self.store.conn, rows)
            with self._counting:
                self.written += len(built)
            return True
        except Exception as exc:
            if len(built) > 1:
                log.warning("writing %d calls failed (%s); retrying one by one", len(built), exc)
                for call in built:
                    self._write_now([call])
                return False
        # One call that SQLite refused: once more with its text made safe to store.
        call = built[0]
        salvaged = Rows()
        try:
            if not self._salvage(salvaged, call):
                raise ValueError("its rows cannot be built")
            write_rows(self.store.conn, salvaged)
            with self._counting:
                self.written += 1
        except Exception:
            with self._counting:
                self.write_errors += 1
            log.exception("could not record call %s", call.id)
        return False

    def _write_large(self, call: Call) -> None:
        """One large call: its chunks in transactions of about `large_call_bytes`, then the rest of
        its rows in one (the call appears whole, at that last commit). Runs beside the writer; the
        two take SQLite's write lock in turn, each for one short transaction."""
        try:
            rows, built = self._rows([call])
            if not built:
                return
            conn, piece = self.store.conn, self.settings.large_call_bytes
            chunks, rows.chunks = rows.chunks, []
            start = 0
            while start < len(chunks):
                end, size = start, 0
                while end < len(chunks) and (size < piece or end == start):
                    size += len(chunks[end][4])
                    end += 1
                conn.execute("BEGIN IMMEDIATE")
                try:
                    insert_rows(conn, INSERT_CHUNK, chunks[start:end])
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                start = end
            write_rows(conn, rows)
            with self._counting:
                self.written += 1
                self.large_calls += 1
        except Exception:
            with self._counting:
                self.write_errors += 1
            log.exception("could not record large call %s", call.id)

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
            "batches": self.batches,
            "overflow": self.overflow,
            "large_calls": self.large_calls,
            "write_errors": self.write_errors,
            "pruned": self.pruned,
            "last_batch_at": self.last_batch_at,
            "writer_cpu_us_per_call": round(self.writer_cpu / self.written * 1e6, 1) if self.written else None,
        }


def _size(call: Call) -> int:
    """Bytes of a call's bodies and chunks (what makes its rows slow to build and write)."""
    size = len(call.request_body)
    for body in (call.upstream_body, call.response_body, call.agent_response_body):
        if body is not None:
            size += len(body)
    for chunk in call.chunks:
        size += len(chunk.data)
    for chunk in call.agent_chunks or ():
        size += len(chunk.data)
    return size


def open_recording(settings: Settings) -> tuple[Store | None, Recorder | None]:
    """The store and its recorder as configured (both None when `store.enabled` is false)."""
    if not settings.store.enabled:
        return None, None
    store = Store(settings.store.path)
    return store, Recorder(store, settings.store)
