"""The record stage: every finished call goes to the store, written off the event loop.

`done` only puts the finished Call on a bounded queue (O(1): no copying, no JSON, no disk; the
Call is final once the agent has its answer, and stages that run after this one only read it).
A writer thread takes what arrived within `store.batch_interval_ms` of the first call (at most
`store.batch_size` at a time), turns each Call into its record (`Call.to_record()`) and rows, and
writes them in one transaction. It sleeps through the interval instead of waking for every call:
measured, a wake-up per call cost more CPU than writing it. A crash therefore loses at most the
batch being gathered. If the queue is full the call has already been served; it is counted as
overflow and written by a fallback thread in its own transaction: never dropped. `close()`
drains the queue before returning (SIGTERM runs it through `Runtime.stop`).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from interlock.config import Settings
from interlock.config import Store as StoreSettings
from interlock.tracing.call import Call
from interlock.tracing.rows import Indexer, Record
from interlock.tracing.store import Store

log = logging.getLogger("interlock.recorder")

_STOP = object()


class Recorder:
    """A stage with one hook, `done`; `start()` / `close()` run its writer and retention threads."""

    name = "record"

    def __init__(self, store: Store, settings: StoreSettings, *, indexer: Indexer | None = None) -> None:
        self.store = store
        self.settings = settings
        self.capture = settings.capture
        self.indexer = indexer
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=settings.queue_size)
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
        self._writer: threading.Thread | None = None
        self._pruner: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()  # ends the writer's gathering sleep early, on close
        self._closed = False

    # -- the stage -------------------------------------------------------------------------------

    async def done(self, call: Call) -> None:
        """The call is final: queue it for the writer thread."""
        if self._closed:
            # Shutdown already drained the queue: write this straggler directly, off the loop.
            await asyncio.get_running_loop().run_in_executor(self._fallback, self._write_now, [call])
            return
        try:
            self.queue.put_nowait(call)
            self.enqueued += 1
        except queue.Full:
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
            self.queue.put(_STOP)
            self._wake.set()
            self._writer.join(timeout)
        # From here `done` writes directly; then nothing can be left in the queue.
        self._closed = True
        self._write_all_queued()
        self._fallback.shutdown(wait=True)
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
        while True:
            first = self.queue.get()  # idle: sleep until a call arrives
            if first is _STOP:
                self._write_all_queued()
                return
            # Gather for one interval without waking up for each call, then write what is there.
            self._wake.wait(self.interval)
            if self._write_all_queued([first]):
                return

    def _write_all_queued(self, batch: list[Any] | None = None) -> bool:
        """Write the queue's contents in batches of `batch_size`; True if the stop sign was among them."""
        batch = batch or []
        stop = False
        while True:
            while len(batch) < self.batch_size:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                else:
                    batch.append(item)
            if not batch:
                return stop
            full = len(batch) >= self.batch_size
            self._write_batch(batch)
            batch = []
            if not full:
                return stop

    def _records(self, calls: list[Call]) -> list[Record]:
        records: list[Record] = []
        for call in calls:
            try:
                records.append(call.to_record())
            except Exception:
                with self._counting:
                    self.write_errors += 1
                log.exception("could not record call %s", getattr(call, "id", "?"))
        return records

    def _write_batch(self, batch: list[Call]) -> None:
        cpu = time.thread_time()
        records = self._records(batch)
        if not records:
            return
        try:
            self.store.write(records, capture=self.capture, indexer=self.indexer)
            with self._counting:
                self.written += len(records)
                self.batches += 1
                self.last_batch_at = time.time()
                self.writer_cpu += time.thread_time() - cpu
        except Exception:
            # One bad record must not cost the whole batch: write them one by one.
            log.exception("writing a batch of %d calls failed; retrying one by one", len(records))
            for record in records:
                self._write_records([record])

    def _write_now(self, calls: list[Call]) -> None:
        self._write_records(self._records(calls))

    def _write_records(self, records: list[Record]) -> None:
        if not records:
            return
        try:
            self.store.write(records, capture=self.capture, indexer=self.indexer)
            with self._counting:
                self.written += len(records)
        except Exception:
            with self._counting:
                self.write_errors += len(records)
            log.exception("could not record call %s", records[0].get("id"))

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
            "queue": self.queue.qsize(),
            "queue_size": self.settings.queue_size,
            "enqueued": self.enqueued,
            "written": self.written,
            "batches": self.batches,
            "overflow": self.overflow,
            "write_errors": self.write_errors,
            "pruned": self.pruned,
            "last_batch_at": self.last_batch_at,
            "writer_cpu_us_per_call": round(self.writer_cpu / self.written * 1e6, 1) if self.written else None,
        }


def open_recording(settings: Settings) -> tuple[Store | None, Recorder | None]:
    """The store and its recorder as configured (both None when `store.enabled` is false)."""
    if not settings.store.enabled:
        return None, None
    store = Store(settings.store.path)
    return store, Recorder(store, settings.store)
