"""`interlock serve --workers N`: N worker processes serving one proxy socket and one admin socket.

A pre-forking supervisor, not SO_REUSEPORT: the supervisor binds both ports once (port 0 and the
usual errors work as with one process), then forks the workers, which inherit the listening sockets
and accept from them (the kernel hands each connection to one waiting worker). Chosen because the
supervisor then also owns what a set of workers needs as a whole: it restarts a worker that dies,
forwards SIGTERM/SIGINT to every worker and waits for each to drain within `shutdown_grace`, and
publishes every worker's readiness on a shared board that each worker's `/ready` reads, so `/ready`
is 200 only when all of them are ready. With SO_REUSEPORT every worker would bind on its own, a
stale process from an earlier run could silently take a share of the connections, and nothing would
see the workers as one.

State: each worker is a whole interlock (pipeline, recorder, limiter, vault). The SQLite store is
shared by the workers' writers on one WAL file (each write is a `BEGIN IMMEDIATE` transaction with a
30 s busy timeout, so they take turns; measured without `database is locked`, tests/fleet). What is
counted or remembered across calls is shared too: with `state.url`, on Redis as for a fleet; without
it, in the same SQLite file (`counters_sqlite.py`, `vault_sqlite.py`: one transaction per operation,
atomic across the workers), the vault's values encrypted with `state.vault_key` or, when unset, a key
the supervisor draws at start and hands to its workers in memory (never written anywhere). Each
worker spills to its own side file (`<spill>.w<i>`, worker 0 keeps the configured one); worker 0
also writes, at start, the side files of worker numbers this run does not have (a run with fewer
workers than the one that spilled them: tracing/side_file.py).
"""

from __future__ import annotations

import base64
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from interlock.config import Settings, fleet_warnings
from interlock.serving import bind_ports

log = logging.getLogger("interlock")

#: A worker that exits before it was ever ready, within this many seconds of its start, is failing to
#: start, not crashing: the supervisor stops instead of restarting it in a loop. One that was ready is
#: restarted whenever it dies (a fast start must not turn a crash into a stop of every worker).
START_GRACE = 10.0
#: prctl(2)'s option asking the kernel for a signal when the parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1


class WorkerBoard:
    """Each worker's readiness (and pid) in memory shared across the fork: written by the worker that
    owns the slot (and by the supervisor when it dies), read by every worker's `/ready`."""

    def __init__(self, workers: int) -> None:
        context = multiprocessing.get_context("fork")
        self.ready: Any = context.RawArray(ctypes.c_byte, workers)
        self.pids: Any = context.RawArray(ctypes.c_int, workers)
        self.index = -1  # which slot this process owns (-1: the supervisor)

    def __len__(self) -> int:
        return len(self.ready)

    def set(self, ready: bool) -> None:
        if self.index >= 0:
            self.ready[self.index] = 1 if ready else 0

    def summary(self) -> dict[str, Any]:
        """For `/ready`: how many workers are ready, of how many, and which one answered."""
        ready = sum(1 for flag in self.ready if flag)
        return {"ready": ready, "of": len(self), "worker": self.index}

    def all_ready(self) -> bool:
        return all(self.ready)


def needs_shared_state(settings: Settings) -> str | None:
    """Why these settings cannot run in several workers without `state.url` (None: they can)."""
    if settings.state.resolved().url or settings.store.path != ":memory:":
        return None
    if settings.policies or settings.guardrails.request or settings.guardrails.response:
        return (
            "the store is in memory (store.path :memory:), so the workers have no file to share limits and the vault in"
        )
    return None


def worker_settings(settings: Settings, index: int, workers: int, secret: str) -> Settings:
    """A worker's settings: `workers` (counters and vault shared through the store's file unless on
    Redis), the supervisor's vault `secret` unless the configuration has a key, and its `worker`
    number, which gives it a side file of its own (two processes appending to one would interleave;
    worker 0 also writes those of workers an earlier run had: tracing/side_file.py)."""
    update: dict[str, object] = {"workers": workers, "worker": index}
    if not settings.state.resolved().vault_key:
        update["state"] = settings.state.model_copy(update={"vault_key": secret})
    return settings.model_copy(update=update)


