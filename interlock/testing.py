"""Helpers for tests — interlock's own and its users': run interlock in-process on loopback.

with run_interlock(settings) as running:
    client = openai.OpenAI(base_url=running.url + "/openai", api_key="x")
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from interlock.config import Settings
from interlock.core.call import Call, new_id
from interlock.serving import bind_ports

if TYPE_CHECKING:
    from interlock.core.views import ResponseView
    from interlock.tracing.backend import Store


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 60.0, what: str = "condition") -> T:
    """Poll `condition()` until it is truthy and return that value. `timeout` only bounds a failure
    (a condition met passes in milliseconds), generous for a loaded 2-core machine: wait for what
    must happen, never sleep and hope it has."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met in {timeout:g} s")
        time.sleep(0.005)
    return value


def make_call(text: str = "where is the lighthouse?", **fields: Any) -> Call:
    """A finished, recorded-looking call to test a stage, a store or an exporter with: an OpenAI chat
    completion from agent `planner` asking `text`, answered 200; `fields` set any other attribute."""
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}, separators=(",", ":"))
    call = Call(
        id=new_id(),
        route="openai",
        protocol="openai",
        method="POST",
        path="/chat/completions",
        request_headers=[("content-type", "application/json")],
        request_body=body.encode(),
        model="gpt-4o",
        status=200,
        response_headers=[("content-type", "application/json")],
        response_body=b'{"choices":[{"message":{"role":"assistant","content":"on the northern cape"}}]}',
        agent="planner",
    )
    for key, value in fields.items():
        setattr(call, key, value)
    return call


