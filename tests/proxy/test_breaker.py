"""Circuit breakers: open after failures, fail fast or skip while open, one probe when half-open."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from interlock.config import Breaker
from interlock.proxy.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from interlock.scripted import Script, ScriptedUpstream
from tests.proxy.routing_support import (
    CHAT,
    breaker_state,
    collect_calls,
    finished,
    route,
    upstreams_state,
    wait_for,
)

# -- the state machine, on a fake clock ------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(**config: Any) -> tuple[CircuitBreaker, Clock, list[tuple[str, str]]]:
    clock = Clock()
    changes: list[tuple[str, str]] = []
    b = CircuitBreaker(
        Breaker(**config), route="r", upstream="u", clock=clock, on_change=lambda b, old: changes.append((old, b.state))
    )
    return b, clock, changes


def test_opens_after_n_consecutive_failures() -> None:
    b, _, changes = breaker(consecutive_failures=3)
    b.failure()
    b.failure()
    b.success()  # a success resets the run
    b.failure()
    b.failure()
    assert b.state == CLOSED and b.available()
    b.failure()
    assert b.state == OPEN and not b.available()
    assert b.reason == "3 consecutive failures"
    assert changes == [(CLOSED, OPEN)]


def test_opens_on_the_failure_ratio_over_the_window() -> None:
    b, _, _ = breaker(consecutive_failures=100, failure_ratio=0.5, window=10, min_calls=6)
    for _ in range(2):
        b.failure()
        b.success()
    b.failure()  # 3 of 5: not enough calls yet
    assert b.state == CLOSED
    b.success()
    b.failure()  # 4 of 7 >= 50%
    assert b.state == OPEN and b.reason == "4 of the last 7 calls failed"


def test_the_window_forgets_old_outcomes() -> None:
    b, _, _ = breaker(consecutive_failures=100, failure_ratio=0.5, window=4, min_calls=4)
    b.failure()
    b.success()
    for _ in range(4):
        b.success()
    b.failure()  # the window now holds s, s, s, f
    assert b.state == CLOSED and b.failure_ratio == 0.25


def test_half_open_after_cooldown_lets_one_probe_through() -> None:
    b, clock, changes = breaker(consecutive_failures=1, cooldown=5)
    b.failure()
    clock.now += 4.9
    assert not b.available() and b.effective_state() == OPEN
    clock.now += 0.2
    assert b.available() and b.effective_state() == HALF_OPEN
    probe = b.acquire()
    assert probe and b.state == HALF_OPEN
    assert not b.available()  # one probe at a time
    b.success(probe)
    assert b.state == CLOSED and b.available() and b.consecutive_failures == 0
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_a_failed_probe_reopens_for_a_fresh_cooldown() -> None:
    b, clock, _ = breaker(consecutive_failures=1, cooldown=5)
    b.failure()
    clock.now += 6
    probe = b.acquire()
    b.failure(probe)
    assert b.state == OPEN and not b.available()
    assert b.retry_in() == pytest.approx(5.0)
    assert "probe failed" in b.reason


def test_an_abandoned_probe_lets_the_next_call_probe() -> None:
    b, clock, _ = breaker(consecutive_failures=1, cooldown=1)
    b.failure()
    clock.now += 2
    probe = b.acquire()
    b.release(probe)
    assert b.available() and b.state == HALF_OPEN


def test_late_results_of_calls_from_before_the_opening_do_not_close_it() -> None:
    b, _, _ = breaker(consecutive_failures=1)
    b.failure()
    b.success()  # a call that started while closed finishes now
    assert b.state == OPEN


def test_a_disabled_breaker_counts_but_never_opens() -> None:
    b, _, _ = breaker(enabled=False, consecutive_failures=1)
    for _ in range(5):
        b.failure()
    assert b.state == CLOSED and b.consecutive_failures == 5 and b.available()


# -- through the proxy ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def second_server() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as server:
        yield server


@pytest.fixture
def second(second_server: ScriptedUpstream) -> Iterator[ScriptedUpstream]:
    second_server.reset()
    yield second_server
    second_server.reset()


def post(running: Any) -> httpx.Response:
    return httpx.post(running.url + "/openai/chat/completions", json=CHAT, timeout=10)


class GatedUpstream:
    """An OpenAI-shaped upstream that answers `status`, each answer held until `gate` is set: a probe
    stays in flight exactly as long as the test needs, whatever the machine's load."""

    def __init__(self) -> None:
        self.status = 503
        self.gate = threading.Event()
        self.gate.set()
        self.requests = 0
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                upstream.requests += 1
                assert upstream.gate.wait(60)
                body = json.dumps(
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "gpt-test",
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }
                    if upstream.status == 200
                    else {"error": {"message": "unavailable", "type": "server_error"}}
                ).encode()
                self.send_response(upstream.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gated() -> Iterator[GatedUpstream]:
    server = GatedUpstream()
    yield server
    server.close()


def test_breaker_opens_fails_fast_then_half_opens_with_one_probe(make_interlock: Any, gated: GatedUpstream) -> None:
    config = route(
        "openai",
        [{"name": "only", "url": gated.url + "/v1"}],
        retry={"attempts": 1},
        breaker={"consecutive_failures": 2, "cooldown": 30.0},
    )
    running = make_interlock(routes={"openai": config})
    # The cooldown passes when the test says so (a fake clock), not when a loaded machine gets to it.
    clock = Clock()
    for router in running.runtime.forwarder.routers.values():
        router.set_clock(clock)
    calls = collect_calls(running)
    assert post(running).status_code == 503
    assert breaker_state(running, "openai", "only", "gpt-test") == "closed"
    assert post(running).status_code == 503
    assert breaker_state(running, "openai", "only", "gpt-test") == "open"
    assert breaker_state(running, "openai", "only") == "closed"  # statuses: the model's breaker only
    entry = upstreams_state(running)["routes"]["openai"]["upstreams"][0]["models"]["gpt-test"]
    assert entry["consecutive_failures"] == 2 and entry["reason"] == "2 consecutive failures"

    # Open: fail fast, without touching the upstream.
    response = post(running)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "circuit_open"
    assert response.headers["x-should-retry"] == "false"
    assert gated.requests == 2
    assert finished(calls, 3)[2].attempts == []

    # After the cooldown: half-open. The single probe is held upstream; a call meanwhile still fails fast.
    clock.now += 30.0
    assert breaker_state(running, "openai", "only", "gpt-test") == "half_open"
    gated.status = 200
    gated.gate.clear()
    results: list[int] = []
    probe = threading.Thread(target=lambda: results.append(post(running).status_code))
    probe.start()
    wait_for(lambda: gated.requests == 3)
    during = post(running)
    assert during.status_code == 503 and during.json()["error"]["code"] == "circuit_open"
    gated.gate.set()
    probe.join(30)
    assert results == [200]
    assert gated.requests == 3
    assert breaker_state(running, "openai", "only", "gpt-test") == "closed"
    assert post(running).status_code == 200


def test_an_open_breaker_is_skipped_for_the_next_upstream(
    make_interlock: Any, upstream: ScriptedUpstream, second: ScriptedUpstream
) -> None:
    config = route(
        "openai",
        [{"name": "a", "url": upstream.url + "/v1"}, {"name": "b", "url": second.url + "/v1"}],
        breaker={"consecutive_failures": 1, "cooldown": 60},
    )
    running = make_interlock(routes={"openai": config})
    calls = collect_calls(running)
    upstream.set_default(Script(status=503))
    assert post(running).status_code == 200  # a fails (and opens), b answers
    assert breaker_state(running, "openai", "a", "gpt-test") == "open"
    assert post(running).status_code == 200
    assert len(upstream.requests) == 1 and len(second.requests) == 2
    first, skipped = finished(calls, 2)
    assert [a.upstream for a in first.attempts] == ["a", "b"]
    assert [a.upstream for a in skipped.attempts] == ["b"]


def test_a_stream_broken_midway_counts_against_the_upstream(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    config = route(
        "openai",
        [{"name": "only", "url": upstream.url + "/v1"}],
        breaker={"consecutive_failures": 1, "cooldown": 60},
    )
    running = make_interlock(routes={"openai": config})
    upstream.script(Script(reset_after=2))
    body = {**CHAT, "stream": True}
    with httpx.stream("POST", running.url + "/openai/chat/completions", json=body) as response:
        assert b"stream_broken" in response.read()
    wait_for(lambda: breaker_state(running, "openai", "only") == "open")


def test_breaker_escalation_webhook(make_interlock: Any, upstream: ScriptedUpstream, second: ScriptedUpstream) -> None:
    config = route(
        "openai", [{"name": "only", "url": upstream.url + "/v1"}], breaker={"consecutive_failures": 3, "cooldown": 60}
    )
    running = make_interlock(
        routes={"openai": config}, escalation={"webhook": second.url + "/hook", "headers": {"x-token": "t"}}
    )
    upstream.set_default(Script(status=503))
    response = post(running)
    assert response.status_code == 503 and response.headers["x-should-retry"] == "false"
    wait_for(lambda: len(second.requests) >= 2)
    events = {r.json()["event"]: r for r in second.requests}
    exhausted = events["retries_exhausted"].json()
    assert exhausted["route"] == "openai" and exhausted["reason"] == "attempts"
    assert [a["status"] for a in exhausted["attempts"]] == [503, 503, 503]
    opened = events["breaker_open"].json()
    assert opened["upstream"] == "only" and opened["consecutive_failures"] == 3
    assert events["breaker_open"].path == "/hook" and events["breaker_open"].headers["x-token"] == "t"
    assert "messages" not in events["retries_exhausted"].body.decode()
    wait_for(lambda: upstreams_state(running)["escalation"]["sent"] == 2)


# -- escalation stays off the hot path -----------------------------------------------------------------


async def test_escalation_drops_rather_than_waits_and_survives_a_failing_webhook() -> None:
    from interlock.config import Escalation
    from interlock.proxy.escalation import Escalator

    release = asyncio.Event()
    seen: list[dict[str, Any]] = []

    async def hanging(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        await release.wait()
        return httpx.Response(500)

    async with httpx.AsyncClient(transport=httpx.MockTransport(hanging)) as client:
        escalator = Escalator(Escalation(webhook="http://hook.test/", queue_size=3, timeout=5), client)
        for i in range(20):
            escalator.emit("breaker_open", n=i)  # synchronous: returns at once, never awaits the webhook
        wait = asyncio.get_running_loop().time() + 60  # a bound, not a pace: met in milliseconds
        while not seen and asyncio.get_running_loop().time() < wait:
            await asyncio.sleep(0.001)
        assert seen[0]["event"] == "breaker_open" and seen[0]["n"] == 0
        assert escalator.dropped == 20 - 3  # the queue holds three; the rest are dropped, not waited for
        release.set()
        while escalator.failed < 3 and asyncio.get_running_loop().time() < wait:
            await asyncio.sleep(0.001)
        assert escalator.failed == 3 and escalator.sent == 0  # a 500 counts as failed, nothing raised
        await escalator.aclose()


def test_no_webhook_means_no_task() -> None:
    from interlock.config import Escalation
    from interlock.proxy.escalation import Escalator

    escalator = Escalator(Escalation(), httpx.AsyncClient())
    escalator.emit("breaker_open")  # no running loop needed: nothing to do
    assert escalator.snapshot() == {"enabled": False, "sent": 0, "failed": 0, "dropped": 0, "queued": 0}
