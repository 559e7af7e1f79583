"""The kill switch (issue 22): a session or agent stopped through the admin API or the CLI has its
stream in flight ended with `session_stopped` within a second, its next calls refused (403 in the
protocol's shape, `x-should-retry: false`), the stop kept in the store across a restart, the
escalation webhook told; `resume` lifts it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from click.testing import CliRunner

from interlock.cli import main
from interlock.proxy.stops import StopGate, Stops
from interlock.proxy.usage import Usage
from interlock.scripted import ScriptedUpstream
from interlock.scripted.replies import Script
from interlock.testing import Running, make_call
from interlock.tracing.backend import open_store
from tests.proxy.routing_support import anthropic_client, openai_client, wait_for
from tests.sdk_errors import protocol_error

HI = [{"role": "user", "content": "hi"}]
#: A stream of 100 deltas that sends its first events, then stays open and silent until its client
#: leaves (the stop closes it): it cannot run out before the stop, however loaded the machine.
SLOW = Script(text="word " * 100, chunk_size=5, stall_after=8, stall_seconds=600)


@pytest.fixture(scope="module")
def hook() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as server:
        yield server


@pytest.fixture
def running(make_interlock: Any, hook: ScriptedUpstream) -> Running:
    hook.reset()
    return make_interlock(escalation={"webhook": hook.url + "/hook"})  # type: ignore[no-any-return]


@pytest.fixture
def held() -> Iterator[threading.Event]:
    """An upstream answer held until the test ends (`Script(hold=...)`): however slow the machine,
    a stop never races the answer it must come before."""
    release = threading.Event()
    yield release
    release.set()


def client(running: Running, session: str = "run-1", agent: str = "coder") -> openai.OpenAI:
    """An SDK client for this session and agent (closed after the test)."""
    return openai_client(running, default_headers={"X-Interlock-Session": session, "X-Interlock-Agent": agent})


def admin(running: Running, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.post(running.admin_url + path, json=body, timeout=30)


class Reader(threading.Thread):
    """Reads a stream in the background: how much arrived, and how it ended."""

    def __init__(self, start_stream: Any) -> None:
        super().__init__(daemon=True)
        self.start_stream = start_stream
        self.chunks = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for _ in self.start_stream():
                self.chunks += 1
        except Exception as exc:  # noqa: BLE001 - the test reads it
            self.error = exc


def ended_by_the_stop(reader: Reader) -> bool:
    """The stream ended with an error before the upstream's 100 deltas were all relayed: the stop
    cut it, it did not run out. (How soon, the issue's second, is a pace no test asserts on a loaded
    machine; the join's bound only catches a stream the stop never ended.)"""
    reader.join(timeout=30)
    return not reader.is_alive() and reader.error is not None and reader.chunks < 100


def test_a_session_stopped_mid_stream_ends_within_a_second_and_stays_stopped(
    running: Running, upstream: ScriptedUpstream, hook: ScriptedUpstream, make_interlock: Any
) -> None:
    upstream.script(SLOW)
    sdk = client(running)
    reader = Reader(lambda: sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True))
    reader.start()
    wait_for(lambda: reader.chunks >= 3)  # the stream is flowing
    stopped = admin(running, "/api/sessions/run-1/stop", {"reason": "runaway spend"})
    assert stopped.status_code == 200 and stopped.json()["calls_ended"] == 1
    assert ended_by_the_stop(reader)
    assert isinstance(reader.error, openai.APIError)
    error = protocol_error(reader.error)
    assert error["code"] == "session_stopped" and "runaway spend" in error["message"]

    # The next call of that session is refused; another session goes on.
    with pytest.raises(openai.PermissionDeniedError) as refused:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    assert protocol_error(refused.value)["code"] == "session_stopped"
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert client(running, "run-2").chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]

    wait_for(lambda: any(r.json()["event"] == "session_stopped" for r in hook.requests))
    [event] = [r.json() for r in hook.requests if r.json()["event"] == "session_stopped"]
    assert event["session"] == "run-1" and event["reason"] == "runaway spend"
    assert httpx.get(running.admin_url + "/api/stops").json()["stops"][0]["name"] == "run-1"

    # Kept in the store: a restarted interlock on it still refuses the session.
    again = make_interlock(store={"path": running.settings.store.path})
    with pytest.raises(openai.PermissionDeniedError):
        client(again).chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]

    # Resumed: calls go through again.
    assert admin(again, "/api/sessions/run-1/resume").json()["resumed"] is True
    reply = client(again).chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "echo: hi"
    assert admin(again, "/api/sessions/run-1/resume").json()["resumed"] is False


