"""Random hex for ids (call ids, trace and span ids), sliced from one pool of `os.urandom` bytes.

Why a pool: `os.urandom` releases the GIL for its getrandom(2) syscall, and a call took three
(`core.call.new_id`, the trace id and the span id in `proxy/identify.py`). With recording on, the
writer thread is waiting for the GIL and takes it each time; the loop then waits for the writer's
switch interval: ~200 µs a call in `new_id` under load, 7.5-9.7% of the event loop's wall time
(docs/bench.md, issue 18). One 4 KiB read serves ~100 calls' ids instead.

The bytes are as unpredictable as `os.urandom`'s (they are its bytes, each handed out once), so ids
stay unguessable; what the pool must not be used for is key material (vault nonces, HMAC keys, the
workers' shared secret): those stay on `os.urandom`, where no copy lingers in a long-lived buffer.

Safe across fork: `serve --workers N` forks children after startup, and a child that inherited a
half-used pool would hand out the same ids as its siblings; the pool is dropped in every child. Safe
across threads: a lock around the slice (uncontended it costs ~100 ns, against a syscall).
"""

from __future__ import annotations

import os
import threading

#: Bytes read a refill: 8,192 hex digits, ~130 calls at 61 digits each (13 + 32 + 16).
POOL_BYTES = 4096

_lock = threading.Lock()
_pool = ""
_at = 0


def random_hex(digits: int) -> str:
    """`digits` random lowercase hex digits, never handed out before (in this process or another)."""
    global _pool, _at
    if not 0 < digits <= 2 * POOL_BYTES:
        raise ValueError(f"random_hex: {digits} digits, expected 1..{2 * POOL_BYTES}")
    with _lock:
        start = _at
        end = start + digits
        if end > len(_pool):
            # The rest of the old pool is dropped, not joined: simpler, and bytes are cheap.
            _pool = os.urandom(POOL_BYTES).hex()
            start, end = 0, digits
        _at = end
        return _pool[start:end]


def _drop_in_child() -> None:
    """After fork: forget the parent's bytes (and a lock another thread may have held at the fork)."""
    global _lock, _pool, _at
    _lock = threading.Lock()
    _pool = ""
    _at = 0


os.register_at_fork(after_in_child=_drop_in_child)
