"""Two interlocks sharing their state on a real redis-server (issue 19): a budget and a concurrency
limit counted once for the fleet, reversible redaction across replicas, and each concern's failure
mode while Redis is down. The agents are the real openai SDK; the provider is the scripted one."""

from __future__ import annotations

import itertools
import signal
import socket
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from interlock.scripted import Script, ScriptedUpstream
from interlock.testing import Running, run_interlock, settings_for_test
from tests.conftest import closed_after_test, routes_for
from tests.sdk_errors import protocol_error
from tests.servers import RedisServer

#: Starts a real redis-server or interlock processes (tests/servers.py, the CLI).
pytestmark = pytest.mark.slow

VAULT_KEY = "a test vault key, 32 characters or more"
#: $1 per input and per output token: a scripted call (11 + 7 tokens) costs $18.
PRICES = {"gpt-4o*": {"input": 1_000_000, "output": 1_000_000}}

Start = Callable[..., Running]


@pytest.fixture
def fleet(upstream: ScriptedUpstream, redis_server: RedisServer, tmp_path: Path) -> Iterator[Start]:
    """Start interlocks on one Redis (a fresh key prefix per test), each with its own store file;
    `policy` is a policy file's text; extra keyword arguments merge into interlock.yaml."""
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    count = itertools.count()
    with ExitStack() as stack:

        def start(policy: str | None = None, state: dict[str, Any] | None = None, **config: Any) -> Running:
            home = tmp_path / f"replica{next(count)}"
            home.mkdir()
            data: dict[str, Any] = {
                "routes": routes_for(upstream),
                "shutdown_grace": 2,
                "prices": PRICES,
                "state": {"url": redis_server.url, "key_prefix": prefix, "vault_key": VAULT_KEY, **(state or {})},
                **config,
            }
            if policy is not None:
                (home / "policy.yaml").write_text(textwrap.dedent(policy))
                data["policies"] = [str(home / "policy.yaml")]
            return stack.enter_context(run_interlock(settings_for_test(data, home)))

        yield start


def client(running: Running, agent: str = "support-bot", **headers: str) -> openai.OpenAI:
    """An openai SDK client for this agent (closed after the test); a bounded wait, no retries."""
    made = openai.OpenAI(
        base_url=running.url + "/openai",
        api_key="sk-agent",
        max_retries=0,
        timeout=30,
        default_headers={"X-Interlock-Agent": agent, **headers},
    )
    closed_after_test(made)
    return made


def recorded(running: Running, count: int) -> list[Any]:
    store = running.runtime.store
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        calls = list(store.iter_calls())
        if len(calls) >= count:
            return calls
        time.sleep(0.02)
    raise AssertionError(f"{count} calls were not recorded in 30 s")


def test_a_budget_and_a_concurrency_limit_are_shared_exactly(fleet: Start, upstream: ScriptedUpstream) -> None:
    policy = """
        rules:
          - name: fleet-budget
            limits: {budget_usd_per_day: 100, concurrent: 1}
        """
    replicas = [fleet(policy), fleet(policy)]
    clients = [client(r) for r in replicas]
    admitted: list[int] = []
    refusals: dict[str, int] = {}
    lock = threading.Lock()

    def agent(worker: int) -> None:
        # Calls alternate between the replicas until the budget refuses; one in flight at a time
        # fleet-wide, so every admission sees the cost of every call before it.
        for attempt in range(2000):
            try:
                clients[(worker + attempt) % 2].chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
                )
            except openai.APIStatusError as exc:
                code = protocol_error(exc)["code"]
                with lock:
                    refusals[code] = refusals.get(code, 0) + 1
                if code == "budget_exceeded":
                    return
                assert code == "rate_limited"
                time.sleep(0.005)  # a polite agent's pause before it tries again, not a wait for a state
            else:
                with lock:
                    admitted.append(worker)
        raise AssertionError("the budget never refused")

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    # $18 a call: five calls leave $90 (< $100), the sixth crosses the budget, none after it.
    assert len(admitted) == 6 and len(upstream.requests) == 6
    assert refusals["budget_exceeded"] == 8
    snapshot = replicas[0].run(replicas[0].runtime.policy_limiter.snapshot(time.time()))
    assert snapshot["daily"] == {"fleet-budget agent:support-bot": {"tokens": 6 * 18, "usd": 6 * 18.0}}
    assert snapshot["inflight"] == {} and snapshot["uncounted"] == 0  # every slot released, wherever taken


