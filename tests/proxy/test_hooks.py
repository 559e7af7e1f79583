"""Every hook in interlock/proxy/hooks.py is called when it should be — this test fails if a hook
is added to HOOKS without being exercised here."""

from __future__ import annotations

import json
from typing import Any

import httpx

from interlock.core.call import Call, Decision, Reply
from interlock.core.views import Event
from interlock.protocols import ADAPTERS
from interlock.proxy.hooks import HOOKS
from interlock.scripted import Script, ScriptedUpstream
from interlock.testing import Running


class Spy:
    """Implements every hook; records the order; can refuse calls and rewrite chunks."""

    name = "spy"

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    async def request(self, call: Call) -> None:
        self.events.append(("request", call.path))
        if call.path.endswith("/refuse"):
            call.decide(Decision("spy", "deny", rule="spy-rule", reason="test"))
            call.answer(Reply(403, b'{"error": {"code": "policy_denied"}}'), "denied", "policy_denied", "refused")

    def response_head(self, call: Call) -> None:  # sync hooks work too
        self.events.append(("response_head", str(call.status)))

    async def chunk(self, call: Call, events: list[Event], last: bool) -> list[Event]:
        self.events.append(("chunk", "last" if last else "data"))
        assert all(e.raw.endswith(b"\n\n") for e in events)  # whole events, split once by the proxy
        adapter = ADAPTERS[call.protocol]
        # A rewritten event is made by the adapter from new JSON (the event's own parse is shared).
        return [
            adapter.new_event(e.event, json.loads(e.data.replace("secret", "******"))) if "secret" in e.data else e
            for e in events
        ]

    async def response(self, call: Call) -> None:
        self.events.append(("response", call.path))

    async def error(self, call: Call, exc: BaseException) -> None:
        self.events.append(("error", type(exc).__name__))

    async def seal(self, call: Call) -> None:
        self.events.append(("seal", call.outcome))

    async def done(self, call: Call) -> None:
        self.events.append(("done", call.outcome))


def install(running: Running) -> Spy:
    spy = Spy()
    pipeline = running.runtime.pipeline
    for name in HOOKS:
        pipeline.hooks[name].append(_async(getattr(spy, name)))
    pipeline.has_chunk_hooks = True
    return spy


def _async(method: Any) -> Any:
    import inspect

    if inspect.iscoroutinefunction(method):
        return method

    async def call(*args: Any) -> Any:
        return method(*args)

    return call


def wait_done(spy: Spy, count: int) -> None:
    import time

    deadline = time.monotonic() + 10
    while sum(1 for e in spy.events if e[0] == "done") < count:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_every_hook_fires_in_order(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    routes = {"openai": {"upstream": upstream.url + "/v1"}, "dead": {"upstream": "http://127.0.0.1:9/v1"}}
    running = make_interlock(routes=routes)
    spy = install(running)
    seen: set[str] = set()

    # A stream: request → response_head → chunk... → chunk(last) → response → seal → done; chunks rewritten.
    upstream.script(Script(text="a secret here", chunk_size=20))
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
    text = httpx.post(running.url + "/openai/chat/completions", json=body).text
    assert "secret" not in text and "a ****** here" in text
    wait_done(spy, 1)
    names = [e[0] for e in spy.events]
    assert names[:2] == ["request", "response_head"]
    assert names[-4:] == ["chunk", "response", "seal", "done"] and spy.events[-4] == ("chunk", "last")
    seen.update(names)

    # A refusal: the upstream is never asked, the agent gets the stage's reply.
    spy.events.clear()
    count = len(upstream.requests)
    response = httpx.post(running.url + "/openai/refuse", json={})
    assert response.status_code == 403
    wait_done(spy, 1)
    assert spy.events == [("request", "/refuse"), ("seal", "denied"), ("done", "denied")]
    assert len(upstream.requests) == count

    # No upstream at all: the error hook sees why.
    spy.events.clear()
    response = httpx.post(running.url + "/dead/chat/completions", json={"model": "m", "messages": []})
    assert response.status_code == 502
    wait_done(spy, 1)
    assert ("error", "UpstreamFailure") in spy.events and spy.events[-1] == ("done", "upstream_error")
    seen.update(e[0] for e in spy.events)

    assert seen == set(HOOKS), f"hooks never exercised: {set(HOOKS) - seen}"