def supervise(
    settings: Settings,
    workers: int,
    run_worker: Callable[[Settings, socket.socket, socket.socket, WorkerBoard], None],
) -> int:
    """Bind, fork `workers` processes running `run_worker`, restart those that die, and on SIGTERM or
    SIGINT stop them all gracefully. Returns the exit status. `run_worker` runs in the child (it must
    return when the worker has shut down; an exception there is the worker's exit status 1)."""
    # What a fleet of such processes would not share: said once, here, not by each worker's runtime
    # (N workers said it N times, and again at every restart).
    for warning in fleet_warnings(settings):
        log.warning("%s", warning)
    # Ports chosen by the kernel (0) are the same for every worker: they share these sockets.
    settings, proxy_socket, admin_socket = bind_ports(settings)
    board = WorkerBoard(workers)
    # The SQLite vault's key when the configuration has none: drawn here, inherited by the workers'
    # memory across fork, never written (docs/fleet.md).
    # Key material: os.urandom, never core/randpool (that pool is for ids).
    secret = base64.b64encode(os.urandom(32)).decode()
    children: dict[int, tuple[int, float]] = {}  # pid → (slot, started at)
    seen_ready: set[int] = set()  # workers that have been ready: started, whatever kills them later
    stopping: list[int] = []

    supervisor = os.getpid()

    def fork(index: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            status = 0
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)  # the worker's loop installs its own
                _stop_with(supervisor)
                board.index = index
                board.pids[index] = os.getpid()
                run_worker(worker_settings(settings, index, workers, secret), proxy_socket, admin_socket, board)
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - reported, then the worker's exit status says it
                log.exception("worker %d failed", index)
                status = 1
            finally:
                board.set(False)
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        children[pid] = (index, time.monotonic())

    def stop(signum: int, _: Any) -> None:
        if stopping:
            return
        stopping.append(signum)
        log.info("stopping %d workers (each drains within %ss)", len(children), settings.shutdown_grace)
        for pid in children:
            _signal(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(workers):
        fork(index)
    status = 0
    deadline: float | None = None
    while children:
        if stopping and deadline is None:
            deadline = time.monotonic() + settings.shutdown_grace + 10
        try:
            pid, code = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            if deadline is not None and time.monotonic() > deadline:
                for pid in children:  # past the grace: a worker that did not drain is killed
                    log.error("worker pid %d did not stop in time: killed", pid)
                    _signal(pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
            seen_ready.update(child for child, (slot, _) in children.items() if board.ready[slot])
            time.sleep(0.05)  # a supervisor's poll for exited children, not a wait for a condition
            continue
        index, started = children.pop(pid)
        was_ready = pid in seen_ready or bool(board.ready[index])
        seen_ready.discard(pid)
        board.ready[index] = 0
        exit_status = os.waitstatus_to_exitcode(code)
        if stopping:
            continue
        if not was_ready and time.monotonic() - started < START_GRACE and exit_status != 0:
            log.error("worker %d exited with %s while starting: stopping the others", index, exit_status)
            status = exit_status if exit_status > 0 else 1
            stop(signal.SIGTERM, None)
            continue
        log.error("worker %d (pid %d) exited with %s: starting another", index, pid, exit_status)
        fork(index)
    proxy_socket.close()
    admin_socket.close()
    return status


def _stop_with(supervisor: int) -> None:
    """In a worker: be sent SIGTERM (a graceful drain) when the supervisor dies, however it dies. A
    supervisor killed outright (SIGKILL, the OOM killer) cannot stop its workers, which would go on
    serving on the inherited sockets with no one to replace or stop them (Linux's PR_SET_PDEATHSIG;
    elsewhere nothing is done). A supervisor already gone before this ran: stop now."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the worker outlives a killed supervisor
            log.warning("workers cannot follow the supervisor's death here (no prctl)")
    if os.getppid() != supervisor:
        os.kill(os.getpid(), signal.SIGTERM)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


__all__ = ["WorkerBoard", "needs_shared_state", "supervise", "worker_settings"]