def test_reversible_redaction_across_replicas(
    fleet: Start, upstream: ScriptedUpstream, redis_server: RedisServer
) -> None:
    guardrails = {"request": {"EMAIL_ADDRESS": "redact"}, "entities": ["EMAIL_ADDRESS"], "secrets": False}
    a, b = fleet(guardrails=guardrails), fleet(guardrails=guardrails)
    session = {"X-Interlock-Session": "s-fleet"}
    turn1 = [{"role": "user", "content": "mail ada@example.com please"}]
    first = client(a, **session).chat.completions.create(model="gpt-4o", messages=turn1)
    assert first.choices[0].message.content == "echo: mail ada@example.com please"
    # Turn 2 on the other replica: the provider answers with turn 1's placeholder and a new one.
    upstream.script(Script(text="sent to <EMAIL_ADDRESS_1>, cc <EMAIL_ADDRESS_2>"))
    turn2 = [
        *turn1,
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "cc bob@example.com"},
    ]
    second = client(b, **session).chat.completions.create(model="gpt-4o", messages=turn2)
    assert second.choices[0].message.content == "sent to ada@example.com, cc bob@example.com"
    sent = [r.body for r in upstream.requests]
    assert all(b"@example.com" not in body for body in sent)
    assert b"mail <EMAIL_ADDRESS_1> please" in sent[1] and b"cc <EMAIL_ADDRESS_2>" in sent[1]
    for running in (a, b):
        for call in recorded(running, 1):
            for body in (call.request_body, call.response_body, call.upstream_body):
                assert body is None or b"@example.com" not in body
    assert b"@example.com" not in redis_dump(redis_server)  # encrypted at rest


def redis_dump(server: RedisServer) -> bytes:
    """Every key and value on the server, raw (DUMP), to look for plaintext."""
    import redis

    with redis.Redis.from_url(server.url) as r:
        return b"".join(key + (r.dump(key) or b"") for key in r.scan_iter(count=1000))