def test_an_anthropic_stream_is_ended_with_its_error_event(running: Running, upstream: ScriptedUpstream) -> None:
    upstream.script(SLOW)
    sdk = anthropic_client(running)
    headers = {"X-Interlock-Session": "run-a"}

    def stream() -> Any:
        return sdk.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=512,
            messages=HI,  # type: ignore[arg-type]
            stream=True,
            extra_headers=headers,
        )

    reader = Reader(stream)
    reader.start()
    wait_for(lambda: reader.chunks >= 3)
    admin(running, "/api/sessions/run-a/stop")
    assert ended_by_the_stop(reader)
    assert isinstance(reader.error, anthropic.APIError)
    assert protocol_error(reader.error)["code"] == "session_stopped"


def test_a_call_waiting_for_its_answer_is_ended_with_the_error_reply(
    running: Running, upstream: ScriptedUpstream, held: threading.Event
) -> None:
    upstream.script(Script(hold=held))  # no answer until the test ends: only the stop can end the call
    sdk = client(running, "waiting")
    reader = Reader(lambda: [sdk.chat.completions.create(model="gpt-4o-mini", messages=HI)])
    reader.start()
    wait_for(lambda: len(upstream.requests) >= 1)  # the call is in flight, upstream
    stopped = admin(running, "/api/sessions/waiting/stop", {"reason": "enough"})
    assert stopped.json()["calls_ended"] == 1
    reader.join(timeout=30)
    assert not reader.is_alive() and reader.error is not None  # ended by the stop, not by the answer
    assert isinstance(reader.error, openai.PermissionDeniedError)
    assert protocol_error(reader.error)["code"] == "session_stopped"


def test_an_agent_stopped_from_the_cli_is_refused_everywhere(running: Running) -> None:
    store = running.settings.store.path
    result = CliRunner().invoke(main, ["agents", "stop", "coder", "--reason", "off the rails", "--store", store])
    assert result.exit_code == 0, result.output

    def refused() -> bool:
        try:
            client(running, "any-session").chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
        except openai.PermissionDeniedError as exc:
            error = protocol_error(exc)
            return error["code"] == "agent_stopped" and "off the rails" in error["message"]
        return False

    wait_for(refused)  # applied by the running interlock from the store within its poll interval
    assert client(running, "any-session", agent="writer").chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    listed = CliRunner().invoke(main, ["agents", "stopped", "--store", store, "--json"])
    assert '"name": "coder"' in listed.output
    resumed = CliRunner().invoke(main, ["agents", "resume", "coder", "--store", store])
    assert resumed.exit_code == 0, resumed.output
    wait_for(lambda: not refused())
    unknown = CliRunner().invoke(main, ["sessions", "resume", "never-stopped", "--store", store])
    assert unknown.exit_code == 1


@pytest.mark.slow
def test_a_stop_is_shared_by_a_fleet_on_postgresql(make_interlock: Any, postgres_server: Any) -> None:
    """Two interlocks on one PostgreSQL store: a session stopped through one is refused by the other
    within its poll interval, and resumed on both."""
    url = postgres_server.database("kill_switch_fleet")
    first = make_interlock(store={"url": url})
    second = make_interlock(store={"url": url})
    assert admin(first, "/api/sessions/shared-run/stop", {"reason": "fleet-wide"}).status_code == 200

    def refused_by_second() -> bool:
        try:
            client(second, "shared-run").chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
        except openai.PermissionDeniedError as exc:
            return protocol_error(exc)["code"] == "session_stopped"
        return False

    wait_for(refused_by_second)
    assert admin(second, "/api/sessions/shared-run/resume").json()["resumed"] is True
    wait_for(lambda: not refused_by_second())
    # And the first one lifts it too, from the store.
    wait_for(lambda: ("session", "shared-run") not in first.runtime.stops.stopped)


def test_a_stop_made_with_an_unreadable_configuration_says_it_was_not_escalated(tmp_path: Path) -> None:
    store = str(tmp_path / "interlock.db")
    config = tmp_path / "interlock.yaml"
    config.write_text("escalation: [not, a, mapping]\n")
    result = CliRunner().invoke(main, ["sessions", "stop", "run-9", "--store", store, "--config", str(config)])
    assert result.exit_code == 0, result.output  # the stop is made all the same
    assert "session_stopped not escalated" in result.stderr  # and the missing webhook post is said, not silent
    listed = CliRunner().invoke(main, ["sessions", "stopped", "--store", store, "--json"])
    assert '"name": "run-9"' in listed.output


