"""Helpers for tests — interlock's own and its users': run interlock in-process on loopback.

with run_interlock(settings) as running:
    client = openai.OpenAI(base_url=running.url + "/openai", api_key="x")
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from interlock.config import Settings


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class Running:
    settings: Settings
    runtime: Any
    loop: asyncio.AbstractEventLoop

    @property
    def url(self) -> str:
        return f"http://{self.settings.listen.host}:{self.settings.listen.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.settings.admin.host}:{self.settings.admin.port}"

    def run(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on interlock's own loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


def settings_for_test(data: dict[str, Any], tmp_path: Any = None) -> Settings:
    """Settings on free loopback ports; `data` is what interlock.yaml would hold."""
    merged = dict(data)
    merged.setdefault("listen", {"host": "127.0.0.1", "port": free_port()})
    merged.setdefault("admin", {"host": "127.0.0.1", "port": free_port()})
    if tmp_path is not None:
        store = dict(merged.get("store") or {})
        store.setdefault("path", str(tmp_path / "interlock.db"))
        merged["store"] = store
    return Settings.model_validate(merged)


@contextlib.contextmanager
def run_interlock(settings: Settings, timeout: float = 15) -> Iterator[Running]:
    """Serve interlock in a background thread until the block ends (then shut down gracefully)."""
    from interlock.server import Runtime, _config, _Server
    from interlock.ui.admin import create_admin_app

    started = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        runtime = Runtime(settings)
        proxy = _Server(
            _config(runtime.proxy, settings.listen.host, settings.listen.port, settings, settings.shutdown_grace)
        )
        admin = _Server(_config(create_admin_app(runtime), settings.admin.host, settings.admin.port, settings, 1.0))
        holder.update(runtime=runtime, loop=asyncio.get_running_loop(), servers=(proxy, admin))
        await runtime.start()
        tasks = [asyncio.create_task(proxy.serve()), asyncio.create_task(admin.serve())]
        while not (proxy.started and admin.started):
            if any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.005)
        started.set()
        try:
            await asyncio.gather(*tasks)
        finally:
            await runtime.stop()

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported to the waiting thread
            holder["error"] = exc
            started.set()

    thread = threading.Thread(target=target, name="interlock", daemon=True)
    thread.start()
    if not started.wait(timeout) or "error" in holder:
        raise RuntimeError(f"interlock did not start: {holder.get('error')!r}")
    running = Running(settings, holder["runtime"], holder["loop"])
    try:
        yield running
    finally:
        for server in holder["servers"]:
            server.should_exit = True
        thread.join(timeout=settings.shutdown_grace + 10)
