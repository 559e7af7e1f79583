"""Routing: fallback across upstreams, strategies, model aliases, and the upstreams admin API."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from interlock.config import Route, settings_from_document
from interlock.proxy.routing import Router, Slot
from interlock.scripted import Script, ScriptedUpstream
from interlock.yamlsource import SourceError, parse_yaml
from tests.proxy.routing_support import (
    CHAT,
    closed_url,
    collect_calls,
    finished,
    openai_client,
    route,
    upstreams_state,
    wait_for,
)


@pytest.fixture(scope="module")
def second_server() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as server:
        yield server


@pytest.fixture
def second(second_server: ScriptedUpstream) -> Iterator[ScriptedUpstream]:
    second_server.reset()
    yield second_server
    second_server.reset()


def test_connect_refused_falls_back_to_the_next_upstream(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    upstreams = [{"name": "dead", "url": closed_url()}, {"name": "live", "url": upstream.url + "/v1"}]
    running = make_interlock(routes={"openai": route("openai", upstreams)})
    calls = collect_calls(running)
    completion = openai_client(running).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "still there?"}]
    )
    assert completion.choices[0].message.content == "echo: still there?"
    (call,) = finished(calls)
    dead, live = call.attempts
    assert dead.upstream == "dead" and dead.status is None and (dead.error or "").startswith("connect:")
    assert live.upstream == "live" and live.status == 200 and live.backoff_ms == 0.0
    assert call.upstream == "live" and call.meta["fallback"] is True
    assert "retries_exhausted" not in call.meta


def test_a_503_fails_over_to_the_second_upstream(
    make_interlock: Any, upstream: ScriptedUpstream, second: ScriptedUpstream
) -> None:
    upstreams = [{"name": "a", "url": upstream.url + "/v1"}, {"name": "b", "url": second.url + "/v1"}]
    # same_target 1: one try on each target before moving on.
    running = make_interlock(routes={"openai": route("openai", upstreams, retry={"same_target": 1})})
    calls = collect_calls(running)
    upstream.script(Script(status=503))
    assert httpx.post(running.url + "/openai/chat/completions", json=CHAT).status_code == 200
    (call,) = finished(calls)
    assert [(a.upstream, a.status) for a in call.attempts] == [("a", 503), ("b", 200)]
    assert len(upstream.requests) == 1 and len(second.requests) == 1


def test_priority_decides_the_order(make_interlock: Any, upstream: ScriptedUpstream, second: ScriptedUpstream) -> None:
    upstreams = [
        {"name": "backup", "url": upstream.url + "/v1", "priority": 2},
        {"name": "main", "url": second.url + "/v1", "priority": 1},
    ]
    running = make_interlock(routes={"openai": route("openai", upstreams)})
    for _ in range(3):
        assert httpx.post(running.url + "/openai/chat/completions", json=CHAT).status_code == 200
    assert len(second.requests) == 3 and upstream.requests == []


def test_model_alias_falls_back_and_rewrites_the_model(
    make_interlock: Any, upstream: ScriptedUpstream, second: ScriptedUpstream
) -> None:
    upstreams = [{"name": "a", "url": upstream.url + "/v1"}, {"name": "b", "url": second.url + "/v1"}]
    models = {
        "smart": [
            {"upstream": "a", "model": "big-model", "retry": {"same_target": 1}},
            {"upstream": "b", "model": "small-model"},
        ]
    }
    running = make_interlock(routes={"openai": route("openai", upstreams, models=models)})
    calls = collect_calls(running)
    upstream.set_default(Script(status=503))
    completion = openai_client(running).chat.completions.create(
        model="smart", messages=[{"role": "user", "content": "who answers?"}], temperature=0.5
    )
    assert completion.model == "small-model"
    assert completion.choices[0].message.content == "echo: who answers?"
    sent_a, sent_b = upstream.requests[0].json(), second.requests[0].json()
    assert sent_a["model"] == "big-model" and sent_b["model"] == "small-model"
    # Only `model` changes: everything else is sent as the agent wrote it.
    assert {k: v for k, v in sent_b.items() if k != "model"} == {
        k: v for k, v in json.loads(upstream.requests[0].body).items() if k != "model"
    }
    assert sent_b["temperature"] == 0.5
    (call,) = finished(calls)
    assert [(a.upstream, a.model, a.status) for a in call.attempts] == [
        ("a", "big-model", 503),
        ("b", "small-model", 200),
    ]
    assert call.model == "smart" and call.upstream == "b" and call.meta["fallback"] is True
    assert call.upstream_body is not None and json.loads(call.upstream_body)["model"] == "small-model"
    assert call.upstream_body == second.requests[0].body


def test_a_model_that_is_no_alias_passes_untouched(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    models = {"smart": [{"model": "big-model"}]}
    running = make_interlock(
        routes={"openai": route("openai", [{"name": "a", "url": upstream.url + "/v1"}], models=models)}
    )
    calls = collect_calls(running)
    body = json.dumps(CHAT).encode()
    response = httpx.post(
        running.url + "/openai/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    assert upstream.requests[0].body == body
    (call,) = finished(calls)
    assert call.upstream_body is None and call.attempts[0].model == "gpt-test"


def test_upstreams_api_shows_breakers_and_inflight(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    upstreams = [{"name": "a", "url": upstream.url + "/v1", "weight": 2}, {"name": "b", "url": closed_url()}]
    running = make_interlock(routes={"openai": route("openai", upstreams, strategy="weight")})
    state = upstreams_state(running)
    entry = state["routes"]["openai"]
    assert entry["strategy"] == "weight"
    assert [u["name"] for u in entry["upstreams"]] == ["a", "b"]
    a = entry["upstreams"][0]
    assert a["inflight"] == 0 and a["weight"] == 2
    assert a["breaker"]["state"] == "closed" and a["breaker"]["consecutive_failures"] == 0
    assert state["escalation"]["enabled"] is False


# -- the choice of target, without a network ------------------------------------------------------


def router(strategy: str = "priority", **extra: Any) -> Router:
    upstreams = [{"name": n, "url": f"http://{n}.test", **extra.pop(n, {})} for n in ("a", "b", "c")]
    return Router("r", Route(upstreams=upstreams, strategy=strategy, **extra))  # type: ignore[arg-type]


def test_each_attempt_prefers_the_least_tried_target() -> None:
    r = router()
    plan = r.plan(None)
    tries: dict[Slot, int] = {}
    order = []
    for _ in range(6):
        target = r.pick(plan, "m", tries)
        assert target is not None
        slot = r.slot_of(target, "m")
        tries[slot] = tries.get(slot, 0) + 1
        order.append(target.state.name)
    assert order == ["a", "b", "c", "a", "b", "c"]


def test_open_breakers_are_skipped() -> None:
    r = router(breaker={"consecutive_failures": 1})
    r.states[0].breaker.failure()
    plan = r.plan(None)
    target = r.pick(plan)
    assert target is not None and target.state.name == "b"
    r.states[1].breaker.failure()
    r.states[2].breaker.failure()
    assert r.pick(plan) is None


def test_weighted_random_follows_the_weights() -> None:
    random.seed(4)
    r = router("weight", a={"weight": 3}, b={"weight": 1}, c={"weight": 0})
    plan = r.plan(None)
    counts = Counter(t.state.name for t in (r.pick(plan) for _ in range(4000)) if t is not None)
    assert counts["c"] == 0
    assert 2800 < counts["a"] < 3200 and 800 < counts["b"] < 1200
    # Once a and b were tried, the weight-0 upstream is the one left.
    tries = {r.slot_of(t, None): 1 for t in plan if t.state.name != "c"}
    last = r.pick(plan, None, tries)
    assert last is not None and last.state.name == "c"


def test_least_inflight_picks_the_idlest() -> None:
    r = router("least_inflight")
    r.states[0].inflight, r.states[1].inflight, r.states[2].inflight = 4, 1, 2
    target = r.pick(r.plan(None))
    assert target is not None and target.state.name == "b"


def test_alias_chain_order_and_expansion() -> None:
    models = {"smart": [{"upstream": "b", "model": "big"}, {"model": "small"}]}
    r = router(models=models)
    chain = r.plan("smart")
    assert [(t.state.name, t.model, t.rank) for t in chain] == [
        ("b", "big", 0),
        ("a", "small", 1),
        ("b", "small", 1),
        ("c", "small", 1),
    ]
    assert r.plan("other") is r.default_plan and r.plan(None) is r.default_plan


def test_an_alias_naming_an_unknown_upstream_is_a_config_error() -> None:
    text = """\
