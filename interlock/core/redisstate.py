"""The connection to the fleet's shared state (`state: {url: redis://...}`): one bounded pool per
interlock, every round trip bounded by `state.timeout`, every failure one exception
(`StateUnavailable`) that the concern turns into its configured failure mode.

redis-py's own retries are off: a retry with backoff would stretch a call's wait past the bound the
configuration promises, and the caller already knows what to do when the state is out of reach.
Imported only when `state.url` is set (redis-py costs ~60 ms of startup).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from interlock.core.state import StateUnavailable

log = logging.getLogger("interlock.state")

#: Connections one interlock holds to Redis at most; a call past it waits (within `state.timeout`)
#: for one to come back. A call makes one or two short round trips, so 64 serve far more than 64
#: calls in flight.
MAX_CONNECTIONS = 64

T = TypeVar("T")


class StateSettings(Protocol):
    """What the client reads of the `state:` settings (`config.State` is one): named here so the
    bottom layer imports nothing above it."""

    @property
    def url(self) -> str | None: ...

    @property
    def key_prefix(self) -> str: ...

    @property
    def timeout(self) -> float: ...


class StateClient:
    """A Redis client whose every command is bounded and fails as `StateUnavailable`."""

    def __init__(self, state: StateSettings) -> None:
        assert state.url is not None
        self.prefix = state.key_prefix
        self.timeout = state.timeout
        pool = redis.BlockingConnectionPool.from_url(
            state.url,
            max_connections=MAX_CONNECTIONS,
            timeout=state.timeout,  # the wait for a free connection
            socket_timeout=state.timeout,
            socket_connect_timeout=state.timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self.redis: redis.Redis = redis.Redis(connection_pool=pool)
        self.failures = 0  # round trips that failed since start
        self.down = False  # the last round trip failed (an outage is logged once, at its start and end)

    def script(self, source: str) -> Callable[[list[Any]], Awaitable[Any]]:
        """A Lua script run atomically by Redis (EVALSHA, loaded on first use), bounded like a command."""
        registered = self.redis.register_script(source)

        async def run(args: list[Any]) -> Any:
            return await self.run(lambda: registered(keys=[], args=args))

        return run

    async def run(self, command: Callable[[], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(self.timeout):
                result = await command()
        except (RedisError, OSError, TimeoutError) as exc:
            self.failures += 1
            if not self.down:  # the outage's first failure in full; the calls it refuses say less
                log.error("shared state (Redis) unreachable: %s: %s", type(exc).__name__, exc)
                self.down = True
            # Without the server's address: this reaches agents, in the refusal's message.
            reason = f"timed out after {self.timeout} s" if isinstance(exc, TimeoutError) else type(exc).__name__
            raise StateUnavailable(f"shared state (Redis) unreachable: {reason}") from None
        if self.down:
            log.warning("shared state (Redis) reachable again after %d failed round trips", self.failures)
            self.down = False
        return result

    async def aclose(self) -> None:
        try:
            await self.redis.aclose(close_connection_pool=True)
        except (RedisError, OSError) as exc:  # closing a pool whose server is gone
            log.debug("closing the Redis pool: %s", exc)


__all__ = ["MAX_CONNECTIONS", "StateClient", "StateUnavailable"]
