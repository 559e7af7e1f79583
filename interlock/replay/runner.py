"""Running a replay server: in the foreground for the CLI, or in a thread for tests.

`--on-miss live` builds interlock's own `Runtime` from a configuration and forwards to its proxy
app, so live calls go through the same routes, keys, retries and stages as `interlock serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from interlock.config import Settings, load_settings
from interlock.protocols import ADAPTERS
from interlock.replay.bundle import Bundle
from interlock.replay.match import MatchOptions
from interlock.replay.server import ReplayApp, Summary
from interlock.serving import QuietServer, bind_socket, uvicorn_config


class ReplayConfigError(Exception):
    """The replay cannot start as asked (e.g. the live store is the bundle itself)."""


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    host: str = "127.0.0.1"
    port: int = 4141
    speed: float | None = 1.0  # None: as fast as possible
    on_miss: str = "error"
    options: MatchOptions = MatchOptions()
    #: The configuration whose routes `--on-miss live` forwards to (None: the embedded default).
    live_settings: Settings | None = None
    #: What builds the live runtime for `--on-miss live` from those settings: `interlock.runtime.Runtime`,
    #: handed in by the CLI and `interlock.testing`. Replay sits below the runtime (`make lint`), so
    #: the assembly above it passes the runtime down instead of replay importing it.
    open_live: Callable[[Settings], LiveRuntime] | None = None
    #: `Host` names the replay answers besides localhost, IP addresses and `host`
    #: (`listen.allowed_hosts`: a replay bound to 0.0.0.0 and reached by a DNS name, docs/security.md).
    allowed_hosts: tuple[str, ...] = ()
    #: Stages of your own, after the playback: each sees every replayed call go by (`ReplayApp`).
    stages: tuple[object, ...] = ()


class LiveRuntime(Protocol):
    """What a replay needs of the live runtime its misses go to (`interlock.runtime.Runtime` is one)."""

    proxy: Any  # the live proxy's ASGI app

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def _live_runtime(bundle: Bundle, settings: ReplaySettings) -> LiveRuntime:
    if settings.open_live is None:
        raise ReplayConfigError("--on-miss live needs a live runtime to forward misses to (ReplaySettings.open_live)")
    live = settings.live_settings or load_settings(None)
    store = Path(live.store.path).resolve()
    if store == Path(bundle.path).resolve():
        raise ReplayConfigError(
            f"the live configuration's store is the bundle itself ({bundle.path}); a replay never writes to its bundle"
        )
    try:
        return settings.open_live(live)
    except Exception as exc:  # a policy file, a store path...: say so, as a startup error
        raise ReplayConfigError(f"cannot start the live runtime for --on-miss live: {exc}") from exc


class ReplayHost:
    """A ReplayApp served by uvicorn, with its live runtime when `on_miss` is `live`."""

    def __init__(self, bundle: Bundle, settings: ReplaySettings) -> None:
        self.bundle = bundle
        self.settings = settings
        self.runtime = _live_runtime(bundle, settings) if settings.on_miss == "live" else None
        self.app = ReplayApp(
            bundle.calls,
            options=settings.options,
            speed=settings.speed,
            on_miss=settings.on_miss,  # type: ignore[arg-type]
            live=self.runtime.proxy if self.runtime is not None else None,
            stages=settings.stages,
            host=settings.host,
            allowed_hosts=settings.allowed_hosts,
        )
        # Bound now: the port is known (port 0 picks a free one) and nobody can take it meanwhile.
        try:
            self.socket = bind_socket(settings.host, settings.port)
        except OSError as exc:
            raise ReplayConfigError(
                f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
            ) from None
        self.port = int(self.socket.getsockname()[1])
        self.server = QuietServer(uvicorn_config(self.app, settings.host, self.port))

    @property
    def url(self) -> str:
        host = f"[{self.settings.host}]" if ":" in self.settings.host else self.settings.host
        return f"http://{host}:{self.port}"

    def summary(self) -> Summary:
        return self.app.summary()

    async def serve(self, *, on_ready: Any = None) -> None:
        if self.runtime is not None:
            await self.runtime.start()
        try:
            task = asyncio.create_task(self.server.serve(sockets=[self.socket]))
            while not self.server.started:
                if task.done():
                    break
                await asyncio.sleep(0.005)
            if self.server.started and on_ready is not None:
                on_ready(self)
            await task
        finally:
            if self.runtime is not None:
                await self.runtime.stop()
        if not self.server.started:
            raise ReplayConfigError(f"the replay server could not listen on {self.settings.host}:{self.settings.port}")

    def stop(self) -> None:
        self.server.should_exit = True


async def serve_foreground(host: ReplayHost, *, on_ready: Any = None, command: Sequence[str] = ()) -> int | None:
    """Serve until SIGINT/SIGTERM — or, with `command`, run it against the replay and return its exit code."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, host.stop)
    result: dict[str, int] = {}

    async def run_command() -> None:
        env = {**os.environ, **base_url_env(host.url, host.bundle.routes)}
        process = await asyncio.create_subprocess_exec(*command, env=env)
        result["code"] = await process.wait()
        host.stop()

    def ready(running: ReplayHost) -> None:
        if on_ready is not None:
            on_ready(running)
        if command:
            tasks.append(loop.create_task(run_command()))

    tasks: list[asyncio.Task[None]] = []
    await host.serve(on_ready=ready)
    for task in tasks:
        await task
    return result.get("code")


def run_loop(main: Any) -> Any:
    """Run a coroutine on uvloop when it is installed (uvicorn[standard] brings it): measured here,
    about a third less CPU per request than the asyncio loop."""
    # Optional dependency: uvloop comes with uvicorn[standard] and may be absent.
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(main)
    return uvloop.run(main)


def base_url_env(url: str, routes: dict[str, str]) -> dict[str, str]:
    """OPENAI_BASE_URL / ANTHROPIC_BASE_URL / ... (`Adapter.base_url_env`) pointing at the replay's
    routes of those protocols (the route named like the protocol first, else the first such route)."""
    env: dict[str, str] = {}
    for protocol, adapter in ADAPTERS.items():
        variable = adapter.base_url_env
        if variable is None:
            continue
        names = [name for name, p in routes.items() if p == protocol]
        if names:
            name = protocol if protocol in names else names[0]
            env[variable] = f"{url}/{name}"
    return env


@contextlib.contextmanager
def replay_in_thread(bundle: Bundle, settings: ReplaySettings, timeout: float = 15) -> Iterator[ReplayHost]:
    """Serve a replay on a background thread until the block ends."""
    host = ReplayHost(bundle, settings)
    started = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run_loop(host.serve(on_ready=lambda _: started.set()))
        except BaseException as exc:  # noqa: BLE001 - reported to the waiting thread
            errors.append(exc)
        finally:
            started.set()

    thread = threading.Thread(target=target, name="interlock-replay", daemon=True)
    thread.start()
    if not started.wait(timeout) or errors or not host.server.started:
        host.stop()
        raise RuntimeError(f"the replay server did not start: {errors[0] if errors else 'timeout'}")
    try:
        yield host
    finally:
        host.stop()
        thread.join(timeout=10)
