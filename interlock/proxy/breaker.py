"""A circuit breaker: stop sending calls to an (upstream, model) that keeps failing, or to an upstream
whose connections keep failing (the router keeps one of each, issue 21).

closed ──N consecutive failures, or failure ratio over the window──▶ open
open ──cooldown elapsed──▶ half-open: one call (the probe) goes through, the others skip it
half-open ──probe succeeds──▶ closed      half-open ──probe fails──▶ open (a fresh cooldown)

Single-threaded by design: it lives on the proxy's event loop, so no locks. The forwarder asks
`available()` when choosing an upstream, `acquire()` on the one it chose, and reports the outcome
with `success(probe)` / `failure(probe)` / `release(probe)`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from interlock.config import Breaker

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    """The health of one upstream (or one model on it) of one route, as its recent calls saw it."""

    __slots__ = (
        "config",
        "route",
        "upstream",
        "model",
        "on_change",
        "clock",
        "state",
        "consecutive_failures",
        "opened_at",
        "probing",
        "reason",
        "_window",
        "_pos",
        "_count",
        "_failures",
    )

    def __init__(
        self,
        config: Breaker,
        *,
        route: str = "",
        upstream: str = "",
        model: str = "",
        on_change: Callable[[CircuitBreaker, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.route, self.upstream = route, upstream
        #: The model this breaker watches; "" for an upstream-wide (transport) breaker.
        self.model = model
        self.on_change = on_change
        self.clock = clock
        self.state = CLOSED
        self.consecutive_failures = 0
        self.opened_at: float | None = None
        self.probing = False
        self.reason = ""
        # The last `window` outcomes as a ring of 0 (success) / 1 (failure): O(1), no allocation.
        self._window = bytearray(config.window)
        self._pos = 0
        self._count = 0
        self._failures = 0

    # -- choosing --------------------------------------------------------------------------------

    def available(self) -> bool:
        """Whether a call may go to this upstream now (without taking the probe)."""
        if self.state == CLOSED:
            return True
        if self.probing:
            return False
        if self.state == HALF_OPEN:
            return True
        assert self.opened_at is not None
        return self.clock() - self.opened_at >= self.config.cooldown

    def acquire(self) -> bool:
        """The forwarder chose this upstream; returns True when this attempt is the half-open probe."""
        if self.state == CLOSED:
            return False
        self.probing = True
        if self.state == OPEN:
            self._change(HALF_OPEN)
        return True

    # -- outcomes --------------------------------------------------------------------------------

    def success(self, probe: bool = False) -> None:
        if probe:
            self.probing = False
            self._close()
        elif self.state == CLOSED:
            self.consecutive_failures = 0
            self._record(0)
        # else: a call that started before the breaker opened; the probe decides, not it.

    def failure(self, probe: bool = False) -> None:
        if probe:
            self.probing = False
            self.consecutive_failures += 1
            self._open(f"the half-open probe failed ({self.consecutive_failures} consecutive failures)")
        elif self.state == CLOSED:
            self.consecutive_failures += 1
            self._record(1)
            if not self.config.enabled:
                return
            if self.consecutive_failures >= self.config.consecutive_failures:
                self._open(f"{self.consecutive_failures} consecutive failures")
            elif self._count >= self.config.min_calls and self._failures >= self.config.failure_ratio * self._count:
                self._open(f"{self._failures} of the last {self._count} calls failed")

    def release(self, probe: bool) -> None:
        """The attempt ended without an outcome (the agent left): let another call probe."""
        if probe:
            self.probing = False

    # -- state -----------------------------------------------------------------------------------

    @property
    def failure_ratio(self) -> float:
        return self._failures / self._count if self._count else 0.0

    def retry_in(self) -> float | None:
        """Seconds until an open breaker lets a probe through (0 once it may)."""
        if self.state != OPEN or self.opened_at is None:
            return None
        return max(0.0, self.config.cooldown - (self.clock() - self.opened_at))

    def effective_state(self) -> str:
        """The state as a caller would find it now: an open breaker past its cooldown is half-open."""
        if self.state == OPEN and self.retry_in() == 0.0:
            return HALF_OPEN
        return self.state

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.effective_state(),
            "consecutive_failures": self.consecutive_failures,
            "window_calls": self._count,
            "window_failures": self._failures,
            "failure_ratio": round(self.failure_ratio, 4),
            "probing": self.probing,
            "retry_in_s": None if (r := self.retry_in()) is None else round(r, 3),
            "reason": self.reason or None,
            "enabled": self.config.enabled,
        }

    def _record(self, failed: int) -> None:
        window = self._window
        if self._count == len(window):
            self._failures -= window[self._pos]
        else:
            self._count += 1
        window[self._pos] = failed
        self._failures += failed
        self._pos = (self._pos + 1) % len(window)

    def _open(self, reason: str) -> None:
        self.opened_at = self.clock()
        self.reason = reason
        self._change(OPEN)

    def _close(self) -> None:
        self.consecutive_failures = 0
        self.opened_at = None
        self.reason = ""
        self._window[:] = bytes(len(self._window))
        self._pos = self._count = self._failures = 0
        self._change(CLOSED)

    def _change(self, state: str) -> None:
        old, self.state = self.state, state
        if self.on_change is not None and old != state:
            self.on_change(self, old)


__all__ = ["CircuitBreaker", "CLOSED", "OPEN", "HALF_OPEN"]