def recorded_answer(store: Store, call_id: str) -> ResponseView:
    """A recorded call's answer as every offline reader reads it (`tracing.views.stored_answer`,
    through its adapter): a stream from its stored reassembly (else its chunks), a response from its
    body. `.message` is the response JSON, `.texts` and `.tool_calls` what the adapter finds in it."""
    # Startup: the pytest plugin imports this module in every session; the adapters only when used.
    from interlock.tracing.views import stored_answer

    found = store.get_detail(call_id)
    assert found is not None, f"call {call_id} is not in the store"
    return stored_answer(*found)


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

    def recorded_row(self, call_id: str) -> dict[str, Any]:
        """The store's row of a call, once everything the recorder had queued is written."""
        recorder = self.runtime.recorder
        assert recorder is not None and recorder.flush(), "the recorder did not write its queue"
        row = self.runtime.store.call_row(call_id)
        assert row is not None, f"call {call_id} is not in the store"
        return row  # type: ignore[no-any-return]

    def recorded_calls(self, count: int = 1, timeout: float = 60.0, **filters: Any) -> list[Call]:
        """The calls `filters` select (`Store.list_calls`'s: `session`, `agent`, ...), newest first,
        once at least `count` are in the store (a call reaches it just after its answer: the
        recorder's queue is written at each look)."""
        recorder, store = self.runtime.recorder, self.runtime.store

        def rows() -> list[dict[str, Any]] | None:
            assert recorder is None or recorder.flush(), "the recorder did not write its queue"
            found: list[dict[str, Any]] = store.list_calls(limit=max(100, count), **filters)
            return found if len(found) >= count else None

        listed = wait_for(rows, timeout, f"{count} recorded calls")
        assert listed is not None  # (wait_for returns a truthy value)
        calls = [store.get_call(row["id"]) for row in listed]
        assert all(calls), "a listed call could not be read"
        return calls

    def run(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on interlock's own loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


def settings_for_test(data: dict[str, Any], tmp_path: Any = None) -> Settings:
    """Settings for `run_interlock`; ports default to 0 (picked when bound); `data` is interlock.yaml."""
    merged = dict(data)
    merged.setdefault("listen", {"host": "127.0.0.1", "port": 0})
    merged.setdefault("admin", {"host": "127.0.0.1", "port": 0})
    if tmp_path is not None:
        store = dict(merged.get("store") or {})
        if "url" in store:  # a database server: the side file stays in the test's directory
            store.setdefault("spill_path", str(tmp_path / "interlock.spill"))
        else:
            store.setdefault("path", str(tmp_path / "interlock.db"))
        merged["store"] = store
    return Settings.model_validate(merged)


@contextlib.contextmanager
def run_interlock(
    settings: Settings, timeout: float = 60, warm_timeout: float = 180, *, stages: Sequence[object] = ()
) -> Iterator[Running]:
    """Serve interlock in a background thread until the block ends (then shut down gracefully);
    `stages` are added after the built-in ones (`Runtime(settings, stages=...)`).

    The block starts once interlock is ready as `/ready` says it: listening, and the guardrails engine
    built (seconds on a loaded machine), so a client's first call does not wait for it. A stage of
    `stages` with a `warmed` event holds `/ready` too, but the block does not wait for it: the code in
    the block is what finishes it (the demo's `Seeding`, set once its sessions are recorded)."""
    # Startup: the pytest plugin imports this module in every pytest session; the server and runtime (2.2-3.1
    # s to import, measured under shared load) only when a test starts one.
    from interlock.runtime import Runtime
    from interlock.server import Servers

    # Bind first, then serve on those sockets: no window in which another process takes the port.
    settings, proxy_socket, admin_socket = bind_ports(settings)
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        servers = Servers(Runtime(settings, stages=stages), proxy_socket, admin_socket)
        holder.update(runtime=servers.runtime, loop=asyncio.get_running_loop(), servers=servers)

        def on_started(ok: bool) -> None:
            if not ok:
                holder["error"] = RuntimeError("a server stopped during startup")
            started.set()

        await servers.run(on_started)

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported to the waiting thread
            holder["error"] = exc
            started.set()

    thread = threading.Thread(target=target, name="interlock", daemon=True)
    thread.start()
    if not started.wait(timeout) or "error" in holder:
        for sock in (proxy_socket, admin_socket):
            sock.close()
        thread.join(timeout)
        error = holder.get("error")
        raise RuntimeError(f"interlock did not start: {error!r}") from error
    running = Running(settings, holder["runtime"], holder["loop"])
    try:
        deadline = time.monotonic() + warm_timeout
        for stage in running.runtime.pipeline.stages:
            if any(stage is mine for mine in stages):
                continue  # the caller's own: its block finishes it
            warmed = getattr(stage, "warmed", None)
            if isinstance(warmed, threading.Event) and not warmed.wait(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"interlock's {stage.name} did not get ready in {warm_timeout}s")
        yield running
    finally:
        holder["servers"].stop()
        thread.join(timeout=settings.shutdown_grace + 10)


# -- replay: an incident as a regression test --------------------------------------------------------


@dataclass
class ReplayRunning:
    """A replay server started by `replay_server`."""

    url: str
    host: Any  # interlock.replay.runner.ReplayHost

    def base_url(self, route: str) -> str:
        """The URL an SDK uses for a recorded route, e.g. `base_url("openai")`."""
        return f"{self.url}/{route}"

    def summary(self) -> Any:
        """What was served so far (`interlock.replay.Summary`: served, misses, unused)."""
        return self.host.summary()

    def assert_no_divergence(self, *, all_used: bool = False) -> None:
        """Fail with the divergence report if a request matched no recorded call (and, with
        `all_used`, if some recorded call was never asked for)."""
        summary = self.summary()
        if summary.misses or (all_used and summary.unused):
            raise AssertionError("the agent diverged from the recording:\n" + summary.text())


@contextlib.contextmanager
def replay_server(
    bundle: Any,
    *,
    speed: float | None = None,
    on_miss: str = "error",
    ignore: tuple[str, ...] = (),
    session: str | None = None,
    live_settings: Settings | None = None,
    set_env: bool = True,
    stages: Sequence[object] = (),
) -> Iterator[ReplayRunning]:
    """Serve a recorded bundle (a path, or an `interlock.replay.Bundle`) on a free loopback port,
    with OPENAI_BASE_URL / ANTHROPIC_BASE_URL pointing at it until the block ends. `speed=None`
    answers as fast as possible; `speed=1.0` keeps the recorded timing. `stages`: stages of your
    own (hooks as in `interlock.proxy.hooks`), after the playback: each sees every replayed call go
    by, as on a live call (its `chunk` hooks a replayed stream's events, its `done` the call).

        with replay_server("tests/incidents/refund-loop.db") as replay:
            assert run_my_agent("refund order 42") == "Refunded."
        replay.assert_no_divergence()
    """
    # Startup: as above, the replay machinery only when a test replays.
    from interlock.replay.bundle import Bundle, open_bundle
    from interlock.replay.match import MatchOptions
    from interlock.replay.runner import ReplaySettings, base_url_env, replay_in_thread

    loaded = bundle if isinstance(bundle, Bundle) else open_bundle(bundle, session=session)
    settings = ReplaySettings(
        host="127.0.0.1",
        port=0,
        speed=speed,
        on_miss=on_miss,
        options=MatchOptions().with_ignored(ignore),
        live_settings=live_settings,
        open_live=_open_live if on_miss == "live" else None,
        stages=tuple(stages),
    )
    with replay_in_thread(loaded, settings) as host:
        saved: dict[str, str | None] = {}
        if set_env:
            for name, value in base_url_env(host.url, loaded.routes).items():
                saved[name] = os.environ.get(name)
                os.environ[name] = value
        try:
            yield ReplayRunning(host.url, host)
        finally:
            for name, old in saved.items():
                if old is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = old


def _open_live(settings: Settings) -> Any:
    """The live runtime a replay with `on_miss="live"` forwards misses to."""
    # Startup: the server and runtime only when a test starts one (see run_interlock).
    from interlock.runtime import Runtime

    return Runtime(settings)
