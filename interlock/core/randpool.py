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
across threads without a lock (a lock cost more than the syscall it replaces): the pool is cut into
32-digit units, and a unit is claimed with `next()` on an `itertools.count`, which the GIL makes
atomic; a pool and its counter are swapped in together, as one tuple. Two threads that find the
pool used up at once may both refill it: each claims from its own fresh pool, so nothing repeats.
"""

from __future__ import annotations

import itertools
import os

#: Bytes read a refill: 256 units of 32 hex digits, ~85 calls at three ids each.
POOL_BYTES = 4096
#: The most digits one id takes (a trace id: 16 bytes); every id takes a whole unit.
UNIT = 32
_UNITS = 2 * POOL_BYTES // UNIT

#: (the pool as hex, the counter of its claimed units); starts used up, so the first call fills it.
_state: tuple[str, itertools.count[int]] = ("", itertools.count(_UNITS))


def random_hex(digits: int) -> str:
    """`digits` (1 to 32) random lowercase hex digits, sliced from bytes no other id has been given."""
    global _state
    if not 0 < digits <= UNIT:
        raise ValueError(f"random_hex: {digits} digits, expected 1..{UNIT}")
    while True:
        pool, claimed = _state
        unit = next(claimed)
        if unit < _UNITS:
            start = unit * UNIT
            return pool[start : start + digits]
        _state = (os.urandom(POOL_BYTES).hex(), itertools.count())


def _drop_in_child() -> None:
    """After fork: forget the parent's bytes; the child's first id reads its own."""
    global _state
    _state = ("", itertools.count(_UNITS))


os.register_at_fork(after_in_child=_drop_in_child)