async def test_stops_unread_at_start_keep_ready_waiting_and_mark_each_call(tmp_path: Path) -> None:
    """A store whose stops cannot be read at start would let a stopped session through unseen: `/ready`
    waits for the gate (`warmed`) and every call meanwhile records that the kill switch was not checked."""
    store = open_store(tmp_path / "interlock.db")
    store.close()  # reading the stops now fails
    stops = Stops(store, poll_interval=3600)
    gate = StopGate(stops)
    await stops.start()
    try:
        assert not gate.warmed.is_set()
        call = make_call(session="run-1")
        await gate.request(call)
        assert [(d.stage, d.action) for d in call.decisions] == [("stops", "error")]
        stops.store = open_store(tmp_path / "interlock.db")  # the store is back
        await stops.refresh()
        assert gate.warmed.is_set()
        later = make_call(session="run-1")
        await gate.request(later)
        assert later.decisions == [] and later.reply is None
    finally:
        await stops.aclose()
        stops.store.close()


def with_a_tiny_budget(make_interlock: Any, tmp_path: Path) -> Running:
    """An interlock whose agents' money budget is spent by any priced call."""
    (tmp_path / "policies").mkdir()
    rule = "rules:\n  - name: tiny\n    limits: {budget_usd_per_day: 0.000001}\n"
    (tmp_path / "policies" / "p.yaml").write_text(rule)
    running: Running = make_interlock(policies=[str(tmp_path / "policies")])
    return running


def assert_budget_spent(running: Running) -> None:
    """The budget counted the stopped call: the agent's next call, in another session, is refused."""
    with pytest.raises(openai.APIStatusError) as refused:
        client(running, "next").chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    assert protocol_error(refused.value)["code"] == "budget_exceeded"


def recorded_stop(running: Running) -> dict[str, Any]:
    """The newest recorded call, once the writer has it: a call the kill switch ended."""
    recorder = running.runtime.recorder
    assert recorder is not None

    def newest() -> dict[str, Any] | None:
        assert recorder.flush()
        calls = running.runtime.store.list_calls(limit=10)
        return calls[0] if calls else None

    wait_for(lambda: newest() is not None)
    call = newest()
    assert call is not None and call["error_code"] == "session_stopped"
    return call


def call_meta(running: Running, row: dict[str, Any]) -> dict[str, Any]:
    full = running.runtime.store.get_call(row["id"])
    assert full is not None
    return full.meta


def test_a_stopped_stream_is_priced_as_far_as_known_and_counts_against_the_budget(
    make_interlock: Any, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    # OpenAI reports a stream's usage only at its end, which a stopped stream never reaches: the
    # usage is estimated from the texts and marked so, priced, and counted by the agent's budget.
    running = with_a_tiny_budget(make_interlock, tmp_path)
    upstream.script(SLOW)
    sdk = client(running, "spender")
    reader = Reader(lambda: sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True))
    reader.start()
    wait_for(lambda: reader.chunks >= 3)
    assert admin(running, "/api/sessions/spender/stop").json()["calls_ended"] == 1
    assert ended_by_the_stop(reader)

    call = recorded_stop(running)
    assert call["output_tokens"] and call["input_tokens"] and call["cost_usd"] and call["cost_usd"] > 0
    assert call_meta(running, call)["usage_estimated"] is True

    assert_budget_spent(running)


def test_a_call_stopped_before_its_answer_is_priced_on_its_prompt_and_counts_against_the_budget(
    make_interlock: Any, upstream: ScriptedUpstream, tmp_path: Path, held: threading.Event
) -> None:
    # The upstream has the request (and may bill its prompt) but no answer head arrived before the
    # stop: the input is estimated from the request's texts, marked so, priced, and counted.
    running = with_a_tiny_budget(make_interlock, tmp_path)
    upstream.script(Script(hold=held))  # no answer head until the test ends
    sdk = client(running, "waiter")
    prompt = [{"role": "user", "content": "a long question " * 100}]  # ~1600 characters: ~400 tokens
    reader = Reader(lambda: [sdk.chat.completions.create(model="gpt-4o-mini", messages=prompt)])  # type: ignore[arg-type]
    reader.start()
    wait_for(lambda: len(upstream.requests) >= 1)
    assert admin(running, "/api/sessions/waiter/stop").json()["calls_ended"] == 1
    reader.join(timeout=30)
    assert isinstance(reader.error, openai.PermissionDeniedError)

    call = recorded_stop(running)
    assert call["input_tokens"] >= 400 and call["output_tokens"] == 0
    assert call["cost_usd"] and call["cost_usd"] > 0
    assert call_meta(running, call)["usage_estimated"] is True

    assert_budget_spent(running)


def test_a_call_stopped_before_it_left_is_not_priced() -> None:
    # Stopped while the request stages ran: no upstream had it, so nothing is billed or counted.
    call = make_call()
    call.halted = ("session_stopped", "stopped")
    asyncio.run(Usage().seal(call))
    assert call.input_tokens is None and call.cost_usd is None and "usage_estimated" not in call.meta