routes:
  openai:
    upstreams:
      - {name: a, url: "http://a.test"}
    models:
      smart: [{upstream: nope, model: m}]
"""
    with pytest.raises(SourceError) as caught:
        settings_from_document(parse_yaml(text, "interlock.yaml"))
    assert "interlock.yaml:" in str(caught.value) and "'nope'" in str(caught.value)


def test_breaker_min_calls_over_window_is_a_config_error() -> None:
    text = "routes:\n  r:\n    upstream: http://a.test\n    breaker: {window: 5, min_calls: 10}\n"
    with pytest.raises(SourceError) as caught:
        settings_from_document(parse_yaml(text, "interlock.yaml"))
    assert "min_calls" in str(caught.value)


def test_attempts_are_recorded_and_shown_by_traces_show(make_interlock: Any, upstream: ScriptedUpstream) -> None:
    from click.testing import CliRunner

    from interlock.cli import main

    upstreams = [{"name": "dead", "url": closed_url()}, {"name": "live", "url": upstream.url + "/v1"}]
    running = make_interlock(routes={"openai": route("openai", upstreams, retry={"attempts": 4, "same_target": 1})})
    calls = collect_calls(running)
    upstream.script(Script(status=503))
    assert httpx.post(running.url + "/openai/chat/completions", json=CHAT).status_code == 200
    (call,) = finished(calls)
    store = running.settings.store.path

    def show() -> str:
        result = CliRunner().invoke(main, ["traces", "show", "--store", store, call.id])
        return result.output if result.exit_code == 0 else ""

    wait_for(lambda: "attempts:" in show())
    lines = [line.strip() for line in show().splitlines() if line.strip().startswith("#")]
    assert [line.split()[1] for line in lines] == ["dead", "live", "dead", "live"]
    assert "error: connect:" in lines[0] and "status 503" in lines[1] and "status 200" in lines[3]
    assert call.attempts[3].backoff_ms == 0.0 or f"after backoff {call.attempts[3].backoff_ms:.0f}ms" in lines[3]


# -- per (upstream, model): slots, context windows, failover codes (issue 21) -------------------------------


def test_tries_and_breakers_are_per_upstream_and_model() -> None:
    models = {
        "smart": [
            {"upstream": "a", "model": "big"},
            {"upstream": "a", "model": "small"},
            {"upstream": "a", "model": "big"},
        ]
    }
    r = router(models=models, breaker={"consecutive_failures": 1})
    chain = r.plan("smart")
    assert r.slot_of(chain[0], None) is r.slot_of(chain[2], None)  # listed twice: one slot
    r.slot_of(chain[0], None).breaker.failure()  # big is down...
    target = r.pick(chain, "smart")
    assert target is not None and target.model == "small"  # ...small on the same upstream is not
    r.states[0].breaker.failure()  # the upstream's connections fail: every model on it is skipped
    assert r.pick(chain, "smart") is None
    snapshot = r.snapshot()["upstreams"][0]
    assert snapshot["breaker"]["state"] == "open" and snapshot["models"]["big"]["state"] == "open"
    assert snapshot["models"]["small"]["state"] == "closed"


def test_a_failover_picks_only_a_larger_declared_context_window() -> None:
    models = {
        "smart": [
            {"upstream": "a", "model": "m8k", "context_window": 8000},
            {"upstream": "a", "model": "m4k", "context_window": 4000},
            {"upstream": "a", "model": "unknown"},
            {"upstream": "b", "model": "m200k", "context_window": 200000},
        ]
    }
    r = router(models=models)
    chain = r.plan("smart")
    first = r.slot_of(chain[0], None)
    target = r.pick(chain, "smart", {first: 1}, skip={first}, min_window=8000)
    assert target is not None and target.model == "m200k"
    assert r.pick(chain, "smart", {first: 1}, skip={first}, min_window=200000) is None


def test_slots_for_models_asked_by_name_are_bounded() -> None:
    from interlock.proxy.routing import MAX_SLOTS

    r = router()
    state = r.states[0]
    for i in range(MAX_SLOTS * 3):
        state.slot(f"model-{i}")
    assert len(state.slots) <= MAX_SLOTS
    for slot in list(state.slots.values()):
        slot.breaker.state = "open"  # none can be forgotten: new names share one slot
    assert state.slot("another").model == "*" and state.slot("yet-another") is state.slot("another")
    assert len(state.slots) <= MAX_SLOTS + 1


def test_failover_codes_match_code_or_type_and_message_never_a_refusal() -> None:
    from interlock.config import Retry
    from interlock.proxy.retry import failover_code

    codes = Retry().failover_codes
    openai_body = b'{"error": {"message": "maximum context length", "type": "invalid_request_error", "code": "context_length_exceeded"}}'
    anthropic_body = b'{"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long: 9 tokens > 8 maximum"}}'
    other_400 = b'{"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: 10000 > 4096"}}'
    refusal = b'{"error": {"message": "context_length_exceeded", "type": "content_filter", "code": "context_length_exceeded"}}'
    assert failover_code(openai_body, codes) == "context_length_exceeded"
    assert failover_code(anthropic_body, codes) == "invalid_request_error: prompt is too long"
    assert failover_code(other_400, codes) is None
    assert failover_code(refusal, codes) is None
    assert failover_code(b"not json", codes) is None and failover_code(b"[1]", codes) is None


def test_a_failover_code_naming_a_refusal_is_a_config_error() -> None:
    text = "routes:\n  r:\n    upstream: http://a.test\n    retry:\n      failover_codes: [content_filter]\n"
    with pytest.raises(SourceError) as caught:
        settings_from_document(parse_yaml(text, "interlock.yaml"))
    assert "interlock.yaml:" in str(caught.value) and "content_filter" in str(caught.value)
