"""core/randpool: ids keep their format and never repeat, across threads and across a real fork."""

from __future__ import annotations

import os
import re
import threading

import pytest

from interlock.core import randpool
from interlock.core.call import new_id
from interlock.core.randpool import POOL_BYTES, UNIT, random_hex

HEX = re.compile(r"[0-9a-f]+")


def test_ids_keep_their_format_and_order() -> None:
    ids = [new_id() for _ in range(300)]  # ~2 refills' worth of 13-digit tails
    assert all(len(i) == 26 and HEX.fullmatch(i) for i in ids)
    stamps = [i[:13] for i in ids]  # microseconds: creation order (within one µs the tail decides)
    assert stamps == sorted(stamps)
    assert len({i[13:] for i in ids}) == len(ids)


def test_slices_are_never_handed_out_twice_across_refills() -> None:
    # Digit counts that do not divide the pool: a refill must start afresh, not overlap.
    taken = [random_hex(n) for _ in range(3 * POOL_BYTES // 16) for n in (13, 32, 16)]
    assert [len(t) for t in taken[:3]] == [13, 32, 16]
    assert all(HEX.fullmatch(t) for t in taken)
    assert len(set(taken)) == len(taken)


@pytest.mark.parametrize("digits", [0, -1, UNIT + 1])
def test_out_of_range_refused(digits: int) -> None:
    with pytest.raises(ValueError):
        random_hex(digits)


def test_threads_never_share_bytes() -> None:
    results: list[list[str]] = [[] for _ in range(4)]
    start = threading.Barrier(4)

    def take(out: list[str]) -> None:
        start.wait()
        out.extend(random_hex(32) for _ in range(2000))

    threads = [threading.Thread(target=take, args=(out,)) for out in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [x for out in results for x in out]
    assert len(everything) == 8000 and len(set(everything)) == 8000


def test_a_forked_child_never_reuses_the_parents_pool() -> None:
    random_hex(16)  # the pool is filled: without the fork hook the child would inherit it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids down the pipe, then out without running pytest's teardown
        try:
            os.write(write, ",".join(random_hex(32) for _ in range(50)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read().decode().split(",")
    assert os.waitpid(pid, 0)[1] == 0
    parent = [random_hex(32) for _ in range(50)]
    assert len(child) == 50 and not set(child) & set(parent)


def test_the_fork_hook_is_what_keeps_them_apart() -> None:
    # The hook itself, applied by hand: the pool a child would inherit is gone.
    random_hex(16)
    pool = randpool._state[0]
    randpool._drop_in_child()
    assert pool and random_hex(32) not in pool