@pytest.fixture
def redis_down(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The session's Redis stopped for the test, started again after it (on its port)."""
    redis_server.stop()
    try:
        yield redis_server
    finally:
        redis_server.start()


def test_each_concern_follows_its_failure_mode_while_redis_is_down(
    fleet: Start, upstream: ScriptedUpstream, request: pytest.FixtureRequest
) -> None:
    policy = """
        rules:
          - name: rate
            match: {agent: "rate-*"}
            limits: {requests_per_minute: 100, concurrent: 4}
          - name: budget
            match: {agent: "budget-*"}
            limits: {budget_usd_per_day: 100}
        """
    guardrails = {"request": {"EMAIL_ADDRESS": "redact"}, "entities": ["EMAIL_ADDRESS"], "secrets": False}
    # Redis is down (refused at once), not stalled: the bound only has to hold the calls made while it is up.
    defaults = fleet(policy, state={"timeout": 3.0}, guardrails=guardrails)
    strict = fleet(policy, state={"timeout": 3.0, "on_failure": {"rate": "fail_closed"}}, guardrails=guardrails)
    hi = [{"role": "user", "content": "hi"}]
    client(defaults, "rate-1").chat.completions.create(model="gpt-4o", messages=hi)  # Redis up: fine
    request.getfixturevalue("redis_down")
    assert _refused_port(int(defaults.settings.state.url.rsplit(":", 1)[1].split("/")[0]))  # type: ignore[union-attr]

    # rate and concurrency fail open by default: the call passes, the gap is on its record
    reply = client(defaults, "rate-1").chat.completions.create(model="gpt-4o", messages=hi)
    assert reply.choices[0].message.content == "echo: hi"
    gaps = [d for d in recorded(defaults, 2)[-1].decisions if d.stage == "limits" and d.action == "error"]
    assert gaps and gaps[0].rule == "rate"
    # ... and closed when configured so
    with pytest.raises(openai.InternalServerError) as caught:
        client(strict, "rate-1").chat.completions.create(model="gpt-4o", messages=hi)
    assert caught.value.status_code == 503 and protocol_error(caught.value)["code"] == "state_unavailable"
    # a money budget fails closed by default
    with pytest.raises(openai.InternalServerError) as caught:
        client(defaults, "budget-1").chat.completions.create(model="gpt-4o", messages=hi)
    assert caught.value.status_code == 503 and protocol_error(caught.value)["code"] == "state_unavailable"
    # a value to redact cannot get its placeholder: refused, never sent upstream in the clear
    before = len(upstream.requests)
    mail = [{"role": "user", "content": "mail ada@example.com"}]
    with pytest.raises(openai.InternalServerError) as caught:
        client(defaults, "other").chat.completions.create(model="gpt-4o", messages=mail)
    assert protocol_error(caught.value)["code"] == "vault_unavailable"
    # a reply holding a placeholder it cannot restore is refused, streamed or not
    upstream.script(Script(text="sent to <EMAIL_ADDRESS_1>"), Script(text="sent to <EMAIL_ADDRESS_1>"))
    with pytest.raises(openai.InternalServerError) as caught:
        client(defaults, "other").chat.completions.create(model="gpt-4o", messages=hi)
    assert protocol_error(caught.value)["code"] == "vault_unavailable"
    stream = client(defaults, "other").chat.completions.create(model="gpt-4o", messages=hi, stream=True)
    with pytest.raises(openai.APIError) as streamed:
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert "<EMAIL_ADDRESS_1>" not in text
    assert protocol_error(streamed.value)["code"] == "vault_unavailable"
    assert all(b"ada@example.com" not in r.body for r in upstream.requests[before:])
    # a call with nothing to redact and no placeholder in its reply goes on
    assert client(defaults, "other").chat.completions.create(model="gpt-4o", messages=hi).choices
    # the admin API says the counters cannot be read (a 200, not a 500)
    answer = httpx.get(defaults.admin_url + "/api/policies", timeout=30)
    assert answer.status_code == 200 and "unavailable" in answer.json()["counters"]


def _refused_port(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def test_a_stalled_redis_never_hangs_a_call(fleet: Start, redis_server: RedisServer) -> None:
    policy = """
        rules:
          - name: budget
            limits: {budget_usd_per_day: 100}
        """
    # A bound a loaded machine's round trips stay under (0.3 s failed the first, unstalled call in CI
    # at load average 10); the stalled server is stopped, so the call waits the whole bound whatever it is.
    running = fleet(policy, state={"timeout": 3.0})
    hi = [{"role": "user", "content": "hi"}]
    client(running).chat.completions.create(model="gpt-4o", messages=hi)  # connections made, scripts loaded
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)  # accepts nothing, answers nothing: a stalled server
    try:
        with pytest.raises(openai.InternalServerError) as caught:  # the SDK's own bound is 30 s
            client(running).chat.completions.create(model="gpt-4o", messages=hi)
        assert protocol_error(caught.value)["code"] == "state_unavailable"
        assert "timed out" in protocol_error(caught.value)["message"]
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    # Redis answers again: so does the budget, on fresh connections
    assert client(running).chat.completions.create(model="gpt-4o", messages=hi).choices
